"""One face for every data source, so train.py and viz.py never branch on where images come from."""
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cifar import load_cifar10
from .dali import Decode
from .folder import open_folder
from .loader import DaliLoader, eval_loader, train_loader
from .spec import BatchSpec, check_loader
from .tensor_loader import TensorLoader

TEST_SUBSET_SEED = 0  # a test limit picks the same images in every run (any --seed) and in viz.py


@dataclass(frozen=True)
class Dataset:
    train: tuple              # (items, labels): uint8 HWC images (cifar10) or file paths (imagefolder)
    test: tuple
    classes: tuple
    mean: tuple               # [0, 1] units
    std: tuple
    image_size: int
    loader: str = "dali"      # the training loader (spec.LOADERS); evaluation is always DALI's
    decode: Decode | None = None  # the items are image files, decoded by DALI so; None: uint8 images
    note: str = ""            # something the user should know about this data
    bad_files: tuple = ()     # image files left out because they cannot be decoded (skip_bad_images)

    def train_loader(self, part: tuple, spec: BatchSpec, start_epoch=0, start_step=0) -> DaliLoader | TensorLoader:
        """Shuffled, augmented full batches of part = (items, labels), by the training loader."""
        items, labels = part
        if self.loader == "torch":
            return TensorLoader(items, labels, spec, start_epoch, start_step)
        return train_loader(items, labels, spec, start_epoch=start_epoch, start_step=start_step, decode=self.decode)

    def eval_loader(self, part: tuple, spec: BatchSpec) -> DaliLoader:
        """Every item of part = (items, labels) in spec's shard once per pass, in order."""
        items, labels = part
        return eval_loader(items, labels, spec, decode=self.decode)


def open_dataset(kind: str, data_dir, image_size: int = 0, download: bool = True,
                 skip_bad_images: bool = False, loader: str = "dali", classes=None) -> Dataset:
    """loader: the training loader (spec.LOADERS). classes: a trained run's, to evaluate it: an image
    folder's training split is then never opened."""
    check_loader(kind, loader)
    if kind == "imagefolder":
        f = open_folder(data_dir, image_size or None, skip_bad_images=skip_bad_images, classes=classes)
        return Dataset((f.train_files, f.train_labels), (f.test_files, f.test_labels), f.classes, f.mean, f.std,
                       f.image_size, loader, decode=f.decode, note=f.note, bad_files=f.bad_files)
    c = load_cifar10(data_dir, download)
    return Dataset((c.train_images, c.train_labels), (c.test_images, c.test_labels), c.classes, c.mean, c.std,
                   c.train_images.shape[1], loader, note=checksum_note(data_dir, c.official))


_NOTED = set()  # CIFAR-10 folders whose checksum note this process has given


def checksum_note(data_dir, official: bool) -> str:
    """The note on a copy that does not match the published checksums, once per process and folder: a
    notebook's find_lr then fit, or a sweep's data check then its trials, open the same copy again."""
    key = Path(data_dir).resolve()
    if official or key in _NOTED:
        return ""
    _NOTED.add(key)
    return f"{data_dir} does not match the published CIFAR-10 checksums; using it as given"


def test_subset(labels, n: int) -> np.ndarray:
    """The test images a limit of n evaluates: the same for every run and for viz.py, so runs of
    different seeds (a sweep's) are compared on one set."""
    return subset(labels, n, TEST_SUBSET_SEED)


def subset(labels, n: int, seed: int) -> np.ndarray:
    """Sorted indices of n of the labels (all of them when n is 0 or too large), every class kept in
    its share: each class's items in a seeded random order, the classes interleaved by how far
    through their own list an item is. A limit of a class-sorted list (image folders) keeps the mix."""
    labels = np.asarray(labels)
    if not n or n >= len(labels):
        return np.arange(len(labels))
    order = np.random.default_rng(seed).permutation(len(labels))
    ranked = labels[order]
    position = np.empty(len(order))  # an item's place within its class, as a fraction of the class
    for c in np.unique(ranked):
        where = np.flatnonzero(ranked == c)
        position[where] = np.arange(len(where)) / len(where)
    return np.sort(order[np.argsort(position, kind="stable")[:n]])
