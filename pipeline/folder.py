"""Your own images: ROOT/train/<class>/* and ROOT/test/<class>/* (JPEG, PNG), decoded by DALI.

open_folder() lists both splits and decodes every file once, before training, with DALI's CPU decoder:
the decoder training uses, so a file that would stop a run midway is named up front (DALI is stricter
than PIL: it refuses a PNG that lost its last bytes). The same pass measures the normalisation
statistics (60,000 CIFAR-10 JPEGs: about 4 s on 2 cores). Its result is cached, keyed by every file's
path, size and mtime, so a second run over an unchanged folder only lists the files (under 1 s).

Training and evaluation then read the files' bytes through the same sources and pipelines as CIFAR-10
(pipeline/dali.py, with decode): the same draws, one pipeline for every epoch, exact resume.
"""
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nvidia.dali import fn, pipeline_def, types

from common.files import write_text

from .cifar import DataError
from .dali import Decode, decode

INSPECT_BATCH = 256
CACHE_VERSION = 1  # bump when what the inspection computes changes: old entries are then ignored


@dataclass(frozen=True)
class FolderSet:
    """A checked image folder: file paths and labels in class order, and how to decode them."""
    train_files: np.ndarray   # N paths (str)
    train_labels: np.ndarray  # N int64
    test_files: np.ndarray
    test_labels: np.ndarray
    classes: tuple            # the train/ folder names, sorted; label i is classes[i]
    image_size: int           # every image is decoded to image_size x image_size
    resize: bool              # some image is another size (resizing one already that size is exact)
    mean: tuple               # of the training images at image_size, in [0, 1] units
    std: tuple

    @property
    def decode(self) -> Decode:
        return Decode(self.image_size, self.resize)


def open_folder(root, image_size=None, cache_dir=None) -> FolderSet:
    """Scan and check ROOT/train and ROOT/test; image_size None means the training images' own size.
    The statistics are cached under cache_dir (default: the user's cache, see _cache_dir)."""
    root = Path(root)
    classes, train = _scan(root / "train")
    _, test = _scan(root / "test", classes)
    cache = Path(cache_dir or _cache_dir()) / f"{_fingerprint(root, train, test, image_size)}.json"
    facts = _read_cache(cache)
    if facts is None:
        facts = _inspect(train, test, image_size)
        _write_cache(cache, facts)
    return FolderSet(
        train_files=np.array([f for f, _, _ in train]), train_labels=np.array([y for _, y, _ in train]),
        test_files=np.array([f for f, _, _ in test]), test_labels=np.array([y for _, y, _ in test]),
        classes=classes, image_size=facts["image_size"], resize=facts["resize"],
        mean=tuple(facts["mean"]), std=tuple(facts["std"]))


def _scan(split: Path, classes=None) -> tuple:
    """(classes, [(path, label, (bytes, mtime_ns))]) of one split; classes None: its own folders.
    Hidden entries (.DS_Store, .git) are skipped; class folders may nest subfolders."""
    if not split.is_dir():
        raise DataError(f"{split} is not a folder: an image folder holds train/<class>/ and "
                        "test/<class>/ subfolders of images")
    found = sorted(d.name for d in split.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise DataError(f"{split} has no class folders: put each class's images in {split}/<class>/")
    classes = tuple(found) if classes is None else classes
    entries = []
    for name in found:
        if name not in classes:
            raise DataError(f"{split / name}: class {name!r} has no folder in "
                            f"{split.parent / 'train'}, so the model cannot learn it")
        files = sorted(_files_under(split / name))
        if not files:
            raise DataError(f"{split / name} holds no images: add some or remove the folder")
        entries += [(path, classes.index(name), stamp) for path, stamp in files]
    return classes, entries


def _files_under(folder: Path):
    for parent, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if not name.startswith("."):
                path = os.path.join(parent, name)
                st = os.stat(path)
                yield path, (st.st_size, st.st_mtime_ns)


def _fingerprint(root: Path, train: list, test: list, image_size) -> str:
    """Changes when any file is added, removed, renamed, relabelled or rewritten, or the size asked for
    does; paths are taken relative to root, so a moved folder keeps its cache entry."""
    prefix = len(os.path.join(root, ""))  # the scan's paths all start with root/
    listing = [[f[prefix:], y, stamp] for f, y, stamp in train + test]
    text = json.dumps([CACHE_VERSION, image_size, len(train), listing])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _cache_dir() -> Path:
    """The user's cache (XDG), never the image folder: that may be shared or read-only, and the
    entries are small, disposable and keyed by content, so any number of folders can share it."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cifar-dali" / "folders"


def _read_cache(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # absent or damaged: measure again
        return None


def _write_cache(path: Path, facts: dict):
    """Atomic; a cache that cannot be written only costs time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(facts))
    except OSError:
        pass


