"""ResNet18/34: sizes, shapes, and channels-last giving the same answer."""
import pytest
import torch

import nets


@pytest.mark.parametrize("name, params", [("resnet18", 11_173_962), ("resnet34", 21_282_122)])
def test_parameter_count_and_output_shape(name, params):
    model = nets.create(name, num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert nets.create(name, num_classes=7)(torch.randn(1, 3, 32, 32)).shape == (1, 7)


def test_cifar_stem_and_feature_map_sizes():
    model = nets.create("resnet18")
    sizes = {}
    for name in ("layer1", "layer2", "layer3", "layer4"):
        getattr(model, name).register_forward_hook(lambda m, i, o, n=name: sizes.update({n: o.shape[-1]}))
    model(torch.randn(1, 3, 32, 32))
    assert sizes == {"layer1": 32, "layer2": 16, "layer3": 8, "layer4": 4}  # no stride-2 stem, no max-pool
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())


def test_channels_last_forward_equals_contiguous():
    torch.manual_seed(0)
    model = nets.create("resnet18").eval()
    x = torch.randn(4, 3, 32, 32)
    expected = model(x)
    model = model.to(memory_format=torch.channels_last)
    got = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="resnet18"):
        nets.create("resnet50")
