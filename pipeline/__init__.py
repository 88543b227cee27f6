"""Everything about data; the only package that imports NVIDIA DALI. Each name is imported from its
module on first use (PEP 562), so a process that needs only the torch-ops loader (tensor_loader) or
the CIFAR-10 store (cifar) never loads DALI."""
import importlib

_HOME = {"MEAN": "cifar", "STD": "cifar", "DataError": "cifar", "ImageSet": "cifar", "load_cifar10": "cifar",
         "KINDS": "dataset", "Dataset": "dataset", "open_dataset": "dataset", "Decode": "dali",
         "FolderSet": "folder", "open_folder": "folder", "DaliLoader": "loader", "eval_loader": "loader",
         "train_loader": "loader", "TensorLoader": "tensor_loader"}

__all__ = list(_HOME)


def __getattr__(name):
    if name not in _HOME:  # also how `from pipeline import folder` finds the submodule
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
