"""One worker process, as `sweep.py --workers N` starts N of them: `python -m sweeps JOB`, the job (the
plan, the storage URL, the heartbeat, a label for its lines) as JSON."""
import json
import sys

from common import cli

from .plan import Plan
from .study import connect, open_study
from .worker import work


def main(argv: list):
    job = json.loads(argv[0])
    plan = Plan.from_dict(job["plan"])
    storage = connect(job["url"], job["heartbeat"])
    work(open_study(plan, storage), storage, plan, job["heartbeat"], job["label"])


if __name__ == "__main__":
    cli.run(lambda: main(sys.argv[1:]))
