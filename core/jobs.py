"""Background training jobs: a SQLite queue, one worker process, one job at a time.

The Streamlit app never trains in its script thread. The Retrain page validates a form with
:func:`check_params` and calls :meth:`JobStore.submit`; a separate worker process
(``python -m core.jobs worker``) claims queued jobs one by one and runs each in its own child
process (``python -m core.jobs run-job ID``), so a crash inside TensorFlow fails that job only.
The child reports progress, the outcome and the run directory through the same
:class:`JobStore`; the worker captures the child's stdout/stderr into the job's log.

State lives in one SQLite file (``core.config.jobs_db()``, env ``JOBS_DB``) in WAL mode, so the
app can read while the worker writes. Jobs are claimed inside ``BEGIN IMMEDIATE`` transactions,
so two claimers can never take the same job. An exclusive ``flock`` on ``<db>.worker.lock``
keeps a second worker on this machine from running jobs in parallel.

Statuses: ``queued`` -> ``running`` -> ``succeeded`` | ``failed`` | ``cancelled`` (a queued job
can also go straight to ``cancelled``). See docs/jobs.md for the design, the failure modes it
handles, and how a shared broker would replace SQLite for workers on other machines.

Usage::

    python -m core.jobs worker [--once | --drain] [--poll S] [--db PATH]
    python -m core.jobs list [--db PATH]
    python -m core.jobs cancel ID [--db PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import json
import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import config, worker_settings
from core.job_params import (  # noqa: F401 - re-exported: core.jobs is the public entry point
    MODELS_2D,
    MODELS_3D,
    UI_LIMITS,
    InvalidParamsError,
    ParamCheck,
    check_params,
)

STATUSES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE_STATUSES: frozenset[str] = frozenset({"queued", "running"})
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})

LOG_MAX_CHARS = 200_000  # keep the tail: a runaway log must not bloat the DB the UI polls
HEARTBEAT_S = 2.0
HEARTBEAT_STALE_S = 30.0
CANCEL_GRACE_S = 15.0  # a child that ignores the cancel flag this long is killed
STOP_GRACE_S = 10.0
WORKER_DIED_MESSAGE = "worker died mid-run"


# --------------------------------------------------------------------------------------------
# Store
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One row of the job table, as the UI and the worker see it."""

    id: int
    status: str
    params: dict[str, Any]
    submitted_by: str | None
    submitted_at: float
    started_at: float | None
    finished_at: float | None
    worker: str | None
    run_dir: str | None
    error: str | None
    cancel_requested: bool
    log: str = ""

    @property
    def run_name(self) -> str | None:
        return Path(self.run_dir).name if self.run_dir else None

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES


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


_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    status TEXT NOT NULL CHECK (status IN ({", ".join(repr(s) for s in STATUSES)})),
    params TEXT NOT NULL,
    submitted_by TEXT,
    submitted_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    worker TEXT,
    run_dir TEXT,
    error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    log TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, id);
