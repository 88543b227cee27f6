"""Everything about data; the only package that imports NVIDIA DALI."""
from .cifar import MEAN, STD, DataError, ImageSet, load_cifar10
from .loader import DaliLoader, eval_loader, train_loader

__all__ = ["MEAN", "STD", "DataError", "ImageSet", "load_cifar10", "DaliLoader", "eval_loader",
           "train_loader"]
