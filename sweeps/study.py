"""Where the trials live: an Optuna study in an SQLite file in the sweep directory (nothing to start; a
few processes on one machine) or in a database that many machines share (--storage postgresql://...).
Every trial is a point of the plan put in the study's queue; a running trial beats a heartbeat, and
when it stops (a worker killed, a machine lost) the next worker that looks fails the trial and queues
it again with the same parameters."""
import json
import re
import warnings
from dataclasses import dataclass, field

import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from common.cli import UsageError

from .plan import Plan, shown

# Optuna 5.0 marks the heartbeat and its retry callback experimental, and warns when a trial is asked
# outside Study.optimize with a heartbeat set: the workers beat it themselves (worker.beating).
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
requeue = RetryHeartbeatStaleTrialCallback()  # a WAITING copy of a trial: same parameters, same grid point


def url_of(storage: str, plan: Plan) -> str:
    """The database URL: the sweep's own SQLite file by default. A bare postgresql:// gets the pinned
    driver (psycopg2): SQLAlchemy 2.1 would pick psycopg 3, which is not installed."""
    if not storage:
        return f"sqlite:///{plan.dir / 'study.db'}"
    return re.sub(r"^postgres(ql)?://", "postgresql+psycopg2://", storage)


def shown_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url.rsplit("@", 1)[-1]


def connect(url: str, heartbeat: int) -> RDBStorage:
    """The storage, reached now (so an unreachable one stops the sweep before any trial runs)."""
    # Waits that suit a shared database: SQLite's lock (busy workers), a server that does not answer.
    timeouts = {"sqlite": {"timeout": 60}, "postgresql": {"connect_timeout": 10}}.get(url.split(":")[0].split("+")[0])
    engine = {"pool_pre_ping": True, **({"connect_args": timeouts} if timeouts else {})}
    try:
        return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=heartbeat,
                          heartbeat_stale_trial_callback=requeue)
    except (ImportError, ValueError, sqlalchemy.exc.SQLAlchemyError) as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise UsageError(f"--storage {shown_url(url)}: cannot open it ({reason}): check the URL and that the "
                         "database server runs and lets this machine in") from None


def open_study(plan: Plan, storage: RDBStorage) -> optuna.Study:
    """The sweep's study, created by the first worker to come; a second command under the same name
    must sweep the same grid, seeds and options. Every trial is a point of the plan from the study's
    queue (worker.queue); the sampler never chooses."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the sweep prints a line per trial itself
    study = optuna.create_study(storage=storage, study_name=plan.name, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(), load_if_exists=True)
    mine, theirs = json.loads(json.dumps(plan.definition())), study.user_attrs.get("sweep")
    if theirs is None:
        study.set_user_attr("sweep", mine)
    elif theirs != mine:
        raise UsageError(f"sweep {plan.name} in {shown_url(storage.url)} was started as {describe(theirs)}, not "
                         f"{describe(mine)}: repeat its own command to continue it, or choose another --name")
    return study


def describe(definition: dict) -> str:
    grid = " ".join(f"--grid {k}={','.join(map(shown, v))}" for k, v in definition["grid"].items())
    fixed = " ".join(f"--{k.replace('_', '-')} {shown(v)}" for k, v in definition["fixed"].items())
    return f"'{grid} --seeds {definition['seeds']} -- {fixed}'".replace("  ", " ")


def point_of(plan: Plan, trial: optuna.trial.FrozenTrial):
    """The plan's point a trial trains: its parameters, or those it was queued with (a queued trial
    gets its parameters only when it runs); None for a trial asked a moment ago, before it chose."""
    params = {**trial.system_attrs.get("fixed_params", {}), **trial.params}
    return plan.point(params) if set(plan.search_space()) <= params.keys() else None


@dataclass
class Progress:
    """Where each point of the plan stands, from every trial in the study."""
    done: dict = field(default_factory=dict)  # point name -> its COMPLETE trial (or FAIL with an error)
    busy: set = field(default_factory=set)     # point names a RUNNING or WAITING trial holds
    interrupted: list = field(default_factory=list)  # last attempt of points whose attempts all ended without
    # a result: a signal, a crash, or a copy that gave way to one that then stopped
    free: list = field(default_factory=list)   # Points no trial has touched, in the plan's order
    waiting: int = 0

    @property
    def finished(self) -> bool:
        return not (self.busy or self.interrupted or self.free)


def progress(study: optuna.Study, plan: Plan) -> Progress:
    trials = {}
    for t in study.get_trials(deepcopy=False):
        point = point_of(plan, t)
        if point is not None:
            trials.setdefault(point.name, []).append(t)
    now = Progress(waiting=sum(t.state == TrialState.WAITING for ts in trials.values() for t in ts))
    for point in plan.points():
        mine = trials.get(point.name, [])
        final = [t for t in mine if t.state == TrialState.COMPLETE or
                 (t.state == TrialState.FAIL and "error" in t.user_attrs)]
        if final:
            now.done[point.name] = min(final, key=lambda t: (t.state != TrialState.COMPLETE, t.number))
        elif any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in mine):
            now.busy.add(point.name)
        elif mine:
            now.interrupted.append(max(mine, key=lambda t: t.number))
        else:
            now.free.append(point)
    return now