CREATE TABLE IF NOT EXISTS progress (
    job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    epoch INTEGER NOT NULL,
    epochs INTEGER,
    loss REAL,
    val_auc REAL,
    val_acc REAL,
    extra TEXT,
    at REAL NOT NULL,
    PRIMARY KEY (job_id, epoch)
);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    job_id INTEGER,
    settings TEXT,
    stop_requested INTEGER NOT NULL DEFAULT 0
);
"""
# columns added after the first release: (name, declaration), added to older files on open
_WORKER_COLUMNS_ADDED = (("settings", "TEXT"), ("stop_requested", "INTEGER NOT NULL DEFAULT 0"))


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Bring a job database made by an older version up to the current workers table."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(workers)")}
    for name, declaration in _WORKER_COLUMNS_ADDED:
        if name not in have:
            # another process may add it between our check and here: that is fine
            with contextlib.suppress(sqlite3.OperationalError):
                conn.execute(f"ALTER TABLE workers ADD COLUMN {name} {declaration}")


_JOB_COLUMNS = (
    "id, status, params, submitted_by, submitted_at, started_at, finished_at, "
    "worker, run_dir, error, cancel_requested"
)


class JobStoreError(sqlite3.DatabaseError, RuntimeError):
    """The job database file is not a SQLite database, is damaged or cannot be opened.

    A ``sqlite3.DatabaseError`` (so callers that catch sqlite errors keep working) and a
    ``RuntimeError`` (so ``core.cli`` prints it as one ``error:`` line, exit status 2).
    """


# Any error of the job database (busy, damaged, unreadable, or a JobStoreError): what a caller
# of JobStore catches, so the Retrain page need not import sqlite3 itself.
StoreError = sqlite3.Error


# sqlite result codes meaning "this file cannot be the queue", as opposed to a busy database
_UNUSABLE_FILE_ERRORS = frozenset(
    {"SQLITE_NOTADB", "SQLITE_CORRUPT", "SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_IOERR"}
)


def _finite_or_none(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class JobStore:
    """The job queue in one SQLite file.

    Every method opens its own short-lived connection, so one store can be shared by Streamlit
    sessions, the worker's threads and the job child without locking in Python. A broker-backed
    store (Redis, huey, Postgres) would implement the same methods; see docs/jobs.md.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path).expanduser() if path is not None else config.jobs_db()
        self._initialised = False

    # -- plumbing ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if not self._initialised:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._open_error(exc) from exc
        try:
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA foreign_keys = ON")
            if not self._initialised:
                try:
                    # WAL lets the app read while the worker writes; it is a property of the
                    # file, so setting it once per process is enough. This is the first read
                    # of the file: a file that is not SQLite fails here, before any write.
                    conn.execute("PRAGMA journal_mode = WAL")
                    conn.executescript(_SCHEMA)
                    _add_missing_columns(conn)
                except sqlite3.Error as exc:
                    raise self._open_error(exc) from exc
                self._initialised = True
            yield conn
        finally:
            conn.close()

    def _open_error(self, exc: sqlite3.Error) -> sqlite3.Error:
        """A :class:`JobStoreError` naming the file when it cannot be opened as the queue."""
        name = getattr(exc, "sqlite_errorname", "") or ""
        if not any(name == c or name.startswith(c + "_") for c in _UNUSABLE_FILE_ERRORS):
            return exc  # e.g. "database is locked": transient, keep sqlite's own error
        return JobStoreError(
            f"the job database {self.path.absolute()} cannot be used ({exc}). "
            "1. Check that --db / JOBS_DB names the job queue (default var/jobs.sqlite), "
            "not another file. "
            "2. If it is the job queue and it is damaged, stop the app and the worker, move "
            "the file aside (its queued jobs are lost) and start again: a new queue is created. "
            "The file was left untouched."
        )

    def check(self) -> None:
        """Open the database once, so a bad file is reported before anything else happens.

        Raises:
            JobStoreError: the file is not a SQLite database, is damaged or cannot be opened.
        """
        with self._connect():
            pass

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            # IMMEDIATE takes the write lock up front: read-then-update cannot interleave with
            # another writer (two claimers never get the same job).
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @staticmethod
    def _job(row: sqlite3.Row, log: str = "") -> Job:
        return Job(
            id=row["id"],
            status=row["status"],
            params=json.loads(row["params"]),
            submitted_by=row["submitted_by"],
            submitted_at=row["submitted_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            worker=row["worker"],
            run_dir=row["run_dir"],
            error=row["error"],
            cancel_requested=bool(row["cancel_requested"]),
            log=log,
        )

    # -- queue -------------------------------------------------------------------------------
    def submit(self, params: Mapping[str, Any], submitted_by: str | None = None) -> int:
        """Queue a job and return its id. ``params`` should come from :func:`check_params`."""
        payload = json.dumps(dict(params), sort_keys=True)
        with self._transaction() as conn:
            cur = conn.execute(
                "INSERT INTO jobs (status, params, submitted_by, submitted_at) "
                "VALUES ('queued', ?, ?, ?)",
                (payload, submitted_by, time.time()),
            )
            return int(cur.lastrowid)

    def get(self, job_id: int, with_log: bool = True) -> Job | None:
        """One job (with its log unless ``with_log`` is False), or None."""
        columns = _JOB_COLUMNS + (", log" if with_log else "")
        with self._connect() as conn:
            row = conn.execute(f"SELECT {columns} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        return self._job(row, row["log"] if with_log else "")

    def list(self, limit: int = 200, statuses: tuple[str, ...] | None = None) -> list[Job]:
        """Newest jobs first, without their logs."""
        query = f"SELECT {_JOB_COLUMNS} FROM jobs"
        args: list[Any] = []
        if statuses:
            query += f" WHERE status IN ({', '.join('?' * len(statuses))})"
            args.extend(statuses)
        query += " ORDER BY id DESC LIMIT ?"
        args.append(int(limit))
        with self._connect() as conn:
            return [self._job(row) for row in conn.execute(query, args)]

    def claim_next(self, worker_id: str) -> Job | None:
        """Atomically move the oldest queued job to ``running`` for ``worker_id``."""
        with self._transaction() as conn:
            # in the same transaction as request_worker_stop: a worker asked to stop never
            # takes another job, so "idle" there stays true
            stop = conn.execute(
                "SELECT stop_requested FROM workers WHERE id = ?", (worker_id,)
            ).fetchone()
            if stop is not None and stop["stop_requested"]:
                return None
            row = conn.execute(
                "SELECT id FROM jobs WHERE status = 'queued' ORDER BY id LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET status = 'running', started_at = ?, worker = ? WHERE id = ?",
                (time.time(), worker_id, row["id"]),
            )
            job_id = row["id"]
        return self.get(job_id, with_log=False)

    # -- progress and logs -------------------------------------------------------------------
    def update_progress(self, job_id: int, logs: Mapping[str, Any]) -> None:
        """Record one epoch: ``{"epoch", "epochs", "loss", "val_auc", "val_acc", ...}``."""
        core_keys = {"epoch", "epochs", "loss", "val_auc", "val_acc"}
        extra = {k: _finite_or_none(v) for k, v in logs.items() if k not in core_keys}
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO progress "
                "(job_id, epoch, epochs, loss, val_auc, val_acc, extra, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id,
                    int(logs["epoch"]),
                    int(logs["epochs"]) if logs.get("epochs") is not None else None,
                    _finite_or_none(logs.get("loss")),
                    _finite_or_none(logs.get("val_auc")),
                    _finite_or_none(logs.get("val_acc")),
                    json.dumps(extra),
                    time.time(),
                ),
            )

    def progress(self, job_id: int) -> list[dict[str, Any]]:
        """Epoch rows of a job in order: ``epoch, epochs, loss, val_auc, val_acc, at``."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT epoch, epochs, loss, val_auc, val_acc, extra, at FROM progress "
                "WHERE job_id = ? ORDER BY epoch",
                (job_id,),
            ).fetchall()
        out = []
        for row in rows:
            item = {k: row[k] for k in ("epoch", "epochs", "loss", "val_auc", "val_acc", "at")}
            item.update(json.loads(row["extra"] or "{}"))
            out.append(item)
        return out

    def append_log(self, job_id: int, text: str) -> None:
        """Append to a job's log, keeping only the last ``LOG_MAX_CHARS`` characters."""
        if not text:
            return
        with self._transaction() as conn:
            conn.execute(
                "UPDATE jobs SET log = substr(log || ?, ?) WHERE id = ?",
                (text, -LOG_MAX_CHARS, job_id),
            )

    # -- outcomes ----------------------------------------------------------------------------
    def finish(
        self, job_id: int, run_dir: str | os.PathLike | None = None, status: str = "succeeded"
    ) -> bool:
        """End a running job as ``succeeded`` (with its run dir) or ``cancelled``.

        Returns:
            False when the job was no longer running (e.g. already failed as an orphan).
        """
        if status not in ("succeeded", "cancelled"):
            raise ValueError(
                f"status {status!r} is not supported by finish(); "
                "use 'succeeded' or 'cancelled' (or fail())"
            )
        with self._transaction() as conn:
            cur = conn.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, run_dir = ? "
                "WHERE id = ? AND status = 'running'",
                (status, time.time(), str(run_dir) if run_dir is not None else None, job_id),
            )
            return cur.rowcount == 1

    def fail(self, job_id: int, error: str) -> bool:
        """Mark a queued or running job failed with a one-line reason."""
        with self._transaction() as conn:
            cur = conn.execute(
                "UPDATE jobs SET status = 'failed', finished_at = ?, error = ? "
                "WHERE id = ? AND status IN ('queued', 'running')",
                (time.time(), error, job_id),
            )
            return cur.rowcount == 1

    def requeue(self, job_id: int, note: str) -> bool:
        """Put a running job back in the queue (graceful worker shutdown), clearing progress."""
        with self._transaction() as conn:
            cur = conn.execute(
                "UPDATE jobs SET status = 'queued', started_at = NULL, worker = NULL, "
                "log = substr(log || ?, ?) WHERE id = ? AND status = 'running'",
                (f"\n[worker] {note}\n", -LOG_MAX_CHARS, job_id),
            )
            conn.execute("DELETE FROM progress WHERE job_id = ?", (job_id,))
            return cur.rowcount == 1

    def request_cancel(self, job_id: int) -> str | None:
        """Cancel a job: a queued one at once, a running one at its next batch.

        Returns:
            The job's status afterwards (``"cancelled"`` or ``"running"``), or None when the
            job does not exist or has already ended.
        """
        with self._transaction() as conn:
            row = conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row["status"] not in ACTIVE_STATUSES:
                return None
            if row["status"] == "queued":
                conn.execute(
                    "UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ?",
                    (time.time(), job_id),
                )
                return "cancelled"
            conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            return "running"

    def cancel_requested(self, job_id: int) -> bool:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        return bool(row and row["cancel_requested"])

    def requeue_orphans(self, is_alive: Callable[[str | None], bool] | None = None) -> list[int]:
        """Fail jobs left ``running`` by a worker that is gone.

        Orphans are failed, not re-run: the dead run's state is unknown and whatever killed it
        (out of memory, a TF crash) would likely kill it again, in a loop.

        Args:
            is_alive: tells whether the worker id recorded on a job is still alive. None means
                "no worker is alive", which is true when the caller holds the worker lock.

        Returns:
            The ids of the jobs marked failed.
        """
        failed = []
        with self._transaction() as conn:
            rows = conn.execute("SELECT id, worker FROM jobs WHERE status = 'running'").fetchall()
            for row in rows:
                if is_alive is not None and is_alive(row["worker"]):
                    continue
                conn.execute(
                    "UPDATE jobs SET status = 'failed', finished_at = ?, error = ?, "
                    "log = substr(log || ?, ?) WHERE id = ?",
                    (
                        time.time(),
                        WORKER_DIED_MESSAGE,
                        f"\n[worker] {WORKER_DIED_MESSAGE}\n",
                        -LOG_MAX_CHARS,
                        row["id"],
                    ),
                )
                failed.append(row["id"])
        return failed

    # -- workers -----------------------------------------------------------------------------
    def heartbeat(
        self,
        worker_id: str,
        pid: int,
        host: str,
        job_id: int | None = None,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        """Register or refresh a worker; ``settings`` (when given) records what it runs with."""
        now = time.time()
        payload = json.dumps(dict(settings), sort_keys=True) if settings is not None else None
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO workers (id, host, pid, started_at, heartbeat_at, job_id, settings) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "heartbeat_at = excluded.heartbeat_at, job_id = excluded.job_id, "
                "settings = COALESCE(excluded.settings, workers.settings)",
                (worker_id, host, pid, now, now, job_id, payload),
            )

    def request_worker_stop(self, worker_id: str) -> str | None:
        """Ask a worker to exit before it claims another job (how a worker is restarted).

        Returns:
            ``"idle"`` when it runs no job (it exits within one poll), ``"busy"`` when it
            finishes its running job first, None when no such worker is registered.
        """
        with self._transaction() as conn:
            cur = conn.execute("UPDATE workers SET stop_requested = 1 WHERE id = ?", (worker_id,))
            if cur.rowcount == 0:
                return None
            running = conn.execute(
                "SELECT COUNT(*) FROM jobs WHERE status = 'running' AND worker = ?", (worker_id,)
            ).fetchone()[0]
        return "busy" if running else "idle"

    def worker_stop_requested(self, worker_id: str) -> bool:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT stop_requested FROM workers WHERE id = ?", (worker_id,)
            ).fetchone()
        return bool(row and row["stop_requested"])

    def remove_worker(self, worker_id: str) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM workers WHERE id = ?", (worker_id,))

    def workers(self) -> list[dict[str, Any]]:
        """Registered workers, freshest heartbeat first."""
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM workers ORDER BY heartbeat_at DESC").fetchall()
        return [dict(row) for row in rows]


