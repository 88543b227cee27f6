"""One worker: take trials from the study until every point of the plan has its result. The same loop
runs in every process on every machine; they share nothing but the study (and, for resuming on
another machine, the run directories)."""
import copy
import time
from functools import partial

import optuna
from optuna.storages import fail_stale_trials

from . import trial
from .plan import Plan
from .study import progress, requeue


def work(study: optuna.Study, plan: Plan, heartbeat: int, label: str = ""):
    """Take a trial while one is free; while peers hold the last ones, wait and watch their heartbeats:
    a trial whose heartbeat stops is queued again and taken here, resuming from its last.pt."""
    objective = partial(trial.run, plan=plan, label=label)
    while True:
        fail_stale_trials(study)  # a dead worker's trials -> FAIL, and a WAITING copy of each
        now = progress(study, plan)
        for stopped in now.interrupted:  # a signal or a crash, not a result: queue the point again
            requeue(study, copy.deepcopy(stopped))  # the callback edits the lists it copies
        if now.finished:
            return
        if now.free or now.waiting or now.interrupted:
            study.optimize(objective, n_trials=1)  # a queued copy first, else a free grid point
        else:
            time.sleep(heartbeat)
