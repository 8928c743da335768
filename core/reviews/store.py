"""Append-only storage of case reviews: one SQLite file (``core.config.reviews_db()``).

Every verdict a reviewer records is a new row; the *current* verdict of a reviewer on a case is
their latest row (highest id). Nothing is updated or deleted: triggers in the database refuse
``UPDATE`` and ``DELETE`` on the table, so the audit trail holds even against a future bug.

Concurrency: WAL mode (readers never block the writer), a busy timeout, and each insert in its
own short ``BEGIN IMMEDIATE`` transaction, so reviewers in two browsers (two Streamlit threads,
or two server processes on one file) never lose each other's verdicts
(``tests/test_reviews_store.py`` writes from threads and processes at once).

Errors a user can act on are :class:`ReviewStoreError` with numbered steps: a file that is not a
SQLite database (or is damaged), a read-only file or folder, a database locked for longer than
the busy timeout. The file is never rewritten or "repaired" here.

Example::

    store = ReviewStore(tmp_path / "reviews.sqlite")
    row_id = store.add(Verdict(reviewer="dr.a", run="retina_cnn", dataset="retinamnist",
                               split="test", sample_index=3, predicted=2, probability=0.61,
                               verdict="disagree", corrected_label=1, note="microaneurysms"))
    store.latest(run="retina_cnn", split="test")  # {("dr.a", "test:3"): Verdict(...)}

No TensorFlow, no streamlit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from core import config

VERDICTS: tuple[str, ...] = ("agree", "disagree", "unsure")
MAX_NOTE_CHARS = 2000
MAX_REVIEWER_CHARS = 120
# Long enough for a burst of simultaneous saves from a few reviewers (each insert takes
# milliseconds), short enough that a file held by a stuck process is reported while the
# reviewer still waits for the button.
BUSY_TIMEOUT_S = 10.0
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS verdicts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    reviewer TEXT NOT NULL,
    created_at TEXT NOT NULL,
    run TEXT NOT NULL,
    dataset TEXT NOT NULL,
    split TEXT NOT NULL,
    sample_index INTEGER,
    upload_sha256 TEXT,
    predicted INTEGER NOT NULL,
    probability REAL NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ({", ".join(repr(v) for v in VERDICTS)})),
    corrected_label INTEGER,
    note TEXT NOT NULL DEFAULT '' CHECK (length(note) <= {MAX_NOTE_CHARS}),
    CHECK ((sample_index IS NULL) <> (upload_sha256 IS NULL))
);
CREATE INDEX IF NOT EXISTS verdicts_by_case ON verdicts (run, split, sample_index, reviewer, id);
CREATE TRIGGER IF NOT EXISTS verdicts_no_update BEFORE UPDATE ON verdicts
BEGIN SELECT RAISE(ABORT, 'reviews are append-only: a verdict is never changed'); END;
CREATE TRIGGER IF NOT EXISTS verdicts_no_delete BEFORE DELETE ON verdicts
BEGIN SELECT RAISE(ABORT, 'reviews are append-only: a verdict is never deleted'); END;
"""

COLUMNS: tuple[str, ...] = (
    "id",
    "reviewer",
    "created_at",
    "run",
    "dataset",
    "split",
    "sample_index",
    "upload_sha256",
    "predicted",
    "probability",
    "verdict",
    "corrected_label",
    "note",
)


class ReviewStoreError(RuntimeError):
    """The review database cannot be used (not SQLite, damaged, read-only or locked).

    The message names the file and gives numbered steps; the file is left untouched.
    """


def validate_reviewer(name: str) -> str:
    """A reviewer name as stored: stripped, 1-120 characters, no control characters.

    Raises:
        ValueError: empty, too long or containing control characters (the value is quoted).
    """
    text = name.strip() if isinstance(name, str) else ""
    if not text or len(text) > MAX_REVIEWER_CHARS or _CONTROL_RE.search(text):
        raise ValueError(
            f"reviewer name {name!r} is invalid: use 1-{MAX_REVIEWER_CHARS} printable characters"
        )
    return text