def submit_job(
    params: Mapping[str, Any], submitted_by: str | None = None, store: JobStore | None = None
) -> int:
    """Validate ``params`` with :func:`check_params` and queue the job.

    Returns:
        The new job's id.

    Raises:
        InvalidParamsError: listing every invalid field.
    """
    checked = check_params(params)
    if not checked.ok:
        raise InvalidParamsError(checked.errors)
    return (store or JobStore()).submit(checked.config.to_dict(), submitted_by)


# --------------------------------------------------------------------------------------------
# Worker lock and liveness
# --------------------------------------------------------------------------------------------


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


def autostart_enabled() -> bool:
    """False when ``JOBS_WORKER_AUTOSTART=0``: workers are then started (and restarted) by hand
    or by a service manager, and the app never starts or stops one."""
    return os.environ.get("JOBS_WORKER_AUTOSTART", "1").strip() != "0"


def ensure_worker(store: JobStore | None = None) -> int | None:
    """Start a detached local worker unless a current one is alive; call once per app server.

    A live worker whose recorded settings (``MEDMNIST_ROOT``, ``TRAINED_MODELS_DIR``, ...)
    differ from this process's is restarted when it is idle (see ``core.worker_control``); a
    busy one is left to finish its job (the Retrain page offers the restart).
    Set ``JOBS_WORKER_AUTOSTART=0`` to turn this off (tests, or when workers run as services).

    Returns:
        The pid of the worker that is running or starting now (None when autostart is off, or
        when a worker holds the lock but has not registered yet).
    """
    if not autostart_enabled():
        return None
    store = store or JobStore()
    status = worker_status(store)
    if status.alive:
        from core import worker_control  # it imports this module

        restarted = worker_control.restart_if_stale_and_idle(store, status)
        return restarted if restarted is not None else status.pid
    return spawn_worker(store).pid


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


