"""Start the local training worker, and restart it when its settings are not the app's.

:func:`ensure_worker` (called once per app server, and by the Retrain page) starts a detached
worker when none is alive. A worker records its settings when it registers
(``core.jobs.settings``). The app compares them with its own:

- an **idle** stale worker is restarted automatically (:func:`restart_if_stale_and_idle`,
  called by :func:`ensure_worker` when the app starts and by the Retrain page): it is
  asked to stop, exits within one poll, and a new worker starts with the app's environment;
- a **busy** stale worker is never interrupted: the Retrain page lists the settings that differ
  and offers "Restart worker" (:func:`restart_worker`). The worker then finishes its running
  job and exits before claiming another one; a replacement started at once waits for its lock
  (``--wait-lock``) and takes over, so queued jobs run with the new settings even if nobody
  keeps the page open. Cancelling the running job restarts it sooner.

The stop request is a flag in the worker's row, checked by ``claim_next`` in the same
transaction that claims a job, so "idle" cannot turn into "busy" behind the app's back.
Nothing here runs when ``JOBS_WORKER_AUTOSTART=0`` (workers managed by hand or by a service
manager, which would restart them with their own environment anyway). No streamlit.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from core.jobs import settings as worker_settings
from core.jobs import worker
from core.jobs.store import JobStore
from core.jobs.worker import WorkerInfo

RESTART_WAIT_S = 15.0  # an idle worker polls every second; this is ample


def autostart_enabled() -> bool:
    """False when ``JOBS_WORKER_AUTOSTART=0``: workers are then started (and restarted) by hand
    or by a service manager, and the app never starts or stops one."""
    return os.environ.get("JOBS_WORKER_AUTOSTART", "1").strip() != "0"


def ensure_worker(store: JobStore | None = None) -> int | None:
    """Start a detached local worker unless a current one is alive; call once per app server.

    A live worker whose recorded settings (``MEDMNIST_ROOT``, ``TRAINED_MODELS_DIR``, ...)
    differ from this process's is restarted when it is idle (:func:`restart_if_stale_and_idle`); a
    busy one is left to finish its job (the Retrain page offers the restart).
    Set ``JOBS_WORKER_AUTOSTART=0`` to turn this off (tests, or when workers run as services).

    Returns:
        The pid of the worker that is running or starting now (None when autostart is off, or
        when a worker holds the lock but has not registered yet).
    """
    if not autostart_enabled():
        return None
    store = store or JobStore()
    status = worker.worker_status(store)
    if status.alive:
        restarted = restart_if_stale_and_idle(store, status)
        return restarted if restarted is not None else status.pid
    return worker.spawn_worker(store).pid


@dataclass(frozen=True)
class WorkerCheck:
    """The local worker and the settings in which it differs from this process.

    Attributes:
        status: the worker's liveness (``core.WorkerInfo``).
        differences: settings that differ (empty when current, or when no worker is up).
    """

    status: WorkerInfo
    differences: list[worker_settings.SettingDiff] = field(default_factory=list)

    @property
    def stale(self) -> bool:
        """A live, registered worker that runs with other settings than this process."""
        return self.status.responsive and bool(self.differences)


def check(store: JobStore, status: WorkerInfo | None = None) -> WorkerCheck:
    """Compare the local worker's recorded settings with this process's.

    Args:
        store: the job queue.
        status: a ``worker_status`` the caller already has (default: read it now).

    Returns:
        A :class:`WorkerCheck`.
    """
    status = status or worker.worker_status(store)
    if not status.alive or status.starting:
        return WorkerCheck(status)
    app = worker_settings.current(store.path)
    return WorkerCheck(status, worker_settings.differences(status.settings, app))


@dataclass(frozen=True)
class RestartOutcome:
    """What :func:`restart_worker` did.

    Attributes:
        kind: ``"restarted"`` (a new worker is starting), ``"after_job"`` (the worker finishes
            job ``job_id``, then the waiting replacement ``pid`` takes over), ``"timeout"``
            (asked to stop but still running after the wait; it stops before its next job),
            ``"off"`` (``JOBS_WORKER_AUTOSTART=0``: nothing done).
        pid: the new worker's pid, when one was started.
        job_id: the running job the old worker finishes first (``"after_job"``).
    """

    kind: str
    pid: int | None = None
    job_id: int | None = None


def _wait_for_exit(store: JobStore, wait_s: float) -> bool:
    """Wait until no process holds the worker lock; True when it was released in time."""
    deadline = time.monotonic() + wait_s
    while True:
        fd = worker._try_lock(worker.lock_path(store.path))
        if fd is not None:
            os.close(fd)
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def restart_worker(store: JobStore, wait_s: float = RESTART_WAIT_S) -> RestartOutcome:
    """Replace the local worker by one with this process's settings, never killing a job.

    Args:
        store: the job queue.
        wait_s: how long to wait for an idle worker to exit.

    Returns:
        A :class:`RestartOutcome`.
    """
    if not autostart_enabled():
        return RestartOutcome("off")
    status = worker.worker_status(store)
    if not status.alive:
        return RestartOutcome("restarted", worker.spawn_worker(store).pid)
    state = store.request_worker_stop(status.worker_id) if status.worker_id else None
    if state == "busy":
        replacement = worker.spawn_worker(store, wait_lock=True)
        running = store.list(statuses=("running",))
        job_id = next((j.id for j in running if j.worker == status.worker_id), status.job_id)
        return RestartOutcome("after_job", replacement.pid, job_id)
    if not _wait_for_exit(store, wait_s):
        return RestartOutcome("timeout")
    return RestartOutcome("restarted", worker.spawn_worker(store).pid)


def restart_if_stale_and_idle(
    store: JobStore, status: WorkerInfo | None = None, wait_s: float = RESTART_WAIT_S
) -> int | None:
    """Restart the local worker if it runs with other settings and no job.

    Args:
        store: the job queue.
        status: the worker status the caller already read (default: read it now).
        wait_s: how long to wait for the old worker to exit.

    Returns:
        The new worker's pid, or None when nothing was restarted (current, busy, already
        asked to stop, no worker, or autostart off).
    """
    if not autostart_enabled():
        return None
    found = check(store, status)
    if not found.stale or found.status.stop_requested or found.status.job_id is not None:
        return None
    outcome = restart_worker(store, wait_s)
    return outcome.pid if outcome.kind == "restarted" else None
