"""The local training worker: its lock, its liveness, how it is started, and the loop it runs.

``python -m core.jobs worker`` builds a :class:`Worker`, which claims queued jobs and hands
each to its executor (``core.jobs.executors``): by default the local one, which runs the job in
its own child process (``python -m core.jobs run-job ID``, see ``core.jobs.child``) so a crash
inside TensorFlow fails that job only, one job at a time; or the Ray one, which runs up to
``--max-running`` jobs at once on a cluster, each from a thread of this process. The worker
heartbeats every :data:`HEARTBEAT_S` seconds and records where its jobs run.

An exclusive ``flock`` on ``<db>.worker.lock`` keeps a second worker on this machine from
running jobs in parallel; the same lock tells the app whether a worker is alive
(:func:`worker_status`).

The worker reports on the ``core.jobs.worker`` logger (``python -m core.jobs`` prints it to
stdout, which :func:`spawn_worker` sends to ``<db>.worker.log``).

Example::

    store = JobStore("var/jobs.sqlite")
    Worker(store).run(drain=True)  # run every queued job, then return 0
    worker_status(store).alive     # False again: the lock was released
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import config, registry
from core.jobs import settings as worker_settings
from core.jobs.executors import Executor, JobContext, LocalExecutor
from core.jobs.executors.local import child_env
from core.jobs.schema import Job
from core.jobs.store import JobStore

log = logging.getLogger(__name__)

HEARTBEAT_S = 2.0
HEARTBEAT_STALE_S = 30.0
DESCRIBE_EVERY_S = 10.0  # how often the worker refreshes where jobs run (a cluster's free CPUs)


@dataclass(frozen=True)
class WorkerInfo:
    """Liveness of the local worker, for the UI and :func:`ensure_worker`."""

    alive: bool
    pid: int | None = None
    host: str | None = None
    heartbeat_age_s: float | None = None
    job_id: int | None = None
    starting: bool = False
    worker_id: str | None = None
    settings: dict[str, str] | None = None  # what it runs with (None: not recorded)
    stop_requested: bool = False  # it exits before claiming another job (a restart)
    executor: dict[str, Any] | None = None  # where its jobs run (None: local, older worker)

    @property
    def responsive(self) -> bool:
        return (
            self.alive
            and not self.starting
            and self.heartbeat_age_s is not None
            and self.heartbeat_age_s <= HEARTBEAT_STALE_S
        )


def lock_path(db_path: str | os.PathLike | None = None, suffix: str = ".worker.lock") -> Path:
    db = Path(db_path) if db_path is not None else config.jobs_db()
    return db.with_name(db.name + suffix)


def worker_log_path(db_path: str | os.PathLike | None = None) -> Path:
    db = Path(db_path) if db_path is not None else config.jobs_db()
    return db.with_name(db.name + ".worker.log")


def _try_lock(path: Path, wait: bool = False) -> int | None:
    """Take the exclusive worker lock; return its fd, or None when another process holds it.

    flock locks die with their process (even on SIGKILL), so a crashed worker never leaves a
    stale lock behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _worker_id(pid: int | None = None) -> str:
    return f"{socket.gethostname()}:{pid or os.getpid()}"


# Workers started by this process (the Streamlit server), by queue path: their Popen objects
# reap them when they exit and tell the UI "starting" before they hold the lock.
_SPAWNED: dict[str, tuple[subprocess.Popen, float]] = {}


def worker_status(store: JobStore | None = None) -> WorkerInfo:
    """Whether a worker for this queue is alive on this machine (it holds the lock)."""
    store = store or JobStore()
    fd = _try_lock(lock_path(store.path))
    alive = fd is None
    if fd is not None:
        os.close(fd)
    host = socket.gethostname()
    rows = [w for w in store.workers() if w["host"] == host]
    if not alive:
        spawned = _SPAWNED.get(str(store.path))
        # A worker this process just started needs a moment to import and take the lock;
        # poll() also reaps it if it already exited, so a zombie never looks alive.
        if spawned and spawned[0].poll() is None and time.monotonic() - spawned[1] < 30:
            return WorkerInfo(alive=True, pid=spawned[0].pid, host=host, starting=True)
        return WorkerInfo(alive=False)
    if not rows:
        return WorkerInfo(alive=True, host=host, starting=True)
    latest = rows[0]
    return WorkerInfo(
        alive=True,
        pid=latest["pid"],
        host=host,
        heartbeat_age_s=max(0.0, time.time() - latest["heartbeat_at"]),
        job_id=latest["job_id"],
        worker_id=latest["id"],
        settings=json.loads(latest["settings"]) if latest.get("settings") else None,
        stop_requested=bool(latest.get("stop_requested")),
        executor=json.loads(latest["executor"]) if latest.get("executor") else None,
    )