# --------------------------------------------------------------------------------------------
# Worker
# --------------------------------------------------------------------------------------------


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
                print(f"[worker] heartbeat failed: {exc}", flush=True)

    def clean_scratch(self) -> list[str]:
        """Remove scratch folders of saves killed mid-way (never those of a live save).

        Returns:
            The names removed; a registry that cannot be read is reported, not raised.
        """
        from core import registry

        try:
            removed = registry.clean_scratch()
        except OSError as exc:
            print(f"[worker] could not clean scratch folders: {exc}", flush=True)
            return []
        if removed:
            print(f"[worker] removed scratch of interrupted saves: {removed}", flush=True)
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
                print("[worker] another worker is already waiting to take over; exiting.")
                return 3
        try:
            fd = _try_lock(lock_path(self.store.path), wait=wait_lock)
        finally:
            if waiting is not None:
                os.close(waiting)
        if fd is None:
            print(
                f"[worker] another worker holds {lock_path(self.store.path)}; exiting.", flush=True
            )
            return 3
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        try:
            orphans = self.store.requeue_orphans()  # we hold the lock: no other worker lives
            if orphans:
                print(f"[worker] marked orphaned jobs {orphans} failed", flush=True)
            self.clean_scratch()
            # what this worker runs with: the app compares it with its own settings
            settings = worker_settings.current(self.store.path)
            self.store.heartbeat(self.id, self.pid, self.host, settings=settings)
            beat = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
            beat.start()
            print(f"[worker] {self.id} serving {self.store.path}", flush=True)
            while not self._stop.is_set():
                if self.store.worker_stop_requested(self.id):
                    print("[worker] restart requested: exiting before the next job", flush=True)
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
                    traceback.print_exc()
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
        print(f"[worker] job {job.id} started: {job.params}", flush=True)
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
        print(f"[worker] job {job.id} -> {final.status if final else '?'}", flush=True)


