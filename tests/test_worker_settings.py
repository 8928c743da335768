"""A worker keeps the settings it was started with; the app notices and restarts it (issue 17 #2).

Unit tests of the comparison and of the store's stop flag, then real ``python -m core.jobs
worker`` processes: an idle stale worker is replaced by ``ensure_worker``; a busy one finishes
its job and hands the queue to a replacement with the app's settings.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import time
from pathlib import Path

import pytest
from test_jobs import good_params, job_env, wait_for  # noqa: F401 - job_env: a fixture

from core import jobs
from core.jobs import control as worker_control
from core.jobs import settings as worker_settings
from core.jobs import worker as job_worker

NAMES = list(worker_settings.NAMES)


# ---------------------------------------------------------------------------------------------
# the comparison
# ---------------------------------------------------------------------------------------------


def test_current_resolves_paths_and_never_raises(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEDMNIST_ROOT", "data")  # relative: resolved against the cwd
    monkeypatch.setenv("TRAINED_MODELS_DIR", str(tmp_path / "a" / ".." / "reg"))
    monkeypatch.delenv("VGG16_WEIGHTS", raising=False)
    now = worker_settings.current(tmp_path / "q.sqlite")
    assert list(now) == NAMES
    assert now["MEDMNIST_ROOT"] == str(tmp_path.resolve() / "data")
    assert now["TRAINED_MODELS_DIR"] == str(tmp_path.resolve() / "reg")
    assert now["VGG16_WEIGHTS"] == "imagenet"
    assert now["JOBS_DB"] == str(tmp_path.resolve() / "q.sqlite")
    monkeypatch.setenv("VGG16_WEIGHTS", str(tmp_path / "missing.h5"))  # config would raise
    assert worker_settings.current(tmp_path / "q.sqlite")["VGG16_WEIGHTS"].endswith("missing.h5")


def test_differences_name_each_setting_with_both_values():
    app = {name: f"/app/{name}" for name in NAMES}
    assert worker_settings.differences(dict(app), app) == []
    worker = {**app, "MEDMNIST_ROOT": "/old/data"}
    (diff,) = worker_settings.differences(worker, app)
    assert (diff.name, diff.worker) == ("MEDMNIST_ROOT", "/old/data")
    assert diff.app == "/app/MEDMNIST_ROOT"
    text = diff.describe()
    assert "MEDMNIST_ROOT" in text and "/old/data" in text and "/app/MEDMNIST_ROOT" in text
    # a worker from before settings were recorded differs in everything, and says so
    unknown = worker_settings.differences(None, app)
    assert [d.name for d in unknown] == NAMES
    assert "older version" in unknown[0].describe()


# ---------------------------------------------------------------------------------------------
# the store: recorded settings, the stop flag, older databases
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    return jobs.JobStore(tmp_path / "var" / "jobs.sqlite")


def test_settings_are_recorded_once_and_kept_by_heartbeats(store):
    store.heartbeat("h:1", 1, "h", settings={"MEDMNIST_ROOT": "/a"})
    store.heartbeat("h:1", 1, "h", job_id=None)  # the heartbeat thread passes no settings
    (row,) = store.workers()
    assert row["settings"] == '{"MEDMNIST_ROOT": "/a"}' and row["stop_requested"] == 0


def test_stop_request_is_atomic_with_claiming(store):
    store.heartbeat("h:1", 1, "h")
    store.heartbeat("h:2", 2, "h")
    assert store.request_worker_stop("nobody") is None
    job = store.submit(good_params())
    assert store.request_worker_stop("h:1") == "idle"
    assert store.worker_stop_requested("h:1") and not store.worker_stop_requested("h:2")
    assert store.claim_next("h:1") is None  # asked to stop: it takes no job
    assert store.get(job).status == "queued"
    assert store.claim_next("h:2").id == job
    assert store.request_worker_stop("h:2") == "busy"  # it finishes the job first


def test_an_older_database_gains_the_new_columns(tmp_path):
    path = tmp_path / "old.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript(
            "CREATE TABLE workers (id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT "
            "NULL, started_at REAL NOT NULL, heartbeat_at REAL NOT NULL, job_id INTEGER);"
            "INSERT INTO workers VALUES ('h:9', 'h', 9, 0, 0, NULL);"
        )
        conn.commit()
    store = jobs.JobStore(path)
    (row,) = store.workers()
    assert row["settings"] is None and row["stop_requested"] == 0
    assert store.request_worker_stop("h:9") == "idle"
    # a second store (another process) opening it again does not trip over the columns
    assert jobs.JobStore(path).workers()[0]["stop_requested"] == 1


def test_a_stale_worker_is_detected_from_its_recorded_settings(store, monkeypatch, tmp_path):
    fd = job_worker._try_lock(jobs.lock_path(store.path))  # this test plays the worker
    try:
        monkeypatch.setenv("MEDMNIST_ROOT", str(tmp_path / "old"))
        recorded = worker_settings.current(store.path)
        store.heartbeat("w:1", 1, socket.gethostname(), settings=recorded)
        assert not worker_control.check(store).stale
        monkeypatch.setenv("MEDMNIST_ROOT", str(tmp_path / "new"))  # the app restarted
        found = worker_control.check(store)
        assert found.stale
        assert [(d.name, d.worker, d.app) for d in found.differences] == [
            ("MEDMNIST_ROOT", str(tmp_path / "old"), str(tmp_path / "new"))
        ]
        # autostart off: the app never stops a worker it does not manage
        monkeypatch.setenv("JOBS_WORKER_AUTOSTART", "0")
        assert worker_control.restart_if_stale_and_idle(store) is None
        assert worker_control.restart_worker(store).kind == "off"
        assert not store.worker_stop_requested("w:1")
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# real workers
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def app_env(job_env, monkeypatch):  # noqa: F811 - the fixture imported above
    """This process plays the app: workers it starts inherit its environment."""
    monkeypatch.setenv("PYTHONPATH", job_env["PYTHONPATH"])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv("JOBS_WORKER_AUTOSTART", raising=False)
    started: list[int] = []
    yield job_env, started
    for proc, _ in list(job_worker._SPAWNED.values()):
        started.append(proc.pid)
    for pid in set(started):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in set(started):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
    job_worker._SPAWNED.clear()


def _current(store, pid=None):
    def ready():
        status = jobs.worker_status(store)
        return status if status.responsive and (pid is None or status.pid == pid) else None

    return ready


def _exited(pid):
    def gone():
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == 0:
                return False
        return True

    return gone


def _copy_data(env, to: Path) -> Path:
    shutil.copytree(env["MEDMNIST_ROOT"], to)
    return to


@pytest.mark.slow
def test_idle_stale_worker_is_restarted_with_the_apps_settings(app_env, monkeypatch, tmp_path):
    env, started = app_env
    store = jobs.JobStore(env["JOBS_DB"])
    old_pid = jobs.ensure_worker(store)
    started.append(old_pid)
    status = wait_for(_current(store, old_pid), 60, "the first worker")
    assert status.settings["MEDMNIST_ROOT"] == str(Path(env["MEDMNIST_ROOT"]).resolve())
    assert jobs.ensure_worker(store) == old_pid  # current: left alone

    # the app restarts with a new MEDMNIST_ROOT (Ctrl-C, export, make run)
    new_root = _copy_data(env, tmp_path / "new-data")
    monkeypatch.setenv("MEDMNIST_ROOT", str(new_root))
    new_pid = jobs.ensure_worker(store)
    started.append(new_pid)
    assert new_pid not in (None, old_pid)
    wait_for(_exited(old_pid), 30, "the stale worker to exit")
    status = wait_for(_current(store, new_pid), 60, "the new worker")
    assert status.settings["MEDMNIST_ROOT"] == str(new_root.resolve())
    assert worker_control.check(store).differences == []
    assert "restart requested" in jobs.worker_log_path(store.path).read_text()


@pytest.mark.slow
def test_busy_stale_worker_finishes_its_job_then_hands_over(app_env, monkeypatch, tmp_path):
    env, started = app_env
    store = jobs.JobStore(env["JOBS_DB"])
    long_run = good_params(epochs=300, batch_size=8)
    long_run["patience"] = 300
    running = jobs.submit_job(long_run, store=store)
    old_pid = jobs.ensure_worker(store)
    started.append(old_pid)
    wait_for(lambda: store.progress(running), 180, "the first epoch")

    new_root = _copy_data(env, tmp_path / "new-data")
    monkeypatch.setenv("MEDMNIST_ROOT", str(new_root))
    queued = jobs.submit_job(good_params(seed=7), store=store)
    assert jobs.ensure_worker(store) == old_pid  # busy: never interrupted automatically
    found = worker_control.check(store)
    assert found.stale and found.status.job_id == running and not found.status.stop_requested
    assert [d.name for d in found.differences] == ["MEDMNIST_ROOT"]

    outcome = worker_control.restart_worker(store)
    assert outcome.kind == "after_job" and outcome.job_id == running
    started.append(outcome.pid)
    assert jobs.worker_status(store).stop_requested
    # a second click does not queue a second replacement: one of the two gives up
    again = worker_control.restart_worker(store)
    started.append(again.pid)
    pair = (outcome.pid, again.pid)
    gone = wait_for(
        lambda: [pid for pid in pair if _exited(pid)()], 60, "a duplicate replacement to give up"
    )
    time.sleep(2)
    assert len(gone) == 1 and len([pid for pid in pair if _exited(pid)()]) == 1
    (replacement,) = set(pair) - set(gone)
    assert store.get(running).status == "running"  # the job was not touched

    assert store.request_cancel(running) == "running"  # the user ends the job sooner
    wait_for(_exited(old_pid), 90, "the old worker to exit after its job")
    assert store.get(running).status == "cancelled"
    status = wait_for(_current(store, replacement), 60, "the replacement to take over")
    assert status.settings["MEDMNIST_ROOT"] == str(new_root.resolve())
    # the queued job went to the replacement, not to the stale worker
    job = wait_for(lambda: (j := store.get(queued)).worker and j, 60, "the queued job's claim")
    assert job.worker.endswith(f":{replacement}")


# ---------------------------------------------------------------------------------------------
# the Retrain page
# ---------------------------------------------------------------------------------------------

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "retrain.py")


@pytest.fixture
def busy_stale_worker(tmp_path, monkeypatch):
    """A 'worker' (this test holds its lock) started with an old MEDMNIST_ROOT, training job 1.

    Returns the store and the list of ``spawn_worker`` calls (faked: no real process).
    """
    from streamlit import config as st_config

    db = tmp_path / "var" / "jobs.sqlite"
    monkeypatch.setenv("JOBS_DB", str(db))
    monkeypatch.setenv("TRAINED_MODELS_DIR", str(tmp_path / "trained_models"))
    monkeypatch.delenv("JOBS_WORKER_AUTOSTART", raising=False)
    store = jobs.JobStore(db)
    monkeypatch.setenv("MEDMNIST_ROOT", str(tmp_path / "old-data"))
    old = worker_settings.current(db)
    monkeypatch.setenv("MEDMNIST_ROOT", str(tmp_path / "new-data"))  # the app was restarted
    fd = job_worker._try_lock(jobs.lock_path(db))
    store.heartbeat("h:4242", 4242, socket.gethostname(), settings=old)
    job = store.submit(good_params())
    store.claim_next("h:4242")
    store.heartbeat("h:4242", 4242, socket.gethostname(), job_id=job)
    calls = []

    class FakeProc:
        pid = 777

    def fake_spawn(store, wait_lock=False):
        calls.append(wait_lock)
        return FakeProc()

    monkeypatch.setattr(job_worker, "spawn_worker", fake_spawn)  # where control calls it
    previous = st_config.get_option("server.address")
    st_config.set_option("server.address", "127.0.0.1")  # local mode: a researcher
    yield store, calls, tmp_path
    st_config.set_option("server.address", previous)
    os.close(fd)


def _texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def test_page_lists_differing_settings_and_restarts_after_the_job(busy_stale_worker):
    from streamlit.testing.v1 import AppTest

    store, calls, tmp_path = busy_stale_worker
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    warning = _texts(at.warning)
    assert "runs with other settings than this app" in warning
    assert "MEDMNIST_ROOT" in warning and "TRAINED_MODELS_DIR" not in warning
    assert str(tmp_path / "old-data") in warning and str(tmp_path / "new-data") in warning
    assert "job #1" in warning and "cancel the job" in warning
    assert not store.worker_stop_requested("h:4242")  # busy: nothing happens by itself

    at.button(key="retrain_restart_worker").click().run()
    assert not at.exception
    assert store.worker_stop_requested("h:4242")
    assert calls == [True]  # the replacement waits for the lock: the job is not interrupted
    assert store.get(1).status == "running"
    at.run()  # the page as it polls: the request is pending until the job ends
    assert "Worker restart requested" in _texts(at.info)
    assert not [b for b in at.button if b.key == "retrain_restart_worker"]


def test_page_without_autostart_says_how_to_restart_by_hand(busy_stale_worker, monkeypatch):
    from streamlit.testing.v1 import AppTest

    store, calls, _ = busy_stale_worker
    monkeypatch.setenv("JOBS_WORKER_AUTOSTART", "0")
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    warning = _texts(at.warning)
    assert "MEDMNIST_ROOT" in warning and "JOBS_WORKER_AUTOSTART=0" in warning
    assert "python -m core.jobs worker" in warning
    assert not [b for b in at.button if b.key == "retrain_restart_worker"]
    assert calls == [] and not store.worker_stop_requested("h:4242")
