"""Atomic file writes: a crash or an error midway leaves the previous file (or none), never half a file."""
import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path, mode: str = "wb"):
    """Open a temporary file beside path; when the block ends without error, fsync it and rename it
    over path (a rename within a folder is atomic)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path, text: str):
    with atomic_write(path, "w") as f:
        f.write(text)