def utc_now() -> str:
    """The current UTC time as ISO 8601 with microseconds (``2026-11-30T06:40:12.123456Z``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Verdict:
    """One review row. Build it with the fields below; ``id``/``created_at`` come from the store.

    A case is a dataset sample (``sample_index`` in ``split``) or an upload (``upload_sha256``,
    the SHA-256 of its bytes), never both.
    """

    reviewer: str
    run: str
    dataset: str
    split: str
    predicted: int
    probability: float
    verdict: str
    sample_index: int | None = None
    upload_sha256: str | None = None
    corrected_label: int | None = None
    note: str = ""
    id: int | None = None
    created_at: str | None = None

    @property
    def case_key(self) -> str:
        """``"test:12"`` for a sample, ``"sha256:<hex>"`` for an upload."""
        return case_key(self.split, self.sample_index, self.upload_sha256)

    @property
    def reviewer_label(self) -> int | None:
        """The class the reviewer says is right: the prediction when they agree, else the
        corrected label (None for "unsure" or a disagreement without a label)."""
        if self.verdict == "agree":
            return self.predicted
        if self.verdict == "disagree":
            return self.corrected_label
        return None

    def validated(self) -> Verdict:
        """This verdict with a clean reviewer name, checked field by field.

        Raises:
            ValueError: naming the first invalid field and the value received.
        """
        reviewer = validate_reviewer(self.reviewer)
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")
        if (self.sample_index is None) == (self.upload_sha256 is None):
            raise ValueError("a verdict needs exactly one of sample_index and upload_sha256")
        if self.sample_index is not None and (
            not _is_int(self.sample_index) or self.sample_index < 0
        ):
            raise ValueError(f"sample_index {self.sample_index!r} must be an integer >= 0")
        if self.upload_sha256 is not None and not _SHA256_RE.fullmatch(str(self.upload_sha256)):
            raise ValueError(f"upload_sha256 {self.upload_sha256!r} is not a lowercase SHA-256")
        for name in ("run", "dataset", "split"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or _CONTROL_RE.search(value):
                raise ValueError(f"{name} {value!r} must be a non-empty printable string")
        if not _is_int(self.predicted) or self.predicted < 0:
            raise ValueError(f"predicted {self.predicted!r} must be a class index >= 0")
        prob = self.probability
        if isinstance(prob, bool) or not isinstance(prob, int | float) or not 0 <= prob <= 1:
            raise ValueError(f"probability {prob!r} must be a number in [0, 1]")
        if not math.isfinite(float(prob)):
            raise ValueError(f"probability {prob!r} must be finite")
        if self.verdict == "disagree":
            if not _is_int(self.corrected_label) or self.corrected_label < 0:
                raise ValueError(
                    f"a disagreement needs the correct label (a class index), got "
                    f"{self.corrected_label!r}"
                )
            if self.corrected_label == self.predicted:
                raise ValueError(
                    f"corrected label {self.corrected_label} is the model's own prediction: "
                    "choose Agree, or pick the class you think is right"
                )
        elif self.corrected_label is not None:
            raise ValueError(f"only a disagreement carries a corrected label ({self.verdict!r})")
        if not isinstance(self.note, str) or len(self.note) > MAX_NOTE_CHARS:
            size = len(self.note) if isinstance(self.note, str) else type(self.note).__name__
            raise ValueError(
                f"the note must be text of at most {MAX_NOTE_CHARS} characters, got {size}"
            )
        return dataclasses.replace(
            self, reviewer=reviewer, predicted=int(self.predicted), probability=float(prob)
        )

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in COLUMNS}


def case_key(split: str, sample_index: int | None, upload_sha256: str | None = None) -> str:
    """The key of a case: ``"<split>:<index>"`` or ``"sha256:<hex>"``."""
    if upload_sha256 is not None:
        return f"sha256:{upload_sha256}"
    return f"{split}:{int(sample_index)}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# sqlite error names meaning "this file cannot be the review database", by what to tell the user
_NOT_A_DB = ("SQLITE_NOTADB", "SQLITE_CORRUPT")
_READ_ONLY = ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")
_BUSY = ("SQLITE_BUSY", "SQLITE_LOCKED")


def _matches(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + "_") for p in prefixes)


class ReviewStore:
    """The review table in one SQLite file; safe to share between threads and processes.

    Every method opens its own short-lived connection (Streamlit runs each session in its own
    thread, and a connection must not cross threads).
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path).expanduser() if path is not None else config.reviews_db()
        self._initialised = False

    # -- plumbing ----------------------------------------------------------------------------
    def _error(self, exc: sqlite3.Error, doing: str) -> Exception:
        """A :class:`ReviewStoreError` with steps for a file problem; other errors unchanged."""
        name = getattr(exc, "sqlite_errorname", "") or ""
        text = str(exc).lower()
        where = self.path.absolute()
        if _matches(name, _NOT_A_DB) or "not a database" in text or "malformed" in text:
            return ReviewStoreError(
                f"The review database {where} is not a SQLite database or is damaged "
                f"({exc}), so no verdict could be {doing}. The file was left untouched.\n"
                "1. Check that REVIEWS_DB names the review database (default "
                "var/reviews.sqlite), not another file.\n"
                "2. If it is the review database, stop the app, copy the file aside for "
                "recovery (`sqlite3 FILE .recover`), then start again: a new, empty database "
                "is created."
            )
        if _matches(name, _READ_ONLY) or "readonly" in text or "unable to open" in text:
            return ReviewStoreError(
                f"The review database {where} cannot be written ({exc}), so no verdict could be "
                f"{doing}.\n"
                "1. Give the account running the app write permission on the file and its "
                "folder (SQLite also writes `-wal` and `-shm` files beside it).\n"
                "2. Or set REVIEWS_DB to a writable location and restart the app."
            )
        if _matches(name, _BUSY) or "locked" in text:
            return ReviewStoreError(
                f"The review database {where} stayed locked by another program for over "
                f"{BUSY_TIMEOUT_S:.0f} s ({exc}), so no verdict could be {doing}. Nothing was "
                "lost.\n"
                "1. Try again in a moment.\n"
                "2. If it persists, close other programs that have the file open (a `sqlite3` "
                "shell, a backup tool) and try again."
            )
        return exc

    @contextlib.contextmanager
    def _connect(self, doing: str) -> Iterator[sqlite3.Connection]:
        try:
            if not self._initialised:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._error(exc, doing) from exc
        except OSError as exc:  # the folder cannot be created
            raise ReviewStoreError(
                f"The folder of the review database {self.path.absolute()} cannot be created "
                f"({exc}).\n1. Set REVIEWS_DB to a file in a writable folder.\n"
                "2. Restart the app."
            ) from exc
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if not self._initialised:
                # WAL is a property of the file: once per process is enough. This is the first
                # read, so a file that is not SQLite fails here, before anything is written.
                conn.execute("PRAGMA journal_mode = WAL")
                conn.executescript(SCHEMA)
                self._initialised = True
            yield conn
        except sqlite3.Error as exc:
            raise self._error(exc, doing) from exc
        finally:
            conn.close()

    def check(self) -> None:
        """Open (and if new, create) the database once, so a bad file is reported up front.

        Raises:
            ReviewStoreError: not SQLite, damaged, read-only or locked.
        """
        with self._connect("read"):
            pass

    # -- writing -------------------------------------------------------------------------------
    def add(self, verdict: Verdict) -> int:
        """Append a verdict (validated; the store sets ``created_at`` in UTC); return its id.

        Raises:
            ValueError: an invalid field (see :meth:`Verdict.validated`).
            ReviewStoreError: the file cannot be written.
        """
        row = dataclasses.replace(verdict.validated(), created_at=utc_now(), id=None).to_dict()
        row.pop("id")
        names = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._connect("saved") as conn:
            # IMMEDIATE takes the write lock at once; the busy timeout queues a second writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                cur = conn.execute(
                    f"INSERT INTO verdicts ({names}) VALUES ({marks})", list(row.values())
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return int(cur.lastrowid)

    # -- reading -------------------------------------------------------------------------------
    def rows(
        self,
        *,
        run: str | None = None,
        split: str | None = None,
        reviewer: str | None = None,
    ) -> list[Verdict]:
        """Every row (the full audit trail), oldest first, optionally for one run/split/reviewer.

        Raises:
            ReviewStoreError: the file cannot be read.
        """
        where, args = [], []
        for column, value in (("run", run), ("split", split), ("reviewer", reviewer)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT * FROM verdicts" + (" WHERE " + " AND ".join(where) if where else "")
        with self._connect("read") as conn:
            found = conn.execute(sql + " ORDER BY id", args).fetchall()
        return [Verdict(**{name: r[name] for name in COLUMNS}) for r in found]

    def latest(self, *, run: str, split: str | None = None) -> dict[tuple[str, str], Verdict]:
        """The current verdicts on one run's cases: ``{(reviewer, case_key): latest row}``.

        Raises:
            ReviewStoreError: the file cannot be read.
        """
        # in SQL, so a page rerun reads one row per reviewer and case, not the whole trail
        where, args = "run = ?", [run]
        if split is not None:
            where, args = where + " AND split = ?", [run, split]
        sql = (
            "SELECT * FROM verdicts WHERE id IN (SELECT MAX(id) FROM verdicts WHERE "
            f"{where} GROUP BY reviewer, split, sample_index, upload_sha256) ORDER BY id"
        )
        with self._connect("read") as conn:
            found = conn.execute(sql, args).fetchall()
        return current_verdicts([Verdict(**{name: r[name] for name in COLUMNS}) for r in found])


def current_verdicts(rows: list[Verdict]) -> dict[tuple[str, str], Verdict]:
    """``{(reviewer, case_key): the row with the highest id}`` of ``rows`` (one run's rows)."""
    out: dict[tuple[str, str], Verdict] = {}
    for row in sorted(rows, key=lambda r: r.id or 0):
        out[(row.reviewer, row.case_key)] = row
    return out
