"""The run directory: one writer at a time (an OS lock that rank 0 holds for the run's whole life, so two
processes, terminals or sweep workers never mix their files), and a new run never lands on an old one."""
from contextlib import contextmanager, nullcontext
from pathlib import Path

from common import lock
from common.cli import UsageError
from nets import checkpoint


@contextmanager
def claim(cfg, process, new_run: bool):
    """Hold cfg.out for the block (rank 0); new_run: refuse a directory that already holds a run."""
    out = Path(cfg.out)
    with lock.hold(out) if process.main else nullcontext():
        if new_run and (out / "last.pt").exists():
            raise UsageError(already_holds(out, cfg.model))
        yield


def already_holds(out: Path, model: str) -> str:
    """The refusal, pointing at the old run only when continuing it is what this command could mean, and
    then at what continuing can do: a stopped run resumes; a finished one trains longer only where its
    schedule allows (OneCycle's cannot be stretched)."""
    try:
        state = checkpoint.load(out / "last.pt")
        theirs, done, planned = state["config"]["model"], state["epoch"], state["config"]["epochs"]
        scheduler = state["config"]["scheduler"]
    except (checkpoint.CheckpointError, KeyError):
        return f"{out} already holds a run (its last.pt): pick another --out"
    holds = f"{out} already holds a {theirs} run ({done} of {planned} epochs)"
    if theirs != model:
        return f"{holds}: pick another --out for {model}"
    if done < planned:
        return f"{holds}: continue it with --resume {out / 'last.pt'}, or pick another --out"
    if scheduler == "onecycle":
        return (f"{holds}, finished, and its OneCycle schedule cannot be stretched: pick another --out for a new "
                "run")
    return (f"{holds}, finished: train it longer with --resume {out / 'last.pt'} --epochs N (N > {planned}), "
            "or pick another --out")
