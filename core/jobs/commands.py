"""The ``python -m core.jobs`` commands: ``worker``, ``run-job`` (internal), ``list``, ``cancel``.

Usage::

    python -m core.jobs worker [--once | --drain] [--poll S] [--wait-lock] [--db PATH]
        [--executor local|ray] [--address HOST:PORT] [--max-running N]
    python -m core.jobs list [--db PATH]
    python -m core.jobs cancel ID [--db PATH]

:func:`main` lives here rather than in ``__main__.py`` so ``core.jobs`` can re-export it
(importing a package's ``__main__`` from its ``__init__`` would make ``python -m core.jobs``
warn that the module is already imported). Errors follow ``core.cli``: a user error is one
``error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import time

from core import cli
from core.jobs.child import run_job
from core.jobs.executors import EXECUTORS, make_executor
from core.jobs.store import JobStore
from core.jobs.worker import Worker

DESCRIPTION = (
    "Background training jobs: a SQLite queue and one worker process, which runs each job in a "
    "child process (one at a time) or on a Ray cluster (several at once)."
)


def _format_time(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def main(argv: list[str] | None = None) -> int:
    """CLI: ``worker``, ``run-job`` (internal), ``list``, ``cancel``."""
    parser = argparse.ArgumentParser(prog="python -m core.jobs", description=DESCRIPTION)
    parser.add_argument("--db", help="job database (default: JOBS_DB or var/jobs.sqlite)")
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="run queued jobs one at a time")
    mode = w.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="run at most one job, then exit")
    mode.add_argument("--drain", action="store_true", help="exit when the queue is empty")
    w.add_argument("--poll", type=float, default=1.0, help="seconds between queue checks")
    w.add_argument(
        "--wait-lock",
        action="store_true",
        help="wait for the running worker to exit instead of exiting at once",
    )
    w.add_argument(
        "--executor",
        choices=EXECUTORS,
        default=None,
        help="where jobs run: local child processes, or a Ray cluster "
        "(default: ray when RAY_ADDRESS is set, else local)",
    )
    w.add_argument("--address", help="Ray cluster address HOST:PORT (default: RAY_ADDRESS)")
    w.add_argument(
        "--max-running",
        type=int,
        default=None,
        help="Ray: jobs run at once (default: the cluster's CPUs); local: always 1",
    )
    w.add_argument("--db", dest="db_sub", help=argparse.SUPPRESS)
    r = sub.add_parser("run-job", help=argparse.SUPPRESS)
    r.add_argument("job_id", type=int)
    r.add_argument("--parent", type=int)
    r.add_argument("--db", dest="db_sub", help=argparse.SUPPRESS)
    ls = sub.add_parser("list", help="print the job table")
    ls.add_argument("--db", dest="db_sub", help=argparse.SUPPRESS)
    c = sub.add_parser("cancel", help="cancel a queued or running job")
    c.add_argument("job_id", type=int)
    c.add_argument("--db", dest="db_sub", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    store = JobStore(getattr(args, "db_sub", None) or args.db)
    store.check()  # a file that is not the queue: one clear error before any lock or log file

    if args.command == "worker":
        if args.max_running is not None and args.max_running < 1:
            raise cli.CLIError(f"--max-running must be 1 or more, got {args.max_running}")
        kind = args.executor or ("ray" if args.address else None)
        executor = make_executor(kind, address=args.address, max_running=args.max_running)
        return Worker(store, poll_s=args.poll, executor=executor).run(
            once=args.once, drain=args.drain, wait_lock=args.wait_lock
        )
    if args.command == "run-job":
        return run_job(args.job_id, store, parent_pid=args.parent)
    if args.command == "list":
        for job in store.list():
            print(
                f"{job.id:>5}  {job.status:<10} {job.params.get('dataset', '?'):<16} "
                f"{job.params.get('model', '?'):<7} {_format_time(job.submitted_at)}  "
                f"{job.node or '-':<24} {job.run_name or job.error or ''}"
            )
        return 0
    if args.command == "cancel":
        job = store.get(args.job_id, with_log=False)
        if job is None:
            raise cli.CLIError(
                f"job {args.job_id} does not exist in {store.path.absolute()}; "
                f"run `python -m core.jobs list --db {store.path}` to see the job ids"
            )
        result = store.request_cancel(args.job_id)
        print(f"job {args.job_id}: " + (result or f"already {job.status}; nothing to cancel"))
        return 0 if result else 1
    return 2