def _inspect(train: list, test: list, image_size) -> dict:
    """Read and decode every file: the target size, whether to resize, the training mean and std."""
    train_files, test_files = [f for f, _, _ in train], [f for f, _, _ in test]
    # Headers first: DALI 2.4's decoder can crash the process on a batch holding a file it cannot
    # parse (text named .jpg, a JPEG cut inside its header), while its header reader fails cleanly.
    (train_hw,) = _run_all(_header_pipeline, train_files)
    (test_hw,) = _run_all(_header_pipeline, test_files)
    image_size = image_size or _own_size(train_files, train_hw)
    resize = bool((np.concatenate([train_hw, test_hw]) != image_size).any())
    sums, squares = _run_all(_stats_pipeline, train_files, image_size=image_size, resize=resize)
    _run_all(_stats_pipeline, test_files, image_size=image_size, resize=resize)  # only: do they decode
    pixels = len(train_files) * image_size ** 2
    mean = sums.sum(0, dtype=np.float64) / pixels / 255
    std = np.sqrt(squares.sum(0, dtype=np.float64) / pixels / 255 ** 2 - mean ** 2)
    return dict(image_size=image_size, resize=resize, mean=mean.tolist(), std=std.tolist())


def _own_size(files: list, hw: np.ndarray) -> int:
    """The size the training images share, which must be square: with no image size asked for,
    nothing says how to resize them."""
    odd = np.flatnonzero((hw != hw[0]).any(1))
    if len(odd) or hw[0, 0] != hw[0, 1]:
        other = f", {files[odd[0]]} is {hw[odd[0], 1]}x{hw[odd[0], 0]}" if len(odd) else ""
        raise DataError(f"training images must share one square size unless an image size is given "
                        f"({files[0]} is {hw[0, 1]}x{hw[0, 0]}{other}): choose one to resize them to")
    return int(hw[0, 0])


def _run_all(pipeline_fn, files: list, **graph) -> list:
    """Each output of pipeline_fn over files, one row per file, run on the CPU; a file it fails on
    raises DataError naming it."""
    pipe = pipeline_fn(files=files, **graph, batch_size=INSPECT_BATCH,
                       num_threads=os.cpu_count() or 1, device_id=None)
    batches = []
    for start in range(0, len(files), INSPECT_BATCH):
        try:
            batches.append([out.as_array()[:len(files) - start] for out in pipe.run()])
        except RuntimeError:  # DALI does not say which sample failed, and the pipeline is now dead
            bad = _first_failing(pipeline_fn, files[start:], graph)
            if bad is None:  # no file fails alone: not the data's fault
                raise
            raise DataError(f"{bad} cannot be read or decoded as an image (truncated, corrupt or "
                            "not an image file): replace or remove it") from None
    return [np.concatenate(rows) for rows in zip(*batches)]


def _first_failing(pipeline_fn, files: list, graph: dict):
    """The first of files that pipeline_fn fails on alone, one file per run; None if none does."""
    pipe = pipeline_fn(files=files, **graph, batch_size=1, num_threads=1, device_id=None)
    for path in files:
        try:
            pipe.run()
        except RuntimeError:
            return path
    return None


@pipeline_def
def _header_pipeline(files):
    encoded, _ = _reader(files)
    return fn.peek_image_shape(encoded)[:2]  # height, width


@pipeline_def
def _stats_pipeline(files, image_size, resize):
    """Per image: the sums of x and x^2 per channel, x in [0, 255], at the training size."""
    encoded, _ = _reader(files)
    x = fn.cast(decode(encoded, image_size, resize, gpu=False), dtype=types.FLOAT)
    return fn.reductions.sum(x, axes=[0, 1]), fn.reductions.sum(x * x, axes=[0, 1])


def _reader(files):
    """DALI's file reader over files in order, one pass; plain reads, not mmap: 2.5x faster on small
    files (measured on CIFAR-10's 1 KB JPEGs)."""
    return fn.readers.file(files=[str(f) for f in files], pad_last_batch=True, dont_use_mmap=True)
