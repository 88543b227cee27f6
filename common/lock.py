"""One writer per run directory: an OS file lock held for the run's whole life.

    with lock.hold(out_dir):
        ...  # train, write checkpoints

The lock is flock(2) on RUN/.lock, so the kernel releases it when the holder dies, kill -9 included: a
lock file left behind by a killed run holds only the dead process's PID as text and blocks nobody. The
holder writes its PID into the file; a second process is refused at once (DirectoryBusy, one line with
that PID). A second hold of the same directory in the same process is refused too: two runs writing one
directory from two threads or notebook cells mix as badly as from two processes. A child forked (not
exec'd) while the lock is held shares it until that child exits too.
"""
import fcntl
import os
import stat
import time
from contextlib import contextmanager
from pathlib import Path

from .cli import UserError

LOCK_NAME = ".lock"
PID_WAIT = 2.0  # seconds to wait for a holder that has just locked to write its PID


class DirectoryBusy(UserError):
    """Another run holds the directory."""


@contextmanager
def hold(directory):
    """Hold directory (created if missing) for the block; raises DirectoryBusy if another run holds it.
    On leaving, the lock file is removed and so are the folders this call created, if still empty, so a
    run that fails to start leaves nothing behind."""
    directory, created, fd = Path(directory), [], None
    try:
        while fd is None:  # None: the last holder removed the folder as it left
            created += _make(directory)
            fd = _lock(directory / LOCK_NAME)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield directory
    finally:
        if fd is not None:
            # Unlinked while still locked: a process that opened the old file meanwhile finds, once it
            # has the lock, that the path no longer names it, and starts again (_lock).
            (directory / LOCK_NAME).unlink(missing_ok=True)
            os.close(fd)
        _remove_empty(created)


def _lock(path: Path):
    """An open descriptor of path, exclusively locked, that path still names; None if its folder is gone."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise UserError(f"{path.parent}: cannot create its lock file ({e.strerror}): pick another "
                            "--out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DirectoryBusy(_busy(path)) from None
        if _names(path, fd):
            return fd
        os.close(fd)


def _names(path: Path, fd: int) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _busy(path: Path) -> str:
    """The refusal, with the holder's PID: it writes it right after locking, so it may need a moment."""
    deadline = time.monotonic() + PID_WAIT
    pid = ""
    while not pid and time.monotonic() < deadline:
        try:
            pid = path.read_text().strip()
        except FileNotFoundError:  # the holder is leaving
            break
        if not pid:
            time.sleep(0.01)
    holder = f"PID {pid}" if pid else "PID unknown"
    if pid == str(os.getpid()):
        holder += ", this process"
    return (f"{path.parent} is in use by another run ({holder}): wait for it to finish, or pick "
            "another --out")


def _make(directory: Path) -> list:
    """Create directory and its missing parents; the ones this call created, deepest first."""
    while True:
        missing = [d for d in (directory, *directory.parents) if not d.exists()]
        try:
            directory.mkdir(parents=True, exist_ok=True)
            return missing
        except FileNotFoundError:  # a holder leaving removed a parent just made: again
            continue
        except FileExistsError:  # a file there, or the folder removed (and maybe made again) as mkdir looked
            try:
                if not stat.S_ISDIR(directory.stat().st_mode):  # one stat: a file, not a passing folder
                    raise UserError(f"{directory} is a file, not a folder: pick another --out") from None
            except FileNotFoundError:
                pass
            continue
        except OSError as e:
            raise UserError(f"{directory}: cannot be a run directory ({e.strerror}): pick another "
                            "--out") from None


def _remove_empty(folders: list):
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (the run wrote into it, or another run holds it now) or gone
            return
