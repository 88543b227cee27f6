"""One worker: take trials from the study until every point of the plan has its result. The same loop
runs in every process on every machine; they share nothing but the study (and, for resuming on
another machine, the run directories)."""
import copy
import math
import threading
import time
from contextlib import contextmanager

import optuna
import sqlalchemy
from optuna.storages import RDBStorage, fail_stale_trials
from optuna.trial import TrialState

from . import trial as trials
from .plan import Plan
from .study import Progress, progress, requeue

POLL = 2  # seconds between looks at the study while peers hold the last trials


def work(study: optuna.Study, storage: RDBStorage, plan: Plan, heartbeat: int, label: str = ""):
    """Take a trial while one is queued; while peers hold the last ones, wait and watch their heartbeats:
    a trial whose heartbeat stops is queued again and taken here, resuming from its last.pt."""
    while True:
        now = queue(study, plan)
        if now.finished:
            return
        if now.free or now.waiting or now.interrupted:
            take(study, storage, plan, heartbeat, label)
        else:
            time.sleep(min(POLL, heartbeat))


def queue(study: optuna.Study, plan: Plan) -> Progress:
    """Queue what has to run, and say where the plan stands: a dead worker's trials are failed (a WAITING
    copy of each comes with them), a trial stopped without a result (a signal, a crash) is queued again,
    and the points no trial has touched are queued in the plan's order once the queue is empty (workers
    starting together may queue a point twice: the copy that comes second gives way, see trial.run)."""
    fail_stale_trials(study)
    now = progress(study, plan)
    for stopped in now.interrupted:
        requeue(study, copy.deepcopy(stopped))  # (the callback edits the lists it copies)
    if not now.waiting:
        for point in now.free:
            study.enqueue_trial(plan.params(point), skip_if_exists=True)
    return now


def take(study: optuna.Study, storage: RDBStorage, plan: Plan, heartbeat: int, label: str):
    """Ask for a trial (a queued one first), run it under a heartbeat, tell how it ended (a signal or a
    crash: FAIL, then raised)."""
    trial = study.ask()
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study.study_name),
                                                               trial.number)  # the storage's id, by public calls
    if "fixed_params" not in storage.get_trial_system_attrs(trial_id):  # a peer took the last queued one
        study.tell(trial, state=TrialState.PRUNED)
        return
    state, value = TrialState.FAIL, None
    try:
        with beating(storage, trial_id, heartbeat):
            value = trials.run(trial, plan, label)
        state = TrialState.COMPLETE if math.isfinite(value) else TrialState.FAIL  # nan: a user error, kept
    except optuna.TrialPruned:
        state = TrialState.PRUNED
    finally:
        end(study, trial, state, value if state == TrialState.COMPLETE else None)


def end(study: optuna.Study, trial: optuna.Trial, state: TrialState, value):
    """Tell the trial's end. If a peer failed it meanwhile (its heartbeats came too late: a stalled
    machine, a lost database connection) and queued it again, the result it reached is kept as a
    finished copy, so the point counts once whichever attempt ends first."""
    told = study.tell(trial, value, state=state, skip_if_finished=True)
    if told.state == TrialState.FAIL and state == TrialState.COMPLETE:
        study.add_trial(optuna.trial.create_trial(params=told.params, distributions=told.distributions,
                                                  value=value, user_attrs=told.user_attrs,
                                                  system_attrs={"taken_over": told.number}))


@contextmanager
def beating(storage: RDBStorage, trial_id: int, every: int):
    """A heartbeat for the trial every `every` seconds while the block runs (a thread: training keeps
    the main one)."""
    stop = threading.Event()

    def beat():
        while True:
            try:
                storage.record_heartbeat(trial_id)
            except sqlalchemy.exc.SQLAlchemyError:
                pass  # the database is away for a moment: the next beat tries again
            if stop.wait(every):
                return
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
