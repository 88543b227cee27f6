"""ResNet18/34 for 32 x 32 inputs (He et al. 2016, BasicBlock only): 3x3 stem, stride 1, no max-pool."""
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, inp: int, out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out)
        self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        # Projection shortcut (1x1 conv) only where the shape changes.
        self.shortcut = nn.Sequential()
        if stride != 1 or inp != out:
            self.shortcut = nn.Sequential(nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out))
        self.relu = nn.ReLU()  # not in-place: GradCAM hooks read block outputs

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, blocks_per_stage, num_classes: int = 10, zero_init_residual: bool = False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        widths, inp, stages = (64, 128, 256, 512), 64, []
        for i, (width, n) in enumerate(zip(widths, blocks_per_stage)):
            stride = 1 if i == 0 else 2  # 32 -> 32, 16, 8, 4 px
            stages.append(nn.Sequential(*[BasicBlock(inp if b == 0 else width, width, stride if b == 0 else 1)
                                          for b in range(n)]))
            inp = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(512, num_classes)
        if zero_init_residual:  # each block starts as the identity (Goyal et al. 2017): easier early steps
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x):
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        # Global average pooling as a mean: its CUDA backward is deterministic (adaptive_avg_pool2d's
        # uses atomic adds, which --deterministic cannot allow).
        return self.fc(x.mean((2, 3)))


def resnet18(num_classes: int = 10, zero_init_residual: bool = False) -> ResNet:
    return ResNet((2, 2, 2, 2), num_classes, zero_init_residual)


def resnet34(num_classes: int = 10, zero_init_residual: bool = False) -> ResNet:
    return ResNet((3, 4, 6, 3), num_classes, zero_init_residual)
