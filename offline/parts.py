"""The kit on the way: one tar stream (xz-compressed, or plain where speed matters more than size), cut
into parts of a given size, each named with its SHA-256 in SHA256SUMS (the format of sha256sum, so
`sha256sum -c SHA256SUMS` checks them too). Standard library only: this side runs on the bare target."""
import hashlib
import io
import lzma
import tarfile
from pathlib import Path

from common.cli import UserError

SUMS = "SHA256SUMS"
CHUNK = 1 << 20
# xz -9 (674 MiB of memory to compress, 65 MiB to decompress) after xz's x86 filter, which rewrites the
# relative addresses of calls and jumps as absolute ones: machine code, most of a kit, compresses about
# 10 % smaller (measured on libdali_operators.so). Decompressing needs nothing but the xz stream's header.
XZ_FILTERS = [{"id": lzma.FILTER_X86}, {"id": lzma.FILTER_LZMA2, "preset": 9}]


class Splitter(io.RawIOBase):
    """A write-only stream that lands in part-00, part-01, ... of at most part_bytes each, hashed as
    they are written."""

    def __init__(self, folder: Path, part_bytes: int):
        self.folder, self.part_bytes = folder, part_bytes
        self.sums, self.file, self.hash, self.room = [], None, None, 0

    def writable(self):
        return True

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        size = len(data)
        while data:
            if self.room == 0:
                self._next()
            piece, data = data[:self.room], data[self.room:]
            self.file.write(piece)
            self.hash.update(piece)
            self.room -= len(piece)
        return size

    def _next(self):
        self._finish()
        name = f"part-{len(self.sums):02d}"
        self.file, self.hash, self.room = open(self.folder / name, "wb"), hashlib.sha256(), self.part_bytes
        self.sums.append([None, name])

    def _finish(self):
        if self.file:
            self.file.close()
            self.sums[-1][0] = self.hash.hexdigest()

    def close(self):
        self._finish()
        self.file = None
        super().close()


def write(kit: Path, folder: Path, part_bytes: int, compression: str) -> list:
    """kit (a folder) as parts in folder, and SHA256SUMS; [(name, bytes)] of the parts."""
    splitter = Splitter(folder, part_bytes)
    stream = lzma.LZMAFile(splitter, "w", filters=XZ_FILTERS) if compression == "xz" else splitter
    with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        tar.add(kit, arcname=kit.name)
    stream.close()
    splitter.close()
    (folder / SUMS).write_text("".join(f"{digest}  {name}\n" for digest, name in splitter.sums))
    return [(name, (folder / name).stat().st_size) for _, name in splitter.sums]


def verify(folder: Path) -> list:
    """The parts listed in folder's SHA256SUMS, in order, once every one is there and whole; UserError
    naming the missing or damaged ones otherwise."""
    sums = folder / SUMS
    if not sums.is_file():
        raise UserError(f"no {SUMS} in {folder}: copy it there with the kit's parts")
    listed = [line.split() for line in sums.read_text().splitlines() if line.strip()]
    if not listed or any(len(x) != 2 or len(x[0]) != 64 for x in listed):
        raise UserError(f"{sums} is not a list of SHA-256 sums: copy it again from the kit's folder")
    names = [name.lstrip("*") for _, name in listed]
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise UserError(f"kit {plural(missing)} missing from {folder}: copy {them(missing)} there and run again")
    damaged = [name for (digest, _), name in zip(listed, names) if sha256(folder / name) != digest.lower()]
    if damaged:
        raise UserError(f"kit {plural(damaged)} damaged in {folder} (SHA-256 differs from {SUMS}): "
                        f"copy {them(damaged)} again and run again")
    return [folder / name for name in names]


def plural(names: list) -> str:
    return ("part " if len(names) == 1 else "parts ") + ", ".join(names) + (" is" if len(names) == 1 else " are")


def them(names: list) -> str:
    return "it" if len(names) == 1 else "them"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class Joined(io.RawIOBase):
    """The parts read back as one stream."""

    def __init__(self, paths: list):
        self.paths, self.file = list(paths), None

    def readable(self):
        return True

    def readinto(self, buffer) -> int:
        while True:
            if self.file is None:
                if not self.paths:
                    return 0
                self.file = open(self.paths.pop(0), "rb")
            n = self.file.readinto(buffer)
            if n:
                return n
            self.file.close()
            self.file = None

    def close(self):
        if self.file:
            self.file.close()
        super().close()


def listing(paths: list) -> dict:
    """{name: size} of the files in the joined parts' tar, read to its end: the builder's check that
    the kit comes back whole."""
    with io.BufferedReader(Joined(paths), CHUNK) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
        return {m.name: m.size for m in tar if m.isfile()}


def extract(paths: list, folder: Path):
    """The joined parts' tar (xz or plain, told apart by its first bytes) into folder."""
    with io.BufferedReader(Joined(paths), CHUNK) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
        tar.extractall(folder, filter="data")
