"""Everything about data; the only package that imports NVIDIA DALI."""
from .cifar import MEAN, STD, DataError, ImageSet, load_cifar10
from .dataset import KINDS, Dataset, open_dataset
from .dali import Decode
from .folder import FolderSet, open_folder
from .loader import DaliLoader, eval_loader, train_loader

__all__ = ["MEAN", "STD", "DataError", "ImageSet", "load_cifar10", "KINDS", "Dataset", "open_dataset",
           "DaliLoader", "eval_loader", "train_loader", "Decode", "FolderSet", "open_folder"]
