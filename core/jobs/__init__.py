"""Background training jobs: a SQLite queue, one worker process, one job at a time.

The Streamlit app never trains in its script thread. The Retrain page validates a form with
:func:`check_params` and calls :func:`submit_job` (or :meth:`JobStore.submit`); a separate
worker process (``python -m core.jobs worker``) claims queued jobs one by one and runs each in
its own child process (``python -m core.jobs run-job ID``), so a crash inside TensorFlow fails
that job only. See docs/jobs.md for the design and the failure modes it handles.

This module is a thin facade (like huey's ``api.py``): every name below is defined in one of

- ``params``   — type and range checks of a job's ``TrainConfig`` fields (:func:`check_params`);
- ``schema``   — statuses, the tables, the :class:`Job` row type;
- ``store``    — the SQLite queue (:class:`JobStore`, :class:`JobStoreError`);
- ``settings`` — the settings a worker runs with, compared with the app's;
- ``worker``   — the worker lock, liveness (:func:`worker_status`), :func:`spawn_worker`, and
  the :class:`Worker` loop;
- ``control``  — :func:`ensure_worker` and restarting a worker whose settings are stale;
- ``child``    — :func:`run_job`, the per-job child process;
- ``resources`` — the CPUs, GPUs and workers a job asks for (:func:`check_resources`);
- ``executors`` — where a claimed job runs: ``local`` (a child process) or ``ray``;
- ``commands`` — the CLI (:func:`main`), run by ``__main__``.

Example::

    from core import jobs

    store = jobs.JobStore()                      # var/jobs.sqlite, or env JOBS_DB
    job_id = jobs.submit_job({"dataset": "breastmnist", "model": "cnn2d"}, store=store)
    jobs.ensure_worker(store)                    # start a worker unless one is alive
    store.get(job_id).status                     # "queued", then "running", ...

Usage::

    python -m core.jobs worker [--once | --drain] [--poll S] [--db PATH]
        [--executor local|ray] [--address HOST:PORT] [--max-running N]   (docs/scale-out.md)
    python -m core.jobs list [--db PATH]
    python -m core.jobs cancel ID [--db PATH]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.jobs.child import run_job
from core.jobs.commands import main
from core.jobs.control import autostart_enabled, ensure_worker
from core.jobs.executors import EXECUTORS, Executor, make_executor
from core.jobs.executors.local import CANCEL_GRACE_S, STOP_GRACE_S
from core.jobs.params import (
    MODELS_2D,
    MODELS_3D,
    UI_LIMITS,
    InvalidParamsError,
    ParamCheck,
    check_params,
)
from core.jobs.resources import check_resources
from core.jobs.schema import ACTIVE_STATUSES, STATUSES, TERMINAL_STATUSES, Job
from core.jobs.store import (
    LOG_MAX_CHARS,
    WORKER_DIED_MESSAGE,
    JobStore,
    JobStoreError,
    StoreError,
)
from core.jobs.worker import (
    HEARTBEAT_S,
    HEARTBEAT_STALE_S,
    Worker,
    WorkerInfo,
    lock_path,
    spawn_worker,
    worker_log_path,
    worker_status,
)

__all__ = [
    "ACTIVE_STATUSES",
    "CANCEL_GRACE_S",
    "EXECUTORS",
    "Executor",
    "HEARTBEAT_S",
    "HEARTBEAT_STALE_S",
    "LOG_MAX_CHARS",
    "MODELS_2D",
    "MODELS_3D",
    "STATUSES",
    "STOP_GRACE_S",
    "TERMINAL_STATUSES",
    "UI_LIMITS",
    "WORKER_DIED_MESSAGE",
    "InvalidParamsError",
    "Job",
    "JobStore",
    "JobStoreError",
    "StoreError",
    "ParamCheck",
    "Worker",
    "WorkerInfo",
    "autostart_enabled",
    "check_params",
    "check_resources",
    "ensure_worker",
    "lock_path",
    "main",
    "make_executor",
    "run_job",
    "spawn_worker",
    "submit_job",
    "worker_log_path",
    "worker_status",
]


def submit_job(
    params: Mapping[str, Any],
    submitted_by: str | None = None,
    store: JobStore | None = None,
    resources: Mapping[str, Any] | None = None,
) -> int:
    """Validate ``params`` with :func:`check_params` (and ``resources``) and queue the job.

    Args:
        resources: ``{"cpus", "gpus", "workers"}`` for a Ray worker (None: 1 CPU, no GPU,
            one worker), checked by :func:`check_resources`.

    Returns:
        The new job's id.

    Raises:
        InvalidParamsError: listing every invalid field.
    """
    checked = check_params(params)
    wanted, errors = check_resources(resources)
    if not checked.ok or errors:
        raise InvalidParamsError([*checked.errors, *errors])
    return (store or JobStore()).submit(checked.config.to_dict(), submitted_by, wanted)
