"""Everything about data; the only package that imports NVIDIA DALI."""
from .cifar import MEAN, STD, DataError, ImageSet, load_cifar10
from .dali import Decode
from .dataset import KINDS, Dataset, open_dataset, subset, test_subset
from .folder import FolderSet, open_folder
from .loader import DaliLoader, eval_loader, train_loader
from .tensor_loader import TensorLoader

__all__ = ["MEAN", "STD", "DataError", "ImageSet", "load_cifar10", "Decode", "KINDS", "Dataset",
           "open_dataset", "subset", "test_subset", "FolderSet", "open_folder", "DaliLoader", "eval_loader",
           "train_loader", "TensorLoader"]
