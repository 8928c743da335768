"""core.reviews.store: append-only rows, latest verdict, concurrent writers, bad files."""

from __future__ import annotations

import dataclasses
import multiprocessing
import sqlite3
import threading
from pathlib import Path

import pytest

from core import config
from core.reviews import store as store_mod
from core.reviews.store import ReviewStore, ReviewStoreError, Verdict, current_verdicts

BASE = Verdict(
    reviewer="Dr A",
    run="retina_cnn",
    dataset="retinamnist",
    split="test",
    sample_index=3,
    predicted=2,
    probability=0.61,
    verdict="agree",
)


def test_reviews_db_setting(monkeypatch, tmp_path):
    monkeypatch.delenv("REVIEWS_DB", raising=False)
    assert config.reviews_db() == config.REPO_ROOT / "var" / "reviews.sqlite"
    monkeypatch.setenv("REVIEWS_DB", str(tmp_path / "r.sqlite"))
    assert config.reviews_db() == tmp_path / "r.sqlite"
    assert ReviewStore().path == tmp_path / "r.sqlite"


def test_every_verdict_is_a_new_row_and_the_latest_is_current(tmp_path):
    store = ReviewStore(tmp_path / "r.sqlite")
    first = store.add(BASE)
    second = store.add(dataclasses.replace(BASE, verdict="disagree", corrected_label=1, note="x"))
    other = store.add(dataclasses.replace(BASE, reviewer="Dr B", verdict="unsure"))
    assert first < second < other
    rows = store.rows()
    assert [r.id for r in rows] == [first, second, other]
    assert all(r.created_at and r.created_at.endswith("Z") for r in rows)
    current = store.latest(run="retina_cnn", split="test")
    assert set(current) == {("Dr A", "test:3"), ("Dr B", "test:3")}
    assert current[("Dr A", "test:3")].id == second
    assert current[("Dr A", "test:3")].corrected_label == 1
    assert store.latest(run="another_run") == {}
    assert [r.id for r in store.rows(reviewer="Dr B")] == [other]


