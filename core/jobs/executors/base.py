"""The executor interface: run one claimed job to an end state, and say where jobs run.

A :class:`~core.jobs.worker.Worker` claims jobs from the SQLite store and hands each to its
executor's :meth:`Executor.run_job`, in a thread of its own when the executor runs several at
once. ``run_job`` must leave the job ended (``store.finish``/``store.fail``) or put back in the
queue (``store.requeue``, when the worker is stopping); the worker fails a job it left running.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from core.jobs.schema import Job
from core.jobs.store import JobStore


@dataclass(frozen=True)
class JobContext:
    """What a job run may use of its worker: the store, who it is, and its stop flag."""

    store: JobStore
    worker_id: str
    worker_pid: int
    stop: threading.Event  # set when the worker shuts down: stop the job, requeue it


class Executor:
    """Runs claimed jobs somewhere; subclasses override :meth:`run_job`."""

    kind = "base"
    max_running = 1

    def start(self) -> None:
        """Connect to whatever runs the jobs (nothing to do locally).

        Raises:
            RuntimeError: the cluster cannot be reached (the message says what to check).
        """

    def ready(self, busy: bool) -> bool:
        """Whether a new job can be handed over now (checked before each claim).

        Args:
            busy: jobs of this worker are still running.

        Returns:
            True locally; False while a cluster is unreachable (jobs then wait in the queue).
        """
        return True

    def close(self) -> None:
        """Disconnect; jobs still running elsewhere have been stopped by then."""

    def describe(self) -> dict[str, Any]:
        """Where jobs run, for the Retrain page (stored in the worker's row)."""
        return {"kind": self.kind, "max_running": self.max_running}

    def run_job(self, job: Job, ctx: JobContext) -> None:
        """Run one claimed (``running``) job until it ends.

        Raises:
            Exception: anything unexpected; the worker then fails the job with the message.
        """
        raise NotImplementedError
