"""Your own images: ROOT/train/<class>/* and ROOT/test/<class>/* (JPEG, PNG, WebP, ...), decoded by DALI.

open_folder() lists both splits, reading only files with an image extension (IMAGE_EXTENSIONS; other
files are skipped with a note, hidden ones silently), and decodes every file once, before training,
with DALI's CPU decoder. A file that would stop a run midway is found up front (DALI is stricter than
PIL: it refuses a PNG that lost its last bytes), and so is one that decodes only with the decoder
complaining of damaged data (libjpeg-turbo's "Corrupt JPEG data", which would be printed again every
epoch; other decoder warnings, such as OpenJPEG's assumed colour space, are not damage), every such
file in the same pass: they are reported together, or left out with skip_bad_images. The same pass
measures the normalisation statistics (60,000 CIFAR-10 JPEGs: about 4 s on 2 cores). Its result,
broken files included, is cached, keyed by every image file's path, size and mtime, so a second run
over an unchanged folder only lists the files.

On a GPU, training decodes with DALI's "mixed" decoder while this check decodes on the CPU, on
purpose: it runs before any GPU work, needs no GPU to run or to test, and one cache entry serves both
devices. What differs: JPEG and JPEG 2000 are decoded by nvJPEG / nvJPEG2000 there (other formats on
the CPU in both), whose pixels may differ from libjpeg-turbo's by a few values (nvJPEG's default
chroma upsampling is not libjpeg-turbo's "fancy" one), so the mean and std are the CPU decode's; and a
file is accepted here by the CPU decoder, which is the last of the backends the mixed decoder is given
(DALI 2.4 hands nvImageCodec the hardware decoder, then CUDA, hybrid and CPU). The gpu-marked test in
tests/test_folder.py decodes the same files both ways.

Training and evaluation then read the files' bytes through the same sources and pipelines as CIFAR-10
(pipeline/dali.py, with decode): the same draws, one pipeline for every epoch, exact resume.
"""
import hashlib
import json
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from nvidia.dali import fn, pipeline_def, types

from common.files import write_text

from .cifar import DataError
from .dali import Decode, decode

# What DALI 2.4's fn.decoders.image decodes on the CPU (each tried, tests/test_folder.py); matched
# case-insensitively. Not GIF, AVIF, ICO or TGA: DALI refuses them.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".webp", ".tif", ".tiff", ".jp2",
                    ".j2k", ".pnm", ".ppm", ".pgm", ".pbm")
# Files per run of the inspection. DALI 2.4's CPU decoder segfaults on a batch of 32 or more holding
# one corrupt JPEG whose header parses; fuzzing (500 corrupted JPEG, PNG, WebP, BMP and TIFF files a
# folder) crashed 4 of 6 folders at 256 and none of 22 at 16, which decodes CIFAR-10's JPEGs about as
# fast. The header reader is safe at 256.
HEADER_BATCH, DECODE_BATCH = 256, 16
CACHE_VERSION = 3  # bump when what the inspection computes changes: old entries are then ignored
# What libjpeg-turbo prints about a JPEG whose data is damaged but which it decodes anyway.
DAMAGE = re.compile(rb"Corrupt JPEG data|Premature end of JPEG file")
SHOWN = 3          # paths a one-line message names before "and N more"


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
    not_images: tuple = ()    # files skipped for their extension, relative to the root
    bad_files: tuple = ()     # image files left out because they cannot be decoded (skip_bad_images)

    @property
    def decode(self) -> Decode:
        return Decode(self.image_size, self.resize)

    @property
    def note(self) -> str:
        """What was skipped, in one line ("" if nothing was)."""
        notes = []
        if self.not_images:
            n = len(self.not_images)
            what = "is not an image" if n == 1 else "are not images"
            notes.append(f"skipped {_count(n, 'file')} that {what}: {_some(self.not_images)}")
        if self.bad_files:
            notes.append(f"left out {_count(len(self.bad_files), 'image')} that cannot be decoded "
                         f"(--skip-bad-images): {_some(self.bad_files)}")
        return "; ".join(notes)