# --------------------------------------------------------------------------------------------
# Job child
# --------------------------------------------------------------------------------------------


def _die_with_parent(parent_pid: int | None) -> None:
    """Make the kernel SIGKILL this process when the worker dies (Linux).

    Without it, a job whose worker was killed would keep training and could write a run into
    the registry after the job was already marked failed.
    """
    if parent_pid is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the worker died before prctl took effect
        os._exit(1)


def run_job(job_id: int, store: JobStore | None = None, parent_pid: int | None = None) -> int:
    """Train one claimed job in this process (the worker's child); report through the store.

    Returns:
        0 when the job ended as succeeded/cancelled, 1 when it failed.
    """
    _die_with_parent(parent_pid)
    store = store or JobStore()
    job = store.get(job_id, with_log=False)
    if job is None or job.status != "running":
        print(f"job {job_id} is not running ({job.status if job else 'missing'}); nothing to do")
        return 1
    last_check = [0.0, False]

    def should_cancel() -> bool:
        # Checked every batch: one SQLite read per second at most keeps it cheap.
        if parent_pid is not None and os.getppid() != parent_pid:
            return True  # orphaned (no prctl on this OS): stop without saving
        now = time.monotonic()
        if now - last_check[0] >= 1.0:
            last_check[0] = now
            last_check[1] = store.cancel_requested(job_id)
        return bool(last_check[1])

    def on_progress(logs: Mapping[str, Any]) -> None:
        store.update_progress(job_id, logs)
        parts = [
            f"{k}={logs[k]:.4f}" if isinstance(logs.get(k), float) else f"{k}={logs.get(k)}"
            for k in ("epoch", "epochs", "loss", "val_auc", "val_acc")
            if k in logs
        ]
        print("[progress] " + " ".join(parts), flush=True)

    try:
        from core import data

        cfg = config.TrainConfig.from_dict(job.params).validate()
        print(f"[job] {json.dumps(cfg.to_dict(), sort_keys=True)}", flush=True)
        last_pct = [-10]

        def on_download(done: int, total: int) -> None:
            pct = int(100 * done / total) if total else 0
            if pct >= last_pct[0] + 10:
                last_pct[0] = pct
                print(f"[download] {cfg.dataset} {pct}% of {total / 1e6:.1f} MB", flush=True)

        data.ensure_file(cfg.dataset, cfg.size, download=True, progress=on_download)

        from core import training

        run_dir = training.run(
            cfg,
            callbacks=[
                training.ProgressCallback(on_progress),
                training.CancelCallback(should_cancel),
            ],
        )
    except BaseException as exc:  # noqa: BLE001 - every failure must end up in the job row
        training_mod = sys.modules.get("core.training")
        cancelled_type = getattr(training_mod, "TrainingCancelled", None)
        if cancelled_type is not None and isinstance(exc, cancelled_type):
            print("[job] cancelled; nothing was saved", flush=True)
            store.finish(job_id, status="cancelled")
            return 0
        traceback.print_exc()
        sys.stdout.flush()
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        store.fail(job_id, f"{type(exc).__name__}: {message}" if message else type(exc).__name__)
        return 1
    print(f"[job] saved run {run_dir}", flush=True)
    store.finish(job_id, run_dir=run_dir)
    return 0


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _format_time(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def main(argv: list[str] | None = None) -> int:
    """CLI: ``worker``, ``run-job`` (internal), ``list``, ``cancel``."""
    parser = argparse.ArgumentParser(prog="python -m core.jobs", description=__doc__.split("\n")[0])
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
        return Worker(store, poll_s=args.poll).run(
            once=args.once, drain=args.drain, wait_lock=args.wait_lock
        )
    if args.command == "run-job":
        return run_job(args.job_id, store, parent_pid=args.parent)
    if args.command == "list":
        for job in store.list():
            print(
                f"{job.id:>5}  {job.status:<10} {job.params.get('dataset', '?'):<16} "
                f"{job.params.get('model', '?'):<7} {_format_time(job.submitted_at)}  "
                f"{job.run_name or job.error or ''}"
            )
        return 0
    if args.command == "cancel":
        job = store.get(args.job_id, with_log=False)
        if job is None:
            from core import cli

            raise cli.CLIError(
                f"job {args.job_id} does not exist in {store.path.absolute()}; "
                f"run `python -m core.jobs list --db {store.path}` to see the job ids"
            )
        result = store.request_cancel(args.job_id)
        print(f"job {args.job_id}: " + (result or f"already {job.status}; nothing to cancel"))
        return 0 if result else 1
    return 2


if __name__ == "__main__":
    from core import cli

    raise SystemExit(cli.run(main))
