"""The images, and the three loaders that compete on them, each built the same way: shuffled, augmented
full batches on the device in the training dtype and layout, one epoch per pass.

  dali        pipeline.train_loader: the DALI pipeline train.py uses
  torch_ops   pipeline.TensorLoader: the uint8 set resident on the device, whole-batch torch ops
  dataloader  a torchvision Dataset + DataLoader doing the same augmentation per image on the host
"""
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

import pipeline

NAMES = {"dali": "DALI", "torch_ops": "torch ops", "dataloader": "DataLoader"}


def load_images(opts) -> tuple:
    """(images, labels, description): real CIFAR-10, or random images only when asked for by name."""
    if opts.synthetic:
        rng = np.random.default_rng(opts.seed)
        images = rng.integers(0, 256, (opts.synthetic, 32, 32, 3), dtype=np.uint8)
        return images, rng.integers(0, 10, opts.synthetic), "synthetic (random uint8)"
    try:  # a benchmark measures, it does not fetch 170 MB behind the user's back
        data = pipeline.load_cifar10(opts.data_dir, download=False)
    except pipeline.DataError as e:
        raise pipeline.DataError(f"{e}; or benchmark on random images: --synthetic 50000") from None
    return data.train_images, data.train_labels, f"CIFAR-10 train ({opts.data_dir})"


@dataclass(frozen=True)
class Spec:
    """What every competing loader is built with, so that they emit the same batches."""
    batch: pipeline.BatchSpec  # CIFAR-10's normalisation, the batch, device, dtype, layout and seed
    threads: int               # DALI's threads or the DataLoader's workers (torch ops: torch's intra-op threads)
    timeout: float             # the DataLoader's wait per batch


def build(name: str, images, labels, spec: Spec):
    """Loader `name` over the images, as spec says."""
    batch = spec.batch
    if name == "dali":
        return pipeline.train_loader(images, labels, batch, num_threads=spec.threads)
    if name == "torch_ops":
        return pipeline.TensorLoader(images, labels, batch)
    loader = DataLoader(TorchvisionSet(images, labels), batch_size=batch.batch_size, shuffle=True,
                        num_workers=spec.threads, pin_memory=batch.device.type == "cuda", drop_last=True,
                        persistent_workers=spec.threads > 0, timeout=spec.timeout if spec.threads else 0,
                        generator=torch.Generator().manual_seed(batch.seed))
    return OnDevice(loader, batch.device, batch.channels_last)


class Cutout:
    """Zero a size x size square whose centre is uniform over the image, clipped at the borders (the
    DALI pipeline's cutout; torchvision's RandomErasing draws its own size and never clips). After
    Normalize, 0 is the mean colour, as in DALI."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        top = int(torch.randint(x.shape[-2], ())) - self.size // 2
        left = int(torch.randint(x.shape[-1], ())) - self.size // 2
        x[..., max(top, 0):top + self.size, max(left, 0):left + self.size] = 0
        return x


class TorchvisionSet(Dataset):
    """The DataLoader's dataset, as torchvision's CIFAR10 does it: a PIL image per sample from the uint8
    array, then the DALI pipeline's augmentation one image at a time."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels
        self.transform = transforms.Compose([
            transforms.RandomCrop(images.shape[1], padding=pipeline.PAD), transforms.RandomHorizontalFlip(),
            transforms.ToTensor(), transforms.Normalize(pipeline.MEAN, pipeline.STD), Cutout(pipeline.CUTOUT)])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


class OnDevice:
    """A DataLoader's batches on the device in the layout the model runs in, as a training loop has
    them (pinned memory and non_blocking copies on a GPU); one epoch per pass."""

    def __init__(self, loader: DataLoader, device, channels_last: bool):
        self.loader, self.device = loader, device
        self.layout = torch.channels_last if channels_last else torch.contiguous_format

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for x, y in self.loader:
            yield (x.to(self.device, non_blocking=True, memory_format=self.layout),
                   y.to(self.device, non_blocking=True))
