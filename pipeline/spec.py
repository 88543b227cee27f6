"""What every loader shares, as plain values (neither DALI nor torch is imported here, so the options
that name them load in a blink): the data kinds and the training loaders with their one rule, the
augmentation's numbers (DALI's pipelines and the torch-ops peer alike), and what a batch looks like."""
from __future__ import annotations

from dataclasses import dataclass

from common.cli import UsageError

KINDS = ("cifar10", "imagefolder")
LOADERS = ("dali", "torch")  # the training loader: DALI's pipeline, or pipeline.TensorLoader (CIFAR-10 only)

PAD = 4        # random crop: image zero-padded by 4 on each side, 9 x 9 = 81 offsets
CUTOUT = 16    # cutout square side for 32 px images (DeVries & Taylor 2017), centre uniform, clipped


def check_loader(kind: str, loader: str):
    """The torch-ops loader holds uint8 images resident on the device: CIFAR-10's store, not files."""
    if loader not in LOADERS:
        raise UsageError(f"--loader {loader!r}: choose from {', '.join(LOADERS)}")
    if kind == "imagefolder" and loader == "torch":
        raise UsageError("--loader torch trains on CIFAR-10 only (its uint8 images resident on the device); "
                         "image folders are decoded by DALI: use --loader dali")


def cutout_side(image_size: int) -> int:
    """The same share of the image as 16 px of 32."""
    return max(1, round(CUTOUT * image_size / 32))


def cutout_fill(mean) -> list:
    """The mean colour as uint8 pixel values: what a cut-out square holds before normalisation
    (~0 once normalised, as in DeVries & Taylor)."""
    return [round(255 * m) for m in mean]


@dataclass(frozen=True)
class BatchSpec:
    """What a loader's batches look like and where they land: every loader of a run shares one (the
    batch size and seed may differ by loader: dataclasses.replace)."""
    mean: tuple                 # normalisation, [0, 1] units
    std: tuple
    batch_size: int
    device: torch.device
    dtype: torch.dtype = None   # what the images are emitted as (None: float32)
    channels_last: bool = True  # NHWC memory, seen by PyTorch as channels-last NCHW
    seed: int = 0               # the augmentation's and order's draws (training loaders)
    shard_id: int = 0           # this process's share of the items (DDP rank) ...
    num_shards: int = 1         # ... of this many

    @property
    def dali_device_id(self) -> int | None:
        """DALI's device_id: the GPU's index, None for DALI's CPU backend."""
        return (self.device.index or 0) if self.device.type == "cuda" else None
