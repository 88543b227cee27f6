"""CIFAR-10 from its own distribution: download (torchvision), verify, convert once to a uint8 store.

The store `DATA_DIR/cifar10-uint8.npz` holds images as N x 32 x 32 x 3 uint8 (HWC, RGB), labels and
class names; later runs read only the store. Every failure a user can cause or fix (no data and no
network, a truncated or foreign batch file, an unreadable store) raises DataError with the fix.
"""
import functools
import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.cli import UserError
from common.files import atomic_write

# Per-channel statistics of the CIFAR-10 training set, in [0, 1] units.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)

STORE_NAME = "cifar10-uint8.npz"


@functools.cache
def _tv():
    """torchvision's CIFAR10 class, the one home of the URL, file names and MD5s. Imported only when
    the store is built: torchvision takes 1.5 s to import, and later runs read only the store."""
    from torchvision.datasets import CIFAR10
    return CIFAR10


def _official_md5() -> dict:
    tv = _tv()
    return dict(tv.train_list + tv.test_list + [[tv.meta["filename"], tv.meta["md5"]]])


class DataError(UserError):
    """The dataset is missing, corrupt or not what it claims to be; the message says what to do."""


@dataclass(frozen=True)
class ImageSet:
    """A whole labelled dataset in memory as uint8 HWC images."""
    train_images: np.ndarray  # N x H x W x 3 uint8
    train_labels: np.ndarray  # N int64
    test_images: np.ndarray
    test_labels: np.ndarray
    classes: tuple
    mean: tuple = MEAN
    std: tuple = STD
    official: bool = True  # the batch files matched the published checksums


def load_cifar10(data_dir, download=True) -> ImageSet:
    """The CIFAR-10 store in data_dir, built from the batch files (downloaded if allowed) on first use."""
    data_dir = Path(data_dir)
    store = data_dir / STORE_NAME
    if not store.exists():
        batches = data_dir / _tv().base_folder
        if not all((batches / name).exists() for name in _official_md5()):
            _download(data_dir, download)
        _write_store(store, _read_batches(batches))
    return _read_store(store)


def _download(data_dir: Path, allowed: bool):
    tv = _tv()
    fix = (f"put {tv.filename} (or its extracted {tv.base_folder}/ folder) in {data_dir}, "
           "or run once where the network is reachable")
    if not allowed:
        raise DataError(f"CIFAR-10 not found in {data_dir} and downloading is off: {fix}")
    from torchvision.datasets.utils import download_and_extract_archive
    try:  # checks the archive's MD5 before extracting; a bad one is fetched again
        download_and_extract_archive(tv.url, data_dir, filename=tv.filename, md5=tv.tgz_md5)
    except Exception as e:  # network errors come in many types; all mean the same to the user
        raise DataError(f"CIFAR-10 not found in {data_dir} and the download failed "
                        f"({type(e).__name__}: {str(e)[:120]}): {fix}") from None


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles: allow only what a numpy array needs, so a planted file cannot run code."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    fix = f"delete {path.parent} and run again to fetch a fresh copy"
    try:
        with open(path, "rb") as f:
            entry = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except Exception as e:  # truncated, garbage or hostile: all mean "not a CIFAR batch file"
        raise DataError(f"{path} is truncated or not a CIFAR-10 batch file "
                        f"({type(e).__name__}: {str(e)[:80]}): {fix}") from None
    if not isinstance(entry, dict):
        raise DataError(f"{path} is not a CIFAR-10 batch file (holds {type(entry).__name__}): {fix}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _read_batch(path: Path, num_classes: int):
    entry = _unpickle(path)
    data, labels = entry.get("data"), entry.get("labels")
    fix = f"delete {path.parent} and run again to fetch a fresh copy"
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DataError(f"{path}: 'data' must be N x 3072 uint8, found {shape}: {fix}")
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if labels.shape != (len(data),) or labels.min(initial=0) < 0 or labels.max(initial=0) >= num_classes:
        raise DataError(f"{path}: 'labels' must be {len(data)} ints in [0, {num_classes}), "
                        f"found shape {labels.shape}: {fix}")
    # Stored as 3 planes of 32 x 32 (CHW); the store keeps HWC, the layout DALI and PIL expect.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _read_batches(batches: Path) -> dict:
    tv = _tv()
    classes = _unpickle(batches / tv.meta["filename"]).get(tv.meta["key"])
    if not classes or not all(isinstance(c, str) for c in classes):
        raise DataError(f"{batches / tv.meta['filename']} has no class names: "
                        f"delete {batches} and run again to fetch a fresh copy")
    parts = {split: [_read_batch(batches / name, len(classes)) for name, _ in files]
             for split, files in (("train", tv.train_list), ("test", tv.test_list))}
    official = all(_md5(batches / name) == md5 for name, md5 in _official_md5().items())
    return dict(
        train_images=np.concatenate([x for x, _ in parts["train"]]),
        train_labels=np.concatenate([y for _, y in parts["train"]]),
        test_images=np.concatenate([x for x, _ in parts["test"]]),
        test_labels=np.concatenate([y for _, y in parts["test"]]),
        classes=np.array(classes), official=np.array(official))


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _write_store(store: Path, arrays: dict):
    """Atomic: a crash never leaves a half-written store."""
    with atomic_write(store) as f:
        np.savez(f, **arrays)


def _read_store(store: Path) -> ImageSet:
    try:
        with np.load(store, allow_pickle=False) as z:
            s = {k: z[k] for k in z.files}
        data = ImageSet(train_images=s["train_images"], train_labels=s["train_labels"],
                        test_images=s["test_images"], test_labels=s["test_labels"],
                        classes=tuple(str(c) for c in s["classes"]), official=bool(s["official"]))
    except Exception as e:
        raise DataError(f"{store} is unreadable ({type(e).__name__}): delete it to rebuild it "
                        "from the batch files") from None
    for split in ("train", "test"):
        x, y = getattr(data, f"{split}_images"), getattr(data, f"{split}_labels")
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3) or y.shape != (len(x),):
            raise DataError(f"{store} has wrong shapes ({split}: {x.shape}, {y.shape}): delete it to "
                            "rebuild it from the batch files")
    return data
