"""Where the worker runs a claimed job: here in a child process, or on a Ray cluster.

The SQLite job table stays the durable record of every job; an executor only runs one claimed
job and leaves it ``succeeded``, ``failed``, ``cancelled`` or back in the queue.

- ``base``        — the :class:`Executor` interface and what a job run may use of its worker;
- ``local``       — :class:`LocalExecutor`, today's child process (the default);
- ``ray_cluster`` — :class:`RayExecutor`, one Ray task (or N for a multi-worker job) per job;
- ``ray_task``    — the code that runs on a Ray node (imported there, never by the app);
- ``archive``     — a finished run packed on the node and written atomically into the registry.

Example::

    executor = make_executor("ray", address="10.0.0.5:6379")  # or make_executor() for local
    Worker(JobStore(), executor=executor).run()
"""

from __future__ import annotations

import os

from core.jobs.executors.base import Executor, JobContext
from core.jobs.executors.local import LocalExecutor

EXECUTORS = ("local", "ray")


def default_kind() -> str:
    """``ray`` when ``RAY_ADDRESS`` is set (the app's environment points at a cluster), else
    ``local``."""
    return "ray" if os.environ.get("RAY_ADDRESS", "").strip() else "local"


def make_executor(
    kind: str | None = None, address: str | None = None, max_running: int | None = None
) -> Executor:
    """The executor named ``kind`` (None: :func:`default_kind`).

    Args:
        kind: ``local`` or ``ray``.
        address: the Ray cluster (``host:port`` of the head's GCS, or ``auto``); None reads
            ``RAY_ADDRESS``.
        max_running: jobs run at once (local: always 1; Ray: default the cluster's CPUs).

    Returns:
        An executor; a Ray one connects in :meth:`Executor.start`, not here.

    Raises:
        ValueError: an unknown kind, or ``ray`` without an address.
    """
    kind = kind or default_kind()
    if kind == "local":
        if max_running not in (None, 1):
            raise ValueError(
                f"--max-running {max_running} needs the Ray executor: the local executor runs "
                "one job at a time. 1. Drop --max-running, or 2. add --executor ray --address "
                "HOST:PORT (docs/scale-out.md)."
            )
        return LocalExecutor()
    if kind == "ray":
        from core.jobs.executors.ray_cluster import RayExecutor  # imports ray: only when asked

        address = address or os.environ.get("RAY_ADDRESS", "").strip()
        if not address:
            raise ValueError(
                "the Ray executor needs a cluster address. 1. Start a head "
                "(`ray start --head --disable-usage-stats`, see docs/scale-out.md). 2. Pass "
                "--address HOST:PORT or set RAY_ADDRESS."
            )
        return RayExecutor(address, max_running)
    raise ValueError(f"executor {kind!r} is not supported; choose one of {EXECUTORS}")


__all__ = ["EXECUTORS", "Executor", "JobContext", "LocalExecutor", "default_kind", "make_executor"]
