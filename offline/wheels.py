"""Distributions as a kit carries them: read from a downloaded wheel or from this interpreter's installed
packages, and written back as a wheel without the pruned files. The kit's wheels are stored uncompressed
(the kit is compressed as a whole, and xz over raw libraries beats xz over deflate) and install with pip
as any wheel does."""
import base64
import email.parser
import hashlib
import importlib.metadata as md
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import prune
from .target import Target

CHUNK = 1 << 20
# Written by pip when it installs (or signatures of the original RECORD): never part of a wheel we write.
INSTALL_ONLY = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json", "RECORD.jws", "RECORD.p7s"}


@dataclass(frozen=True)
class Entry:
    path: str             # inside the wheel
    size: int
    info: zipfile.ZipInfo  # its mode and date, for the written wheel
    open: Callable        # () -> a binary file


class Dist:
    """One distribution: name, version, Requires-Dist, wheel tags and files, wherever they come from."""

    def __init__(self, metadata: str, wheel_info: str, entries: list, origin: str):
        meta = email.parser.Parser().parsestr(metadata, headersonly=True)
        self.dist_info = next(e.path.split("/")[0] for e in entries if e.path.count("/") == 1
                              and e.path.endswith(".dist-info/METADATA"))
        self.name, self.version = meta["Name"], meta["Version"]
        self.requires = meta.get_all("Requires-Dist") or []
        self.tags = [line.split(":", 1)[1].strip() for line in wheel_info.splitlines() if line.startswith("Tag:")]
        self.wheel_info, self.entries, self.origin = wheel_info, entries, origin


def normal(name: str) -> str:
    """A distribution's name as wheel file names spell it (PEP 427)."""
    return re.sub(r"[-_.]+", "_", name)


def from_wheel(path: Path) -> Dist:
    z = zipfile.ZipFile(path)
    infos = [i for i in z.infolist() if not i.is_dir()]
    dist_info = next(i.filename.split("/")[0] for i in infos if i.filename.count("/") == 1
                     and i.filename.endswith(".dist-info/METADATA"))
    read = lambda name: z.read(f"{dist_info}/{name}").decode()
    entries = [Entry(i.filename, i.file_size, i, (lambda i=i: z.open(i))) for i in infos
               if not (i.filename.startswith(dist_info + "/") and i.filename.split("/")[-1] in INSTALL_ONLY)]
    return Dist(read("METADATA"), read("WHEEL"), entries, str(path))


def from_installed(name: str) -> Dist:
    """An installed distribution, as the wheel it was installed from (minus the scripts it put outside
    site-packages, which no import reaches, and the bytecode pip compiled)."""
    dist = md.distribution(name)
    entries = []
    for f in dist.files or []:
        path = f.as_posix()
        if path.startswith("../") or "__pycache__/" in path or path.split("/")[-1] in INSTALL_ONLY:
            continue
        local = Path(dist.locate_file(f))
        entries.append(Entry(path, local.stat().st_size, zipfile.ZipInfo.from_file(local, path),
                             (lambda local=local: open(local, "rb"))))
    return Dist(dist.read_text("METADATA"), dist.read_text("WHEEL") or "", entries, str(dist.locate_file("")))


@dataclass(frozen=True)
class Written:
    path: Path
    content: int        # bytes of the files before pruning
    kept: int           # bytes of the files written
    pruned: dict        # reason -> bytes left out


def write(dist: Dist, folder: Path, target: Target, pruning: bool) -> Written:
    """dist as an uncompressed wheel in folder, without what prune.reason() names when pruning. A wheel
    that loses its extension modules for other Pythons is tagged for the target's Python only, so pip
    on any other refuses it instead of installing a DALI that cannot import."""
    pruned, keep = {}, []
    for e in dist.entries:
        why = pruning and prune.reason(e.path, target)
        if why:
            pruned[why] = pruned.get(why, 0) + e.size
        else:
            keep.append(e)
    tags = retag(dist.tags, target) if pruned.get(prune.RULES[0][0]) else dist.tags
    wheel_info = "".join(line + "\n" for line in dist.wheel_info.splitlines() if not line.startswith("Tag:"))
    wheel_info += "".join(f"Tag: {t}\n" for t in tags)
    path = folder / f"{normal(dist.name)}-{dist.version}-{compressed(tags)}.whl"
    record = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for e in keep:
            if e.path == f"{dist.dist_info}/WHEEL":
                continue
            info = zipfile.ZipInfo(e.path, e.info.date_time)
            info.external_attr, info.file_size = e.info.external_attr, e.size
            with e.open() as src, z.open(info, "w", force_zip64=e.size >= zipfile.ZIP64_LIMIT) as dst:
                record.append(f"{e.path},{copy(src, dst)},{e.size}")
        z.writestr(f"{dist.dist_info}/WHEEL", wheel_info)
        record.append(f"{dist.dist_info}/WHEEL,{digest(wheel_info.encode())},{len(wheel_info.encode())}")
        z.writestr(f"{dist.dist_info}/RECORD", "".join(line + "\n" for line in record + [f"{dist.dist_info}/RECORD,,"]))
    return Written(path, sum(e.size for e in dist.entries), sum(e.size for e in keep), pruned)


def copy(src, dst) -> str:
    """Copy a file's bytes; their RECORD hash."""
    h = hashlib.sha256()
    while chunk := src.read(CHUNK):
        h.update(chunk)
        dst.write(chunk)
    return "sha256=" + base64.urlsafe_b64encode(h.digest()).decode().rstrip("=")


def digest(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")


def retag(tags: list, target: Target) -> list:
    """py3-none-manylinux_2_28_x86_64 -> cp312-cp312-manylinux_2_28_x86_64 (the platforms kept)."""
    platforms = dict.fromkeys(t.rsplit("-", 1)[-1] for t in tags)
    return [f"{target.tag}-{target.tag}-{p}" for p in platforms]


def compressed(tags: list) -> str:
    """A wheel file name's tag part: py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64."""
    parts = [dict.fromkeys(t.split("-")[i] for t in tags) for i in range(3)]
    return "-".join(".".join(p) for p in parts)
