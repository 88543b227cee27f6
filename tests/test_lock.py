"""common.lock: one writer per run directory, between processes started together, after a kill -9, and
within one process. Children are short `python -c` programs, not training runs."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from common import lock
from common.cli import UserError
from tests.conftest import ROOT

# Holds the directory until its standard input is closed; a refusal is the scripts' one line, exit 2.
HOLDER = """
import sys
from common import cli, lock

def main():
    with lock.hold(sys.argv[1]):
        print("held", flush=True)
        sys.stdin.read()

cli.run(main)
"""
# Takes the directory N times, retrying when refused; while holding it, creates and removes a file
# that must not exist (O_EXCL): a second holder at the same moment would find it and fail.
CONTENDER = """
import os, sys
from common import lock

directory, wanted, got = sys.argv[1], int(sys.argv[2]), 0
while got < wanted:
    try:
        with lock.hold(directory):
            os.close(os.open(os.path.join(directory, "owner"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            os.unlink(os.path.join(directory, "owner"))
            got += 1
    except lock.DirectoryBusy:
        pass
"""
DEADLINE = 120  # seconds: only a broken lock (two holders, neither refused) gets near it


def python(code, *args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def busy(directory, pid, this_process=False) -> str:
    holder = f"PID {pid}, this process" if this_process else f"PID {pid}"
    return f"{directory} is in use by another run ({holder}): wait for it to finish, or pick another --out"


def test_two_processes_started_together_exactly_one_holds(tmp_path):
    for attempt in range(3):
        out = tmp_path / f"runs{attempt}" / "r"  # missing: both race to create it too
        pair = [python(HOLDER, out), python(HOLDER, out)]
        deadline = time.monotonic() + DEADLINE
        while all(p.poll() is None for p in pair) and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = [p for p in pair if p.poll() is not None]
        holder = next(p for p in pair if p not in refused)
        assert len(refused) == 1, "neither was refused"
        assert holder.stdout.readline() == "held\n"
        assert refused[0].returncode == 2 and refused[0].stdout.read() == ""
        assert refused[0].stderr.read() == f"error: {busy(out, holder.pid)}\n"
        holder.stdin.close()
        assert holder.wait(DEADLINE) == 0
        assert not [f for f in tmp_path.rglob("*") if f.is_file()]  # no lock file left behind


def test_a_holder_killed_with_kill_9_leaves_no_lock(tmp_path):
    out = tmp_path / "run"
    holder = python(HOLDER, out)
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(lock.DirectoryBusy, match=f"^{re.escape(busy(out, holder.pid))}$"):
        with lock.hold(out):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait(DEADLINE)
    assert (out / ".lock").read_text() == f"{holder.pid}\n"  # the file stays, the kernel's lock does not
    with lock.hold(out):  # at once: hold() never waits
        assert (out / ".lock").read_text() == f"{os.getpid()}\n"


def test_one_process_holds_a_directory_once_and_leaves_only_the_runs_files(tmp_path):
    out = tmp_path / "runs" / "r"
    with lock.hold(out) as held:
        assert held == out and (out / ".lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(lock.DirectoryBusy) as refused:
            with lock.hold(out):
                pass
        assert str(refused.value) == busy(out, os.getpid(), this_process=True)
        (out / "last.pt").write_text("a checkpoint")
    assert [p.name for p in out.iterdir()] == ["last.pt"]
    with lock.hold(out):  # released: free again
        pass
    with pytest.raises(RuntimeError):
        with lock.hold(tmp_path / "new" / "r"):
            raise RuntimeError("a run that fails to start")
    assert not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(UserError, match=f"^{re.escape(str(tmp_path / 'file'))} is a file, not a folder: "
                                        "pick another --out$"):
        with lock.hold(tmp_path / "file"):
            pass


def test_holders_taking_turns_never_overlap(tmp_path):
    """Each release removes the lock file (and the folders it made), so a process that opened the old
    file must find it gone and start again: never two holders at once."""
    out = tmp_path / "runs" / "r"
    contenders = [python(CONTENDER, out, 400) for _ in range(3)]
    for p in contenders:
        assert p.wait(DEADLINE) == 0, p.stderr.read()
    assert not [f for f in tmp_path.rglob("*") if f.is_file()]  # no lock file left behind
