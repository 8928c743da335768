"""The job database's layout: statuses, the three tables, and the :class:`Job` row type.

One SQLite file holds ``jobs`` (one row per job, with its parameters as JSON and the tail of
its log), ``progress`` (one row per finished epoch) and ``workers`` (one row per live worker:
its heartbeat, running job, recorded settings and stop flag). ``core.jobs.store`` creates the
tables on first open and adds columns that older files lack (:func:`add_missing_columns`).

Statuses: ``queued`` -> ``running`` -> ``succeeded`` | ``failed`` | ``cancelled`` (a queued job
can also go straight to ``cancelled``).
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_RESOURCES: dict[str, int] = {"cpus": 1, "gpus": 0, "workers": 1}
STATUSES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
ACTIVE_STATUSES: frozenset[str] = frozenset({"queued", "running"})
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


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
    node: str | None = None  # where it ran: this host (local) or a Ray node's address and id
    resources: dict[str, int] | None = None  # what it asked for: cpus, gpus, workers

    @property
    def resource_request(self) -> dict[str, int]:
        """The job's ``{"cpus", "gpus", "workers"}``, with the defaults for older rows."""
        return {**DEFAULT_RESOURCES, **(self.resources or {})}

    @property
    def run_name(self) -> str | None:
        return Path(self.run_dir).name if self.run_dir else None

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES


SCHEMA = f"""
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
    log TEXT NOT NULL DEFAULT '',
    node TEXT,
    resources TEXT
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
    stop_requested INTEGER NOT NULL DEFAULT 0,
    executor TEXT
);
"""
# columns added after the first release, by table: (name, declaration), added on open
COLUMNS_ADDED: dict[str, tuple[tuple[str, str], ...]] = {
    "workers": (
        ("settings", "TEXT"),
        ("stop_requested", "INTEGER NOT NULL DEFAULT 0"),
        ("executor", "TEXT"),  # JSON: kind, Ray address, cluster resources (issue #12)
    ),
    "jobs": (("node", "TEXT"), ("resources", "TEXT")),
}
WORKER_COLUMNS_ADDED = COLUMNS_ADDED["workers"]  # kept for importers


def add_missing_columns(conn: sqlite3.Connection) -> None:
    """Bring a job database made by an older version up to the current tables.

    Only ``ALTER TABLE … ADD COLUMN`` with NULL or constant defaults: old rows keep working
    (a job without ``node`` shows none), and an older app reading a newer file ignores them.
    """
    for table, columns in COLUMNS_ADDED.items():
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for name, declaration in columns:
            if name not in have:
                # another process may add it between our check and here: that is fine
                with contextlib.suppress(sqlite3.OperationalError):
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")


JOB_COLUMNS = (
    "id, status, params, submitted_by, submitted_at, started_at, finished_at, "
    "worker, run_dir, error, cancel_requested, node, resources"
)
