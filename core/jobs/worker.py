"""The local training worker: its lock, its liveness, how it is started, and the loop it runs.

``python -m core.jobs worker`` builds a :class:`Worker`, which claims queued jobs one by one
and runs each in its own child process (``python -m core.jobs run-job ID``, see
``core.jobs.child``), so a crash inside TensorFlow fails that job only. The worker pumps the
child's stdout/stderr into the job's log and heartbeats every :data:`HEARTBEAT_S` seconds.

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
from core.jobs.schema import Job
from core.jobs.store import JobStore

log = logging.getLogger(__name__)

HEARTBEAT_S = 2.0
HEARTBEAT_STALE_S = 30.0
CANCEL_GRACE_S = 15.0  # a child that ignores the cancel flag this long is killed
STOP_GRACE_S = 10.0


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
    command = [sys.executable, "-m", "core.jobs", "worker", "--db", str(store.path)]
    if wait_lock:
        command.append("--wait-lock")
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            command,
            cwd=config.REPO_ROOT,
            env=_child_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # its own session: a Ctrl-C or a restart of the Streamlit server does not kill it,
            # so the running job finishes and queued jobs keep going
            start_new_session=True,
        )
    _SPAWNED[str(store.path)] = (proc, time.monotonic())
    return proc


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(config.REPO_ROOT)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in parts:
        env["PYTHONPATH"] = os.pathsep.join([root, *parts])
    env["PYTHONUNBUFFERED"] = "1"  # log lines reach the UI as they are printed
    return env


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class Worker:
    """Runs queued jobs one at a time, each in a child process."""

    def __init__(self, store: JobStore, poll_s: float = 1.0):
        self.store = store
        self.poll_s = poll_s
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.id = _worker_id(self.pid)
        self._stop = threading.Event()
        self._current: int | None = None
        self._beat_lock = threading.Lock()

    def stop(self, *_: Any) -> None:
        self._stop.set()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                with self._beat_lock:  # never overwrite a newer job id with a stale one
                    self.store.heartbeat(self.id, self.pid, self.host, self._current)
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
            # what this worker runs with: the app compares it with its own settings
            settings = worker_settings.current(self.store.path)
            self.store.heartbeat(self.id, self.pid, self.host, settings=settings)
            beat = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
            beat.start()
            log.info("[worker] %s serving %s", self.id, self.store.path)
            while not self._stop.is_set():
                if self.store.worker_stop_requested(self.id):
                    log.info("[worker] restart requested: exiting before the next job")
                    break
                job = self.store.claim_next(self.id)
                if job is None:
                    if once or drain:
                        break
                    self._stop.wait(self.poll_s)
                    continue
                with self._beat_lock:
                    self._current = job.id
                    self.store.heartbeat(self.id, self.pid, self.host, job.id)
                try:
                    self.run_job(job)
                except Exception as exc:  # never let one job take the worker down
                    log.exception("[worker] job %d raised in the worker", job.id)
                    self.store.append_log(job.id, f"\n[worker] {traceback.format_exc()}")
                    self.store.fail(job.id, f"worker error: {type(exc).__name__}: {exc}")
                finally:
                    with self._beat_lock:
                        self._current = None
                        self.store.heartbeat(self.id, self.pid, self.host, None)
                    self.clean_scratch()  # a child killed while saving left its scratch folder
                if once:
                    break
        finally:
            self._stop.set()
            with contextlib.suppress(sqlite3.Error):
                self.store.remove_worker(self.id)
            os.close(fd)
        return 0

    def run_job(self, job: Job) -> None:
        """Run one claimed job in a child process, pumping its output into the job log."""
        log.info("[worker] job %d started: %s", job.id, job.params)
        self.store.append_log(job.id, f"[worker] job {job.id} started by {self.id}\n")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "core.jobs",
                "run-job",
                str(job.id),
                "--db",
                str(self.store.path),
                "--parent",
                str(self.pid),
            ],
            cwd=config.REPO_ROOT,
            env=_child_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        chunks: list[str] = []
        lock = threading.Lock()

        def pump() -> None:
            assert proc.stdout is not None
            for raw in iter(proc.stdout.readline, b""):
                with lock:
                    chunks.append(raw.decode("utf-8", errors="replace"))

        reader = threading.Thread(target=pump, name=f"job-{job.id}-log", daemon=True)
        reader.start()

        def flush() -> None:
            with lock:
                text = "".join(chunks)
                chunks.clear()
            self.store.append_log(job.id, text)

        cancel_at: float | None = None
        stop_at: float | None = None
        reason: str | None = None
        while proc.poll() is None:
            time.sleep(0.5)
            flush()
            now = time.monotonic()
            if cancel_at is None and self.store.cancel_requested(job.id):
                cancel_at = now
            if cancel_at is not None and now - cancel_at > CANCEL_GRACE_S and reason is None:
                reason = "cancel"  # the child did not notice the flag in time (e.g. loading)
                proc.kill()
            if self._stop.is_set() and stop_at is None:
                stop_at = now
                proc.terminate()
            if stop_at is not None and now - stop_at > STOP_GRACE_S and reason is None:
                reason = "stop"
                proc.kill()
        reader.join(timeout=5)
        flush()
        code = proc.returncode
        after = self.store.get(job.id, with_log=False)
        if after is not None and after.status == "running":  # the child reported nothing
            if reason == "cancel" or (cancel_at is not None and not self._stop.is_set()):
                self.store.append_log(job.id, "[worker] cancelled; nothing was saved\n")
                self.store.finish(job.id, status="cancelled")
            elif self._stop.is_set():
                self.store.requeue(job.id, "worker stopped; job put back in the queue")
            else:
                message = f"training process {_describe_exit(code)}"
                self.store.append_log(job.id, f"[worker] {message}\n")
                self.store.fail(job.id, message)
        final = self.store.get(job.id, with_log=False)
        log.info("[worker] job %d -> %s", job.id, final.status if final else "?")
