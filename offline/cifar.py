"""CIFAR-10 where it cannot be downloaded: an archive of JPEGs (train/<class>/*.jpg, test/<class>/*.jpg,
as ../shared/data/cifar10-jpeg.tar.xz holds the real images) becomes OUT/cifar-10-batches-py in the
format CIFAR-10 is published in (pickled batches of 3,072-byte rows: the R, G and B planes), which
pipeline.open_dataset reads like the original, and, when asked, the image folders themselves. numpy and
Pillow only: it runs on a bare GPU machine before DALI is installed.

The classes are the archive's class folders in sorted order (CIFAR-10's own order is alphabetical);
the images of each split are shuffled with a fixed seed, so that every training batch mixes the
classes as the published batches do. Nothing is half-written: each result is built beside its place
and renamed into it."""
import io
import os
import pickle
import re
import shutil
import tarfile
import tempfile
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from common.cli import UserError

BATCHES = "cifar-10-batches-py"
SPLITS = ("train", "test")
TRAIN_BATCHES = 5
SIZE = 32
# split/class/name.jpg at the end of a member's name; a class or file named from a dot is not one.
IMAGE = re.compile(r"(?:^|/)(train|test)/([^/.][^/]*)/([^/.][^/]*\.(?:jpe?g|png))$", re.IGNORECASE)
SEED = 0
DECODE_CHUNK = 5000  # images per task of the process pool


def read(archive) -> dict:
    """{split: [(class, name, bytes)]}, sorted, with the same classes in both splits."""
    archive = Path(archive)
    if not archive.is_file():
        raise UserError(f"{archive}: no such file; give the JPEG archive (train/<class>/*.jpg, test/<class>/*.jpg)")
    found = {split: [] for split in SPLITS}
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                match = member.isfile() and IMAGE.search(member.name)
                if match:
                    split, cls, name = match.groups()
                    found[split].append((cls, name, tar.extractfile(member).read()))
    except (tarfile.TarError, EOFError, OSError) as e:  # tarfile reports damaged xz or gzip data as ReadError
        raise UserError(f"{archive} is not a readable tar archive ({type(e).__name__}: {e}): "
                        "give the JPEG archive (.tar.xz, .tar.gz or .tar)") from None
    classes = {split: sorted({cls for cls, _, _ in items}) for split, items in found.items()}
    if not found["train"] or not found["test"]:
        raise UserError(f"{archive} holds no images under train/<class>/ or test/<class>/: "
                        "give the JPEG archive of CIFAR-10 (train/<class>/*.jpg, test/<class>/*.jpg)")
    if classes["train"] != classes["test"]:
        raise UserError(f"{archive}: the classes of train/ ({', '.join(classes['train'])}) and test/ "
                        f"({', '.join(classes['test'])}) differ: every class needs images in both")
    return {split: sorted(items) for split, items in found.items()}


def pixels(archive: Path, split: str, cls: str, name: str, data: bytes) -> np.ndarray:
    try:
        image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    except Exception as e:  # Pillow raises many types for a broken file: all mean the same here
        raise UserError(f"{archive}: {split}/{cls}/{name} cannot be decoded ({type(e).__name__}): "
                        "the archive is damaged; fetch it again") from None
    if image.shape != (SIZE, SIZE, 3):
        raise UserError(f"{archive}: {split}/{cls}/{name} is {image.shape[1]}x{image.shape[0]}, not "
                        f"{SIZE}x{SIZE}: this converter writes CIFAR-10's format; train on the image folders instead")
    return image


def convert(archive, out, folders=None) -> dict:
    """OUT/cifar-10-batches-py (and FOLDERS/train, FOLDERS/test when folders is given) from the
    archive; {split: images}. Refuses to replace what is there."""
    archive, out = Path(archive), Path(out)
    folders = Path(folders) if folders else None
    if (out / BATCHES).exists():
        raise UserError(f"{out / BATCHES} already exists: delete it or choose another output folder")
    if folders and folders.exists() and (not folders.is_dir() or any(folders.iterdir())):
        raise UserError(f"{folders} exists and is not an empty folder: delete it or choose another folder "
                        "for the images")
    found = read(archive)
    with placed(out / BATCHES) as batches:
        write_batches(archive, found, batches)
        if folders:
            with placed(folders) as tmp:
                write_folders(found, tmp)
    return {split: len(items) for split, items in found.items()}


@contextmanager
def placed(final: Path):
    """A fresh folder beside final, renamed into its place (an empty folder there is replaced) when the
    block succeeds, removed when it fails."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        yield tmp
        if final.is_dir():
            final.rmdir()
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_batches(archive: Path, found: dict, folder: Path):
    classes = sorted({cls for cls, _, _ in found["train"]})
    for split, items in found.items():
        order = np.random.default_rng(SEED).permutation(len(items))
        images = decoded(archive, split, items)[order]
        labels = np.array([classes.index(items[i][0]) for i in order])
        names = [f"{items[i][0]}_{items[i][1]}" for i in order]
        rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # HWC -> the R, G, B planes
        chunks = np.array_split(np.arange(len(items)), TRAIN_BATCHES if split == "train" else 1)
        for k, chunk in enumerate(chunks, 1):
            name, label = (f"data_batch_{k}", f"training batch {k} of {len(chunks)}") if split == "train" \
                else ("test_batch", "testing batch 1 of 1")
            dump(folder / name, {"batch_label": label, "labels": labels[chunk].tolist(), "data": rows[chunk],
                                 "filenames": [names[i] for i in chunk]})
    dump(folder / "batches.meta", {"label_names": classes, "num_vis": SIZE * SIZE * 3,
                                   "num_cases_per_batch": -(-len(found["train"]) // TRAIN_BATCHES)})


def decoded(archive: Path, split: str, items: list) -> np.ndarray:
    """N x 32 x 32 x 3 uint8, in the order of items; on every core (decoding is most of the time)."""
    chunks = [items[i:i + DECODE_CHUNK] for i in range(0, len(items), DECODE_CHUNK)]
    if len(chunks) == 1:
        return decode(archive, split, items)
    with ProcessPoolExecutor(min(len(chunks), os.cpu_count() or 1)) as pool:
        return np.concatenate(list(pool.map(partial(decode, archive, split), chunks)))


def decode(archive: Path, split: str, items: list) -> np.ndarray:
    return np.stack([pixels(archive, split, *item) for item in items])


def dump(path: Path, entry: dict):
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)  # the published files' protocol: str keys, arrays as numpy's reduce


def write_folders(found: dict, folder: Path):
    """The images as they are in the archive: no re-encoding."""
    for split, items in found.items():
        for cls in {cls for cls, _, _ in items}:
            (folder / split / cls).mkdir(parents=True)
        for cls, name, data in items:
            (folder / split / cls / name).write_bytes(data)
