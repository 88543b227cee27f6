"""Your own images: ROOT/train/<class>/* and ROOT/test/<class>/* (JPEG, PNG), decoded by DALI.

open_folder() lists both splits and decodes every file once, before training, with DALI's CPU decoder:
the decoder training uses, so a file that would stop a run midway is named up front (DALI is stricter
than PIL: it refuses a PNG that lost its last bytes). The same pass measures the normalisation
statistics (60,000 CIFAR-10 JPEGs: about 4 s on 2 cores). Its result is cached, keyed by every file's
path, size and mtime, so a second run over an unchanged folder only lists the files (under 1 s).

Training reads with DALI's file reader, which fixes its file order when the pipeline is built, so
every epoch gets a pipeline of its own: the order is a numpy permutation of (seed, epoch) shared by all
shards, the augmentation draws come from DALI's generator seeded from (seed, epoch, shard). Epoch e is a
function of (seed, e) alone and `--resume` needs no DALI state. Resuming inside an epoch
(start_step > 0) replays the epoch's first start_step batches and drops them: exact, at the cost of
decoding them once more.
"""
import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from nvidia.dali import fn, pipeline_def, types

from common.files import write_text

from .cifar import DataError
from .dali import CUTOUT, PAD, normalise, augment
from .loader import DaliLoader, make_pipeline

READER = "files"   # the file reader's name, for the iterator's end-of-shard bookkeeping
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
    x = fn.cast(_decode(encoded, image_size, resize, gpu=False), dtype=types.FLOAT)
    return fn.reductions.sum(x, axes=[0, 1]), fn.reductions.sum(x * x, axes=[0, 1])


def _reader(files, labels=None, shard_id=0, num_shards=1):
    """DALI's file reader over files in the given order. stick_to_shard: every pass reads the same
    shard; pad_last_batch: the iterator drops the padding, so a pass is each file exactly once;
    plain reads, not mmap: 2.5x faster on small files (measured on CIFAR-10's 1 KB JPEGs)."""
    return fn.readers.file(files=[str(f) for f in files],
                           labels=None if labels is None else [int(y) for y in labels],
                           shard_id=shard_id, num_shards=num_shards, stick_to_shard=True,
                           pad_last_batch=True, dont_use_mmap=True, name=READER)


def _decode(encoded, image_size, resize, gpu):
    """Encoded files -> uint8 HWC RGB (grey and RGBA images too); "mixed" decodes with nvJPEG."""
    images = fn.decoders.image(encoded, device="mixed" if gpu else "cpu", output_type=types.RGB)
    return fn.resize(images, size=[image_size, image_size]) if resize else images


def _read(files, labels, shard_id, num_shards, image_size, resize, gpu):
    """Shard shard_id of files and labels, decoded at image_size; labels as int64 scalars."""
    encoded, labels = _reader(files, labels, shard_id, num_shards)
    images = _decode(encoded, image_size, resize, gpu)
    labels = fn.reshape(fn.cast(labels, dtype=types.INT64), shape=[])  # reader: int32 [1]
    return images, labels.gpu() if gpu else labels


@pipeline_def
def _train_pipeline(files, labels, shard_id, num_shards, image_size, resize, mean, std, dtype, layout,
                    gpu):
    images, labels = _read(files, labels, shard_id, num_shards, image_size, resize, gpu)
    # dali.TrainSource's draws, from DALI's generator: offset in -PAD..PAD, a fair coin, centre anywhere.
    cutout = max(1, round(CUTOUT * image_size / 32))  # dali.CUTOUT is the side for 32 px images
    crop_start = fn.random.uniform(values=list(range(-PAD, PAD + 1)), shape=2, dtype=types.INT32)
    flip = fn.random.coin_flip(dtype=types.INT32)
    cutout_anchor = fn.random.uniform(values=[c - cutout // 2 for c in range(image_size)], shape=2)
    return augment(images, crop_start, flip, cutout_anchor, mean, std, dtype, layout, cutout), labels


@pipeline_def
def _eval_pipeline(files, labels, shard_id, num_shards, image_size, resize, mean, std, dtype, layout,
                   gpu):
    images, labels = _read(files, labels, shard_id, num_shards, image_size, resize, gpu)
    return normalise(images, mean, std, dtype, layout), labels


class EpochLoader:
    """DaliLoader's interface (len() batches, one epoch per pass) over a fresh pipeline per epoch."""

    def __init__(self, epoch_loader, num_batches: int, start_epoch: int, start_step: int):
        self.epoch_loader, self.num_batches = epoch_loader, num_batches
        self.epoch, self.skip = start_epoch, start_step

    def __len__(self):
        return self.num_batches

    def __iter__(self):
        if self.num_batches == 0:
            return iter(())
        loader = self.epoch_loader(self.epoch)
        self.epoch, skip, self.skip = self.epoch + 1, self.skip, 0
        return itertools.islice(loader, skip, None)


def folder_train_loader(folder: FolderSet, files, labels, *, mean, std, batch_size, seed,
                        device_id=None, dtype=torch.float32, channels_last=True, shard_id=0,
                        num_shards=1, start_epoch=0, start_step=0) -> EpochLoader:
    """pipeline.train_loader for files of folder: shuffled, augmented full batches; pass k over it is
    epoch start_epoch + k (resumed at start_step). Every shard runs the same number of steps."""
    files, labels = np.asarray(files), np.asarray(labels)
    num_batches = len(files) // num_shards // batch_size
    used = num_batches * batch_size * num_shards  # equal shards; the rest waits for a later epoch

    def epoch_loader(epoch):
        order = np.random.default_rng([seed, epoch]).permutation(len(files))[:used]
        draws_seed = int(np.random.SeedSequence([seed, epoch, shard_id]).generate_state(1)[0])
        pipe = make_pipeline(_train_pipeline, batch_size, draws_seed, device_id, dtype, channels_last,
                             files=files[order], labels=labels[order], shard_id=shard_id,
                             num_shards=num_shards, image_size=folder.image_size,
                             resize=folder.resize, mean=mean, std=std)
        return DaliLoader(pipe, num_batches, channels_last, reader_name=READER)

    return EpochLoader(epoch_loader, num_batches, start_epoch, start_step)


def folder_eval_loader(folder: FolderSet, files, labels, *, mean, std, batch_size, device_id=None,
                       dtype=torch.float32, channels_last=True, shard_id=0,
                       num_shards=1) -> DaliLoader:
    """pipeline.eval_loader for files of folder: normalised only, in order; each file of this shard
    exactly once per pass (DALI's shards: [i * N // num_shards, (i + 1) * N // num_shards))."""
    n = len(files)
    shard_size = (shard_id + 1) * n // num_shards - shard_id * n // num_shards
    pipe = make_pipeline(_eval_pipeline, batch_size, 0, device_id, dtype, channels_last, files=files,
                         labels=labels, shard_id=shard_id, num_shards=num_shards,
                         image_size=folder.image_size, resize=folder.resize, mean=mean, std=std)
    return DaliLoader(pipe, -(-shard_size // batch_size), channels_last, reader_name=READER)