def spawn_worker(store: JobStore, wait_lock: bool = False) -> subprocess.Popen:
    """Start a detached ``python -m core.jobs worker`` with this process's environment.

    Args:
        wait_lock: the new worker waits for the current one to exit (a restart after the
            running job) instead of exiting at once.

    Returns:
        The worker's ``Popen`` (also remembered, so :func:`worker_status` can say "starting").
    """
    log_path = worker_log_path(store.path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # the executor follows the app's environment: RAY_ADDRESS set means "run on that cluster"
    command = [sys.executable, "-m", "core.jobs", "worker", "--db", str(store.path)]
    if wait_lock:
        command.append("--wait-lock")
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            command,
            cwd=config.REPO_ROOT,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # its own session: a Ctrl-C or a restart of the Streamlit server does not kill it,
            # so the running job finishes and queued jobs keep going
            start_new_session=True,
        )
    _SPAWNED[str(store.path)] = (proc, time.monotonic())
    return proc


class Worker:
    """Claims queued jobs and hands each to its executor (local child process, or Ray)."""

    def __init__(self, store: JobStore, poll_s: float = 1.0, executor: Executor | None = None):
        self.store = store
        self.poll_s = poll_s
        self.executor = executor or LocalExecutor()
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.id = _worker_id(self.pid)
        self._stop = threading.Event()
        self._running: dict[int, threading.Thread] = {}
        self._beat_lock = threading.Lock()
        self._describe_error: str | None = None

    @property
    def _current(self) -> int | None:
        """The oldest running job (the workers table holds one job id per worker)."""
        return min(self._running) if self._running else None

    def stop(self, *_: Any) -> None:
        self._stop.set()

    def _describe(self) -> dict[str, Any] | None:
        try:
            where = self.executor.describe()
            self._describe_error = None
            return where
        except Exception as exc:  # a cluster that went away: report it, keep the worker
            error = f"{type(exc).__name__}: {exc}"
            if error != self._describe_error:  # once per new error, not every 10 s
                log.warning("[worker] could not describe the executor: %s", exc)
            self._describe_error = error
            where = {"kind": self.executor.kind, "error": error}
            if getattr(self.executor, "address", None):  # the page names the cluster it lost
                where["address"] = self.executor.address
            return where

    def _beat(self) -> None:
        last_describe = time.monotonic()
        while not self._stop.wait(HEARTBEAT_S):
            where = None
            if time.monotonic() - last_describe >= DESCRIBE_EVERY_S:
                last_describe = time.monotonic()
                where = self._describe()
            try:
                with self._beat_lock:  # never overwrite a newer job id with a stale one
                    self.store.heartbeat(
                        self.id, self.pid, self.host, self._current, executor=where
                    )
            except sqlite3.Error as exc:  # a locked DB for 30 s: report and keep beating
                log.warning("[worker] heartbeat failed: %s", exc)

    def clean_scratch(self) -> list[str]:
        """Remove scratch folders of saves killed mid-way (never those of a live save).

        Returns:
            The names removed; a registry that cannot be read is reported, not raised.
        """
        try:
            removed = registry.clean_scratch()
        except OSError as exc:
            log.warning("[worker] could not clean scratch folders: %s", exc)
            return []
        if removed:
            log.info("[worker] removed scratch of interrupted saves: %s", removed)
        return removed

    def run(self, once: bool = False, drain: bool = False, wait_lock: bool = False) -> int:
        """Process jobs until stopped (or after one job / an empty queue).

        Returns:
            0 normally, 3 when another worker holds the lock (nothing was run).

        Raises:
            RuntimeError: the executor cannot start (e.g. the Ray cluster is unreachable).
        """
        waiting = None
        if wait_lock:
            # at most one worker waits to take over (a restart requested twice, or by two app
            # servers, must not leave a queue of replacements behind)
            waiting = _try_lock(lock_path(self.store.path, ".worker.next.lock"))
            if waiting is None:
                log.info("[worker] another worker is already waiting to take over; exiting.")
                return 3
        try:
            fd = _try_lock(lock_path(self.store.path), wait=wait_lock)
        finally:
            if waiting is not None:
                os.close(waiting)
        if fd is None:
            log.info("[worker] another worker holds %s; exiting.", lock_path(self.store.path))
            return 3
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        try:
            orphans = self.store.requeue_orphans()  # we hold the lock: no other worker lives
            if orphans:
                log.info("[worker] marked orphaned jobs %s failed", orphans)
            self.clean_scratch()
            self.executor.start()
            if threading.current_thread() is threading.main_thread():
                # again: connecting to Ray installs its own SIGTERM handler, which would kill
                # the worker without stopping (and requeueing) its running jobs
                signal.signal(signal.SIGTERM, self.stop)
                signal.signal(signal.SIGINT, self.stop)
            # what this worker runs with: the app compares it with its own settings
            settings = worker_settings.current(self.store.path)
            self.store.heartbeat(
                self.id, self.pid, self.host, settings=settings, executor=self._describe()
            )
            beat = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
            beat.start()
            log.info(
                "[worker] %s serving %s with the %s executor (%d at a time)",
                self.id,
                self.store.path,
                self.executor.kind,
                self.executor.max_running,
            )
            self._loop(once, drain)
        finally:
            self._stop.set()
            for thread in list(self._running.values()):
                thread.join()  # each job run sees the stop flag and requeues or ends its job
            with contextlib.suppress(Exception):
                self.executor.close()
            with contextlib.suppress(sqlite3.Error):
                self.store.remove_worker(self.id)
            os.close(fd)
        return 0

    def _loop(self, once: bool, drain: bool) -> None:
        claimed = 0
        while not self._stop.is_set():
            for job_id, thread in list(self._running.items()):
                if not thread.is_alive():
                    self._running.pop(job_id, None)
            if once and claimed:
                if not self._running:
                    return
            elif self.store.worker_stop_requested(self.id):
                if not self._running:
                    log.info("[worker] restart requested: exiting before the next job")
                    return
            elif len(self._running) < self.executor.max_running and self.executor.ready(
                busy=bool(self._running)
            ):
                job = self.store.claim_next(self.id)
                if job is not None:
                    claimed += 1
                    self._start(job)
                    continue
                if (once or drain) and not self._running:
                    return
            self._stop.wait(self.poll_s if not self._running else min(self.poll_s, 0.2))

    def _start(self, job: Job) -> None:
        with self._beat_lock:
            thread = threading.Thread(
                target=self._run_claimed, args=(job,), name=f"job-{job.id}", daemon=True
            )
            self._running[job.id] = thread
            self.store.heartbeat(self.id, self.pid, self.host, self._current)
        thread.start()

    def _run_claimed(self, job: Job) -> None:
        log.info("[worker] job %d started: %s", job.id, job.params)
        self.store.append_log(job.id, f"[worker] job {job.id} started by {self.id}\n")
        try:
            self.executor.run_job(job, JobContext(self.store, self.id, self.pid, self._stop))
            after = self.store.get(job.id, with_log=False)
            if after is not None and after.status == "running":  # the executor left it open
                self.store.fail(job.id, f"the {self.executor.kind} executor did not end the job")
        except Exception as exc:  # never let one job take the worker down
            log.exception("[worker] job %d raised in the worker", job.id)
            self.store.append_log(job.id, f"\n[worker] {traceback.format_exc()}")
            self.store.fail(job.id, f"worker error: {type(exc).__name__}: {exc}")
        finally:
            with self._beat_lock:
                self._running.pop(job.id, None)
                self.store.heartbeat(self.id, self.pid, self.host, self._current)
            self.clean_scratch()  # a child killed while saving left its scratch folder
        final = self.store.get(job.id, with_log=False)
        log.info("[worker] job %d -> %s", job.id, final.status if final else "?")