def open_folder(root, image_size=None, cache_dir=None, skip_bad_images=False, classes=None) -> FolderSet:
    """Scan and check ROOT/train and ROOT/test; image_size None means the training images' own size.
    Files that cannot be decoded raise DataError naming them all, or are left out (bad_files) with
    skip_bad_images. The inspection is cached under cache_dir (default: the user's cache, see _cache_dir).
    classes: a trained run's (with its image_size): only the test split is read, labelled by them, and
    the training split is never opened (viz explains a run whose training files may be gone or broken);
    mean and std are then empty (the run's are in its checkpoint)."""
    root = Path(root)
    train, not_images = [], []
    if classes is None:
        classes, train, not_images = _scan(root / "train")
    classes = tuple(classes)
    _, test, more = _scan(root / "test", classes)
    key = _fingerprint(root, train, test, image_size)
    cache_dir = Path(cache_dir or _cache_dir())
    facts = _read_cache(cache_dir / f"{key}.json")
    if facts is None:
        facts = _inspect(root, train, test, image_size)
        _write_cache(cache_dir / f"{key}.json", facts)
    bad = [os.path.join(root, f) for f in facts["bad"]]
    if bad and not skip_bad_images:
        raise _broken(bad, cache_dir / f"{key}-bad-images.txt")
    train, test = _without(train, bad, root / "train", classes), _without(test, bad, root / "test", classes)
    prefix = len(os.path.join(root, ""))
    return FolderSet(
        train_files=np.array([f for f, _, _ in train]), train_labels=np.array([y for _, y, _ in train]),
        test_files=np.array([f for f, _, _ in test]), test_labels=np.array([y for _, y, _ in test]),
        classes=classes, image_size=facts["image_size"], resize=facts["resize"],
        mean=tuple(facts["mean"] or ()), std=tuple(facts["std"] or ()),
        not_images=tuple(f[prefix:] for f in not_images + more), bad_files=tuple(bad))


