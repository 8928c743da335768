"""The job queue's storage: one SQLite file, its schema, and :class:`JobStore`.

State lives in one SQLite file (``core.config.jobs_db()``, env ``JOBS_DB``) in WAL mode, so the
app can read while the worker writes. Jobs are claimed inside ``BEGIN IMMEDIATE`` transactions,
so two claimers can never take the same job.

The tables and the :class:`~core.jobs.schema.Job` row type are in ``core.jobs.schema``. See
docs/jobs.md for the design and how a shared broker would replace SQLite for workers on other
machines.

Example::

    store = JobStore(tmp_path / "jobs.sqlite")
    job_id = store.submit({"dataset": "breastmnist", "model": "cnn2d"})
    job = store.claim_next("host:123")  # what a worker does
    store.finish(job.id, run_dir="trained_models/breastmnist_cnn2d")

No TensorFlow, no streamlit: the app imports this on every page load.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from core import config
from core.jobs import schema
from core.jobs.schema import ACTIVE_STATUSES, Job

LOG_MAX_CHARS = 200_000  # keep the tail: a runaway log must not bloat the DB the UI polls
WORKER_DIED_MESSAGE = "worker died mid-run"


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
                    conn.executescript(schema.SCHEMA)
                    schema.add_missing_columns(conn)
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
            node=row["node"],
            resources=json.loads(row["resources"]) if row["resources"] else None,
        )

    # -- queue -------------------------------------------------------------------------------
    def submit(
        self,
        params: Mapping[str, Any],
        submitted_by: str | None = None,
        resources: Mapping[str, int] | None = None,
    ) -> int:
        """Queue a job and return its id. ``params`` should come from ``check_params``.

        Args:
            params: a checked ``TrainConfig`` as a dict (``core.jobs.submit_job`` checks it).
            submitted_by: who asked (shown in the job table).
            resources: ``{"cpus", "gpus", "workers"}`` for a cluster executor (None: 1 CPU,
                no GPU, one worker; ``core.jobs.resources.check_resources`` checks them).

        Returns:
            The new job's id.
        """
        payload = json.dumps(dict(params), sort_keys=True)
        wanted = json.dumps(dict(resources), sort_keys=True) if resources else None
        with self._transaction() as conn:
            cur = conn.execute(
                "INSERT INTO jobs (status, params, submitted_by, submitted_at, resources) "
                "VALUES ('queued', ?, ?, ?, ?)",
                (payload, submitted_by, time.time(), wanted),
            )
            return int(cur.lastrowid)

    def get(self, job_id: int, with_log: bool = True) -> Job | None:
        """One job (with its log unless ``with_log`` is False), or None."""
        columns = schema.JOB_COLUMNS + (", log" if with_log else "")
        with self._connect() as conn:
            row = conn.execute(f"SELECT {columns} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        return self._job(row, row["log"] if with_log else "")

    def list(self, limit: int = 200, statuses: tuple[str, ...] | None = None) -> list[Job]:
        """Newest jobs first, without their logs."""
        query = f"SELECT {schema.JOB_COLUMNS} FROM jobs"
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

    def set_node(self, job_id: int, node: str) -> None:
        """Record where a job runs (shown in the job table's Node column)."""
        with self._transaction() as conn:
            conn.execute("UPDATE jobs SET node = ? WHERE id = ?", (node, job_id))

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
        executor: Mapping[str, Any] | None = None,
    ) -> None:
        """Register or refresh a worker.

        Args:
            settings: (when given) what it runs with, compared with the app's.
            executor: (when given) where its jobs run: ``{"kind": "local"}`` or the Ray
                cluster's address and free resources, for the Retrain page.
        """
        now = time.time()
        payload = json.dumps(dict(settings), sort_keys=True) if settings is not None else None
        where = json.dumps(dict(executor), sort_keys=True) if executor is not None else None
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO workers "
                "(id, host, pid, started_at, heartbeat_at, job_id, settings, executor) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "heartbeat_at = excluded.heartbeat_at, job_id = excluded.job_id, "
                "settings = COALESCE(excluded.settings, workers.settings), "
                "executor = COALESCE(excluded.executor, workers.executor)",
                (worker_id, host, pid, now, now, job_id, payload, where),
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
