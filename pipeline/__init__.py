"""Everything about data; the only package that imports NVIDIA DALI. The declarations (spec: kinds,
loaders, the augmentation's numbers, BatchSpec) and CIFAR-10's files (cifar) load without DALI or
torch; the loaders load on first use."""
from common.lazy import on_first_use

from .cifar import MEAN, STD, DataError, ImageSet, load_cifar10
from .spec import CUTOUT, KINDS, LOADERS, PAD, BatchSpec, check_loader

__getattr__ = on_first_use(__name__, {
    ".dali": ("Decode", "DALI_VERSION"), ".dataset": ("Dataset", "open_dataset", "subset", "test_subset"),
    ".folder": ("FolderSet", "open_folder"), ".loader": ("DaliLoader", "eval_loader", "train_loader"),
    ".tensor_loader": ("TensorLoader",)})

__all__ = ["MEAN", "STD", "DataError", "ImageSet", "load_cifar10", "CUTOUT", "KINDS", "LOADERS", "PAD", "BatchSpec",
           "check_loader", "Decode", "DALI_VERSION", "Dataset", "open_dataset", "subset", "test_subset", "FolderSet", "open_folder",
           "DaliLoader", "eval_loader", "train_loader", "TensorLoader"]