def _scan(split: Path, classes=None) -> tuple:
    """(classes, [(path, label, (bytes, mtime_ns))], other files) of one split; classes None: its own
    folders. Hidden entries (.DS_Store, .git) are skipped; class folders may nest subfolders."""
    if not split.is_dir():
        raise DataError(f"{split} is not a folder: an image folder holds train/<class>/ and "
                        "test/<class>/ subfolders of images")
    found = sorted(d.name for d in split.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise DataError(f"{split} has no class folders: put each class's images in {split}/<class>/")
    classes = tuple(found) if classes is None else classes
    entries, others = [], []
    for name in found:
        if name not in classes:
            raise DataError(f"{split / name}: class {name!r} has no folder in "
                            f"{split.parent / 'train'}, so the model cannot learn it")
        files = sorted(_files_under(split / name))
        images = [(path, stamp) for path, stamp in files if path.lower().endswith(IMAGE_EXTENSIONS)]
        if not images:
            raise DataError(f"{split / name} holds no images ({', '.join(IMAGE_EXTENSIONS)}): add some "
                            "or remove the folder")
        entries += [(path, classes.index(name), stamp) for path, stamp in images]
        others += [path for path, _ in files if not path.lower().endswith(IMAGE_EXTENSIONS)]
    return classes, entries, others


def _files_under(folder: Path):
    for parent, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if not name.startswith("."):
                path = os.path.join(parent, name)
                st = os.stat(path)
                yield path, (st.st_size, st.st_mtime_ns)


def _fingerprint(root: Path, train: list, test: list, image_size) -> str:
    """Changes when any image file is added, removed, renamed, relabelled or rewritten, or the size
    asked for does; paths are taken relative to root, so a moved folder keeps its cache entry."""
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


def _inspect(root: Path, train: list, test: list, image_size) -> dict:
    """Read and decode every file once, with DALI's native log kept off the terminal: the broken files
    (relative to root), the target size, whether to resize, and the training images' mean and std."""
    is_train = dict.fromkeys((f for f, _, _ in train), True) | dict.fromkeys((f for f, _, _ in test), False)
    with _native_log_captured() as damage_reported:
        facts, bad = _measure(is_train, image_size, damage_reported)
    prefix = len(os.path.join(root, ""))
    return dict(facts, bad=[f[prefix:] for f in is_train if f in bad])


def _measure(is_train: dict, image_size, damage_reported) -> tuple:
    """(facts, the set of files that cannot be decoded cleanly); facts' mean and std are those of the
    training files that decode, None if none does (open_folder then refuses the folder)."""
    files = list(is_train)
    # Headers first: DALI 2.4's decoder can kill the process (SIGSEGV) on a batch holding a file it
    # cannot parse (empty, text named .jpg, a JPEG cut inside its header), while its header reader
    # fails cleanly. Only files whose headers parse are decoded.
    outputs, bad = _run_all(_header_pipeline, files, HEADER_BATCH, damage_reported)
    parsed = [f for f in files if f not in bad]
    hw = outputs[0] if outputs else np.zeros((0, 2), int)
    train_hw = hw[[is_train[f] for f in parsed]]
    if not len(train_hw) and not image_size:  # no size to decode the test files to
        return dict(image_size=image_size, resize=False, mean=None, std=None), bad
    image_size = image_size or _own_size([f for f in parsed if is_train[f]], train_hw)
    resize = bool((hw != image_size).any())
    outputs, undecoded = _run_all(_stats_pipeline, parsed, DECODE_BATCH, damage_reported,
                                  image_size=image_size, resize=resize)
    rows = [is_train[f] for f in parsed if f not in undecoded]
    sums, squares = (o[rows] for o in outputs) if outputs else (np.zeros((0, 3)),) * 2
    pixels = len(sums) * image_size ** 2
    mean = sums.sum(0, dtype=np.float64) / max(pixels, 1) / 255
    std = np.sqrt(squares.sum(0, dtype=np.float64) / max(pixels, 1) / 255 ** 2 - mean ** 2)
    moments = dict(mean=mean.tolist(), std=std.tolist()) if pixels else dict(mean=None, std=None)
    return dict(image_size=image_size, resize=resize, **moments), bad | undecoded


def _own_size(files: list, hw: np.ndarray) -> int:
    """The size the training images share, which must be square: with no image size asked for,
    nothing says how to resize them."""
    odd = np.flatnonzero((hw != hw[0]).any(1))
    if len(odd) or hw[0, 0] != hw[0, 1]:
        other = f", {files[odd[0]]} is {hw[odd[0], 1]}x{hw[odd[0], 0]}" if len(odd) else ""
        raise DataError(f"training images must share one square size unless an image size is given "
                        f"({files[0]} is {hw[0, 1]}x{hw[0, 0]}{other}): choose one to resize them to "
                        "(--image-size)")
    return int(hw[0, 0])


class _Complained(RuntimeError):
    """The decoders told of damaged data during a run that returned."""


def _run_all(pipeline_fn, files: list, batch_size: int, damage_reported, **graph) -> tuple:
    """(each output of pipeline_fn, one row per file it runs on, in order; the set of files it fails
    on), run on the CPU in batches. A failed run kills the pipeline without saying which sample failed,
    and damage_reported() (whether the native log told of damaged data since its last call) does not
    say either: that batch is searched by halves, and the rest goes on in a new pipeline."""
    parts, bad, pipe = [], set(), None
    for start in range(0, len(files), batch_size):
        batch = files[start:start + batch_size]
        if pipe is None:
            pipe = _pipeline(pipeline_fn, files[start:], graph, batch_size)
        try:
            parts.append(_run(pipe, len(batch), damage_reported))
        except RuntimeError as error:
            pipe = None
            found, failing = _search(pipeline_fn, batch, graph, damage_reported)
            if not failing and not isinstance(error, _Complained):  # no file fails alone: not the data
                raise
            parts, bad = parts + found, bad | set(failing)
    return [np.concatenate(rows) for rows in zip(*parts)], bad


def _search(pipeline_fn, files: list, graph: dict, damage_reported) -> tuple:
    """Files that failed together: (the rows of those that run, the list of those that fail alone)."""
    if len(files) == 1:
        return [], files
    parts, failing = [], []
    for half in (files[:len(files) // 2], files[len(files) // 2:]):
        try:
            pipe = _pipeline(pipeline_fn, half, graph, len(half))
            parts.append(_run(pipe, len(half), damage_reported))
        except RuntimeError:
            found, more = _search(pipeline_fn, half, graph, damage_reported)
            parts, failing = parts + found, failing + more
    return parts, failing


def _pipeline(pipeline_fn, files: list, graph: dict, batch_size: int):
    """Synchronous (no prefetching): whatever the decoders write during a run belongs to its batch."""
    return pipeline_fn(files=files, **graph, batch_size=batch_size, num_threads=os.cpu_count() or 1,
                       device_id=None, exec_async=False, exec_pipelined=False, prefetch_queue_depth=1)


def _run(pipe, n: int, damage_reported) -> list:
    """The next batch's outputs, n rows each (the reader pads the last batch); _Complained if the
    decoders told of damaged data meanwhile."""
    damage_reported()  # what building the pipeline wrote is no file's
    rows = [out.as_array()[:n] for out in pipe.run()]
    if damage_reported():
        raise _Complained()
    return rows


@contextmanager
def _native_log_captured():
    """DALI's C++ side (nvImageCodec, libjpeg-turbo, libpng) writes to file descriptor 2 itself, dozens
    of lines per broken file, which Python's sys.stderr never sees: point the descriptor at a temporary
    file meanwhile, and yield a function saying whether what was written since its last call tells of
    damaged data. open_folder's one line says what they would have. The pipelines must be gone before
    the descriptor is restored (each is dropped by the function that made it)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        read = 0

        def damage_reported() -> bool:
            nonlocal read
            new = os.pread(log.fileno(), os.fstat(log.fileno()).st_size - read, read)
            read += len(new)
            return DAMAGE.search(new) is not None
        try:
            os.dup2(log.fileno(), 2)
            yield damage_reported
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _broken(bad: list, listing: Path) -> DataError:
    """One line: the file, or how many, the first few and where they are all listed (a file outside
    the image folder), and the fix."""
    fix = "pass --skip-bad-images to train without"
    if len(bad) == 1:
        return DataError(f"{bad[0]} cannot be read or decoded as an image (truncated, corrupt or not an "
                         f"image file): replace or remove it, or {fix} it")
    try:
        listing.parent.mkdir(parents=True, exist_ok=True)
        write_text(listing, "".join(f"{os.path.abspath(f)}\n" for f in bad))
        where = f" (all listed in {listing})"
    except OSError:  # the first few are still named
        where = ""
    return DataError(f"{len(bad)} files cannot be read or decoded as images (truncated, corrupt or not "
                     f"image files): {_some(bad)}{where}: replace or remove them, or {fix} them")


def _without(entries: list, bad: list, split: Path, classes: tuple) -> list:
    """entries less the broken files; a class folder left with no image is refused."""
    bad = set(bad)
    kept = [e for e in entries if e[0] not in bad]
    emptied = sorted({y for _, y, _ in entries} - {y for _, y, _ in kept})
    if emptied:
        raise DataError(f"{split / classes[emptied[0]]} holds no image that can be decoded: add some or "
                        "remove the folder")
    return kept


def _some(paths) -> str:
    """The first few of paths, and how many more."""
    more = f" and {len(paths) - SHOWN} more" if len(paths) > SHOWN else ""
    return ", ".join(paths[:SHOWN]) + more


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


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
