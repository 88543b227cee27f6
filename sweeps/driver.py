"""A sweep from end to end: check everything, take trials (in this process, or in --workers processes)
until every point of the plan has its result, then report."""
import sys

import pipeline

from .launch import environments, run_workers
from .options import Options
from .plan import Plan, make
from .study import connect, open_study, progress, shown_url, url_of
from .summary import report
from .worker import queue, work


def run(options: Options, train_argv: list) -> dict:
    """Bad input of any kind (an option train.py lacks, a value of the wrong type, zero trials, no data, a
    storage that cannot be reached, more workers than GPUs) stops here, before any trial runs."""
    plan = make(options.name, options.out, options.grid, options.seeds, train_argv)
    workers = environments(options.workers, plan.fixed.get("device", "auto")) if options.workers > 1 else []
    check_data(plan)
    url = url_of(options.storage, plan)
    if not options.storage:
        plan.dir.mkdir(parents=True, exist_ok=True)
    storage = connect(url, options.heartbeat)
    study = open_study(plan, storage)
    n = len(plan.points())
    print(f"sweep {plan.name}: {len(plan.settings())} setting(s) x {plan.seeds} seed(s) = {n} trial{'s' * (n != 1)}, "
          f"run directories in {plan.dir}, study in {shown_url(url)}", flush=True)
    if not workers:
        work(study, storage, plan, options.heartbeat)
    else:
        queue(study, plan)  # before the workers start, so that they find the plan queued and never race
        codes = run_workers({"plan": plan.to_dict(), "url": url, "heartbeat": options.heartbeat}, workers)
        if not progress(study, plan).finished:
            raise RuntimeError(f"the workers exited (codes {codes}) before every trial had its result; "
                               "their output is above: run the same command again to go on")
    return report(study, plan)


def check_data(plan: Plan):
    """Open every dataset the trials read, once: a missing or broken one stops the sweep now, a first
    download happens here rather than in every worker at once, and what the data's note says is said
    here, on the sweep's terminal (each trial's train.log may repeat it)."""
    opened = set()
    for point in plan.points():
        cfg = plan.config(point)
        key = (cfg.data, cfg.data_dir, cfg.image_size, cfg.skip_bad_images, cfg.loader)
        if key not in opened:
            opened.add(key)
            data = pipeline.open_dataset(cfg.data, cfg.data_dir, cfg.image_size,
                                         skip_bad_images=cfg.skip_bad_images, loader=cfg.loader)
            if data.note:
                print(f"note: {data.note}", file=sys.stderr, flush=True)