def test_the_database_refuses_updates_and_deletes(tmp_path):
    path = tmp_path / "r.sqlite"
    store = ReviewStore(path)
    store.add(BASE)
    conn = sqlite3.connect(path)
    for sql in ("UPDATE verdicts SET verdict = 'unsure'", "DELETE FROM verdicts"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(sql)
    conn.close()
    assert [r.verdict for r in store.rows()] == ["agree"]


def test_rows_survive_a_new_store_object(tmp_path):
    ReviewStore(tmp_path / "r.sqlite").add(BASE)
    assert len(ReviewStore(tmp_path / "r.sqlite").rows()) == 1  # as after an app restart


INVALID = [
    ({"verdict": "maybe"}, "verdict"),
    ({"verdict": "disagree"}, "correct label"),
    ({"verdict": "disagree", "corrected_label": 2}, "model's own prediction"),
    ({"verdict": "agree", "corrected_label": 1}, "only a disagreement"),
    ({"note": "n" * 2001}, "2000 characters"),
    ({"reviewer": "  "}, "reviewer"),
    ({"reviewer": "a\nb"}, "reviewer"),
    ({"sample_index": None}, "exactly one"),
    ({"upload_sha256": "ab" * 32}, "exactly one"),
    ({"sample_index": -1}, "sample_index"),
    ({"probability": 1.5}, "probability"),
    ({"probability": float("nan")}, "probability"),
    ({"split": ""}, "split"),
]


@pytest.mark.parametrize(("change", "message"), INVALID)
def test_invalid_verdicts_are_refused_before_writing(tmp_path, change, message):
    store = ReviewStore(tmp_path / "r.sqlite")
    with pytest.raises(ValueError, match=message):
        store.add(dataclasses.replace(BASE, **change))
    assert store.rows() == []


def test_an_upload_is_keyed_by_its_sha256(tmp_path):
    store = ReviewStore(tmp_path / "r.sqlite")
    digest = "0f" * 32
    store.add(dataclasses.replace(BASE, sample_index=None, upload_sha256=digest, split="upload"))
    assert list(store.latest(run="retina_cnn")) == [("Dr A", f"sha256:{digest}")]


def test_note_of_2000_characters_is_kept_exactly(tmp_path):
    store = ReviewStore(tmp_path / "r.sqlite")
    note = "<b>=1+1</b> *not markdown* " * 74 + "x" * 2
    note = note[:2000]
    store.add(dataclasses.replace(BASE, note=note))
    assert store.rows()[0].note == note


def _write_many(path: str, reviewer: str, count: int) -> None:
    store = ReviewStore(path)
    for i in range(count):
        store.add(dataclasses.replace(BASE, reviewer=reviewer, sample_index=i))


def test_threads_writing_at_once_lose_nothing(tmp_path):
    path = str(tmp_path / "r.sqlite")
    ReviewStore(path).check()
    threads = [
        threading.Thread(target=_write_many, args=(path, f"thread {t}", 40)) for t in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = ReviewStore(path).rows()
    assert len(rows) == 6 * 40
    assert len({r.id for r in rows}) == len(rows)
    assert len(current_verdicts(rows)) == 6 * 40
    # a second verdict on some cases: the SQL "latest" equals the one computed from all rows
    _write_many(path, "thread 0", 10)
    rows = ReviewStore(path).rows()
    assert ReviewStore(path).latest(run="retina_cnn") == current_verdicts(rows)
    assert len(current_verdicts(rows)) == 6 * 40


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    path = str(tmp_path / "r.sqlite")
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters, like two app servers
    procs = [ctx.Process(target=_write_many, args=(path, f"process {p}", 150)) for p in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    rows = ReviewStore(path).rows()
    assert sorted((r.reviewer, r.sample_index) for r in rows) == sorted(
        (f"process {p}", i) for p in range(2) for i in range(150)
    )
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_file_that_is_not_sqlite_is_reported_and_left_untouched(tmp_path):
    path = tmp_path / "r.sqlite"
    content = b"not a database at all; " * 200
    path.write_bytes(content)
    store = ReviewStore(path)
    for call in (store.check, store.rows, lambda: store.add(BASE)):
        with pytest.raises(ReviewStoreError, match=r"not a SQLite database[\s\S]*1\.[\s\S]*2\."):
            call()
    assert path.read_bytes() == content


def test_a_read_only_database_still_reads_and_refuses_writes_with_steps(tmp_path, monkeypatch):
    path = tmp_path / "r.sqlite"
    ReviewStore(path).add(BASE)
    real_connect = sqlite3.connect

    def read_only(database, *args, **kwargs):
        # as root, chmod does not stop writes: open the file read-only through SQLite instead
        return real_connect(f"file:{database}?mode=ro", *args, uri=True, **kwargs)

    monkeypatch.setattr(store_mod.sqlite3, "connect", read_only)
    store = ReviewStore(path)
    assert len(store.rows()) == 1
    with pytest.raises(ReviewStoreError, match=r"cannot be written[\s\S]*1\. Give"):
        store.add(BASE)
    monkeypatch.undo()
    assert len(ReviewStore(path).rows()) == 1


def test_a_locked_database_is_reported_and_nothing_is_lost(tmp_path, monkeypatch):
    path = tmp_path / "r.sqlite"
    ReviewStore(path).add(BASE)
    monkeypatch.setattr(store_mod, "BUSY_TIMEOUT_S", 0.2)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(ReviewStoreError, match=r"locked[\s\S]*1\. Try again"):
            ReviewStore(path).add(dataclasses.replace(BASE, verdict="unsure"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    store = ReviewStore(path)
    store.add(dataclasses.replace(BASE, verdict="unsure"))
    assert [r.verdict for r in store.rows()] == ["agree", "unsure"]


def test_an_unwritable_folder_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ReviewStoreError, match="REVIEWS_DB"):
        ReviewStore(blocker / "sub" / "r.sqlite").check()
    assert not Path(blocker / "sub").exists()
