"""The training job system (core.jobs): validation, the SQLite store, and a real worker.

The slow tests start real ``python -m core.jobs worker`` processes that train tiny models
(cnn2d, ~32 images) on a synthetic RetinaMNIST file. The worker and its job children are other
processes, so the file's MD5 is made "official" there through a ``sitecustomize`` module on
their PYTHONPATH (an in-process monkeypatch would not reach them).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from core import config, info, jobs
from core.jobs import store as job_store
from core.jobs import worker as job_worker

REPO = Path(__file__).resolve().parents[1]
FLAG = "retinamnist"  # 2D RGB, 5 ordinal classes


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def good_params(**changes):
    params = {
        "dataset": FLAG,
        "model": "cnn2d",
        "size": 28,
        "epochs": 1,
        "learning_rate": 1e-3,
        "batch_size": 16,
        "augment": False,
        "fine_tune_blocks": 0,
        "seed": 0,
    }
    params.update(changes)
    return params


def write_synthetic(root: Path, flag: str = FLAG, n_train: int = 32, n_eval: int = 15) -> str:
    """A tiny npz in MedMNIST's layout; returns its MD5. Every class occurs in val and test."""
    rng = np.random.default_rng(0)
    classes = info.num_classes(flag)
    shape = (28, 28, 3) if info.n_channels(flag) == 3 else (28, 28)
    arrays = {}
    for split, n in (("train", n_train), ("val", n_eval), ("test", n_eval)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % classes).reshape(n, 1).astype(np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    path = root / info.file_name(flag, 28)
    np.savez(path, **arrays)
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def store(tmp_path):
    return jobs.JobStore(tmp_path / "var" / "jobs.sqlite")


@pytest.fixture
def job_env(tmp_path, monkeypatch):
    """Environment for worker processes: tmp registry, tmp queue, synthetic data."""
    data_root = tmp_path / "data"
    md5 = write_synthetic(data_root)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        textwrap.dedent(f"""
        # Test only: accept the synthetic {FLAG} file as the published one.
        from core import info
        info.INFO[{FLAG!r}]["MD5"] = {md5!r}
        """)
    )
    registry = tmp_path / "trained_models"
    registry.mkdir()
    env = dict(os.environ)
    env.update(
        {
            "MEDMNIST_ROOT": str(data_root),
            "TRAINED_MODELS_DIR": str(registry),
            "JOBS_DB": str(tmp_path / "var" / "jobs.sqlite"),
            "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]),
            "CUDA_VISIBLE_DEVICES": "",
            "TF_NUM_INTEROP_THREADS": "1",
        }
    )
    env.pop("JOBS_WORKER_AUTOSTART", None)
    for key in ("MEDMNIST_ROOT", "TRAINED_MODELS_DIR", "JOBS_DB"):
        monkeypatch.setenv(key, env[key])
    return env


class WorkerProcess:
    """A ``python -m core.jobs worker`` subprocess, always cleaned up."""

    def __init__(self, env: dict[str, str], *args: str):
        self.log = Path(env["JOBS_DB"]).with_name(f"worker-{time.monotonic_ns()}.log")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "core.jobs", "worker", "--poll", "0.2", *args],
            cwd=REPO,
            env=env,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._fh.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def workers():
    started: list[WorkerProcess] = []

    def start(env, *args):
        worker = WorkerProcess(env, *args)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def wait_for(predicate, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def tree_snapshot(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file and directory under root (dirs as 'dir')."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def job_children(job_id: int) -> list[int]:
    """Pids of live ``core.jobs run-job <job_id>`` processes (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().split(") ", 1)[1][0]
        except OSError:
            continue
        if b"run-job" in cmd and str(job_id).encode() in cmd and state != "Z":
            pids.append(int(entry.name))
    return pids


def make_existing_run(registry: Path) -> None:
    run = registry / "retinamnist-cnn2d-s0-existing"
    run.mkdir()
    (run / "config.json").write_text('{"dataset": "retinamnist", "model": "cnn2d"}')
    (run / "metrics.json").write_text('{"val": {"auc": 0.7, "acc": 0.5}}')
    (run / "model.keras").write_bytes(os.urandom(2048))


# ---------------------------------------------------------------------------------------------
# parameter validation
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        good_params(),
        good_params(model="resnet", epochs=300, batch_size=1024, learning_rate=1.0),
        good_params(model="vgg16", fine_tune_blocks=5, learning_rate=1e-6, seed=2**31 - 1),
        good_params(dataset="adrenalmnist3d", model="cnn3d", augment=True),
        good_params(dataset="adrenalmnist3d", model="resnet", size=64),
        good_params(size=224, model="vgg16"),
    ],
)
def test_valid_params_pass(params):
    checked = jobs.check_params(params)
    assert checked.ok, checked.errors
    assert checked.config.to_dict()["dataset"] == params["dataset"]
    assert checked.config.epochs == params["epochs"]


BAD_PARAMS = [
    # (changes, field named in the message, value quoted in the message)
    ({"epochs": 0}, "epochs", "0"),
    ({"epochs": 301}, "epochs", "301"),
    ({"epochs": 2.5}, "epochs", "2.5"),
    ({"epochs": True}, "epochs", "True"),
    ({"learning_rate": 0.0}, "learning_rate", "0.0"),
    ({"learning_rate": 1e-7}, "learning_rate", "1e-07"),
    ({"learning_rate": 1.5}, "learning_rate", "1.5"),
    ({"learning_rate": float("nan")}, "learning_rate", "nan"),
    ({"learning_rate": "abc"}, "learning_rate", "'abc'"),
    ({"batch_size": 0}, "batch_size", "0"),
    ({"batch_size": 1025}, "batch_size", "1025"),
    ({"model": "vgg16", "fine_tune_blocks": 6}, "fine_tune_blocks", "6"),
    ({"model": "vgg16", "fine_tune_blocks": -1}, "fine_tune_blocks", "-1"),
    ({"fine_tune_blocks": 2}, "fine_tune_blocks", "2"),  # cnn2d has no VGG blocks
    ({"seed": -1}, "seed", "-1"),
    ({"seed": 2**31}, "seed", str(2**31)),
    ({"dataset": "imagenet"}, "dataset", "'imagenet'"),
    ({"dataset": None}, "dataset", "None"),
    ({"model": "transformer"}, "model", "'transformer'"),
    ({"model": "cnn3d"}, "model", "'cnn3d'"),  # 2D dataset with a 3D model
    ({"dataset": "adrenalmnist3d", "model": "cnn2d"}, "model", "'cnn2d'"),
    ({"dataset": "adrenalmnist3d", "model": "vgg16"}, "model", "'vgg16'"),
    ({"size": 32}, "size", "32"),
    ({"dataset": "adrenalmnist3d", "model": "cnn3d", "size": 128}, "size", "128"),
    ({"augment": "yes"}, "augment", "'yes'"),
    ({"colour": "blue"}, "colour", "'colour'"),
]


@pytest.mark.parametrize(("changes", "field", "value"), BAD_PARAMS)
def test_each_bad_value_is_rejected_with_field_and_value(changes, field, value):
    checked = jobs.check_params(good_params(**changes))
    assert not checked.ok
    assert checked.config is None
    assert any(field in e and value in e for e in checked.errors), checked.errors


def test_all_problems_are_reported_at_once():
    checked = jobs.check_params(good_params(epochs=0, batch_size=0, seed=-5))
    fields = " ".join(checked.errors)
    assert len(checked.errors) == 3
    assert all(name in fields for name in ("epochs", "batch_size", "seed"))


def test_missing_dataset_file_is_a_warning_not_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDMNIST_ROOT", str(tmp_path / "empty"))
    checked = jobs.check_params(good_params())
    assert checked.ok
    assert any("download" in w and "retinamnist.npz" in w for w in checked.warnings)
    write_synthetic(tmp_path / "empty")
    assert jobs.check_params(good_params()).warnings == []


def test_submit_job_validates(store):
    with pytest.raises(jobs.InvalidParamsError) as err:
        jobs.submit_job(good_params(epochs=0), store=store)
    assert "epochs" in str(err.value)
    assert store.list() == []
    job_id = jobs.submit_job(good_params(), submitted_by="ada", store=store)
    job = store.get(job_id)
    # the stored params are the full, normalised TrainConfig
    assert job.params == config.TrainConfig.from_dict(good_params()).to_dict()
    assert job.submitted_by == "ada"


# ---------------------------------------------------------------------------------------------
# the store
# ---------------------------------------------------------------------------------------------


def test_submit_get_list_and_wal(store):
    a = store.submit(good_params(seed=1), submitted_by="ada")
    b = store.submit(good_params(seed=2))
    assert [j.id for j in store.list()] == [b, a]  # newest first
    job = store.get(a)
    assert job.status == "queued" and job.params["seed"] == 1 and job.submitted_by == "ada"
    assert job.started_at is None and job.finished_at is None and job.log == ""
    assert store.get(999) is None
    assert [j.id for j in store.list(statuses=("running",))] == []
    import sqlite3

    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_claim_is_fifo_and_sets_running(store):
    ids = [store.submit(good_params(seed=i)) for i in range(3)]
    first = store.claim_next("host:1")
    assert first.id == ids[0] and first.status == "running" and first.worker == "host:1"
    assert first.started_at is not None
    assert store.claim_next("host:1").id == ids[1]


def test_concurrent_claims_never_share_a_job(store):
    ids = {store.submit(good_params(seed=i)) for i in range(20)}
    claimed: list[int] = []
    lock = threading.Lock()

    def claimer(n: int) -> None:
        while (job := store.claim_next(f"host:{n}")) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(claimed) == sorted(ids)  # each job exactly once


def test_progress_log_and_outcomes(store):
    job_id = store.submit(good_params(epochs=3))
    store.claim_next("host:1")
    for epoch in (1, 2):
        store.update_progress(
            job_id,
            {
                "epoch": epoch,
                "epochs": 3,
                "loss": 1.0 / epoch,
                "val_auc": 0.5 + epoch / 10,
                "val_acc": 0.4,
                "lr": 1e-3,
                "weird": float("nan"),
            },
        )
    rows = store.progress(job_id)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[1]["val_auc"] == pytest.approx(0.7) and rows[1]["lr"] == pytest.approx(1e-3)
    assert rows[1]["weird"] is None  # NaN is stored as missing, not as invalid JSON
    store.append_log(job_id, "line 1\n")
    store.append_log(job_id, "line 2\n")
    assert store.get(job_id).log == "line 1\nline 2\n"
    assert store.finish(job_id, run_dir="/registry/run-a")
    job = store.get(job_id)
    assert job.status == "succeeded" and job.run_name == "run-a" and job.finished_at
    assert not store.finish(job_id, run_dir="/elsewhere")  # only a running job can finish
    assert not store.fail(job_id, "late")
    assert store.get(job_id).status == "succeeded"
    with pytest.raises(ValueError, match="'failed'"):
        store.finish(job_id, status="failed")


def test_log_keeps_only_the_tail(store, monkeypatch):
    monkeypatch.setattr(job_store, "LOG_MAX_CHARS", 50)  # read where the store uses it
    job_id = store.submit(good_params())
    for i in range(30):
        store.append_log(job_id, f"line {i:02d}\n")
    log = store.get(job_id).log
    assert len(log) == 50 and log.endswith("line 29\n") and "line 00" not in log


def test_cancel_queued_and_running(store):
    running = store.submit(good_params(seed=1))
    queued = store.submit(good_params(seed=2))
    assert store.claim_next("host:1").id == running
    assert store.request_cancel(queued) == "cancelled"
    assert store.get(queued).status == "cancelled" and store.get(queued).finished_at
    assert store.request_cancel(queued) is None  # already ended
    assert not store.cancel_requested(running)
    assert store.request_cancel(running) == "running"  # the child stops at its next batch
    assert store.cancel_requested(running) and store.get(running).cancel_requested
    assert store.get(running).status == "running"
    assert store.finish(running, status="cancelled")
    assert store.request_cancel(12345) is None


def test_orphans_are_failed_with_their_log(store):
    job_id = store.submit(good_params())
    store.claim_next("host:1")
    store.append_log(job_id, "epoch 1 ...\n")
    other = store.submit(good_params(seed=3))
    # a live worker's job is left alone
    assert store.requeue_orphans(is_alive=lambda worker: worker == "host:1") == []
    assert store.requeue_orphans() == [job_id]
    job = store.get(job_id)
    assert job.status == "failed" and job.error == jobs.WORKER_DIED_MESSAGE
    assert job.log.startswith("epoch 1 ...") and jobs.WORKER_DIED_MESSAGE in job.log
    assert store.get(other).status == "queued"  # queued jobs survive


def test_requeue_on_graceful_stop(store):
    job_id = store.submit(good_params())
    store.claim_next("host:1")
    store.update_progress(job_id, {"epoch": 1, "epochs": 1, "loss": 1.0})
    assert store.requeue(job_id, "worker stopped")
    job = store.get(job_id)
    assert job.status == "queued" and job.started_at is None and "worker stopped" in job.log
    assert store.progress(job_id) == []


def test_second_worker_exits_while_the_lock_is_held(store):
    fd = job_worker._try_lock(jobs.lock_path(store.path))
    assert fd is not None
    try:
        assert jobs.worker_status(store).alive
        assert jobs.Worker(store).run(once=True) == 3
    finally:
        os.close(fd)
    assert not jobs.worker_status(store).alive
    assert jobs.Worker(store).run(drain=True) == 0  # empty queue: returns at once


def test_child_failure_fails_only_that_job(store, job_env, workers):
    # Bypass check_params (as a corrupted row would): the child must fail the job cleanly.
    bad = store.submit({"dataset": FLAG, "model": "cnn2d", "epochs": -3})
    also_bad = store.submit({"dataset": FLAG})
    worker = workers(job_env, "--drain")
    assert worker.proc.wait(timeout=120) == 0, worker.output()
    job = store.get(bad)
    assert job.status == "failed" and "epochs=-3" in job.error, job.error
    assert "Traceback" in job.log and "ValueError" in job.log  # the child's stderr is kept
    job = store.get(also_bad)
    assert job.status == "failed" and "model" in job.error


def test_ensure_worker_starts_one_detached_worker(store, job_env, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", job_env["PYTHONPATH"])
    monkeypatch.setenv("JOBS_WORKER_AUTOSTART", "0")
    assert jobs.ensure_worker(store) is None
    monkeypatch.delenv("JOBS_WORKER_AUTOSTART")
    pid = jobs.ensure_worker(store)
    try:
        assert pid
        status = wait_for(
            lambda: (s := jobs.worker_status(store)).responsive and s,
            60,
            "the worker's first heartbeat",
        )
        assert status.pid == pid
        assert os.getsid(pid) == pid  # its own session: survives the app's Ctrl-C
        assert jobs.ensure_worker(store) == pid  # no second worker
        assert jobs.worker_log_path(store.path).exists()
    finally:
        if pid:
            os.kill(pid, signal.SIGTERM)
            wait_for(lambda: not jobs.worker_status(store).alive, 30, "the worker to exit")
            with __import__("contextlib").suppress(ChildProcessError):
                os.waitpid(pid, 0)
    assert store.workers() == []  # it deregistered on the way out


# ---------------------------------------------------------------------------------------------
# real worker, real (tiny) training
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_jobs_run_one_after_the_other(store, job_env, workers):
    registry = Path(job_env["TRAINED_MODELS_DIR"])
    first = jobs.submit_job(good_params(seed=1), store=store)
    second = jobs.submit_job(good_params(seed=2), store=store)
    worker = workers(job_env, "--drain")
    assert worker.proc.wait(timeout=400) == 0, worker.output()
    a, b = store.get(first), store.get(second)
    assert (a.status, b.status) == ("succeeded", "succeeded"), (a.error, b.error, a.log[-2000:])
    assert a.started_at < a.finished_at <= b.started_at < b.finished_at  # never overlapped
    for job in (a, b):
        run = Path(job.run_dir)
        assert run.parent == registry and (run / "metrics.json").is_file()
        rows = store.progress(job.id)
        assert [r["epoch"] for r in rows] == [1] and rows[0]["epochs"] == 1
        assert rows[0]["loss"] is not None and 0.0 <= rows[0]["val_auc"] <= 1.0
        assert "[progress] epoch=1" in job.log and "saved run" in job.log
    assert sorted(p.name for p in registry.iterdir()) == sorted([a.run_name, b.run_name])


@pytest.mark.slow
def test_cancel_and_killed_child(store, job_env, workers):
    registry = Path(job_env["TRAINED_MODELS_DIR"])
    long_run = good_params(epochs=300, batch_size=8)
    long_run["patience"] = 300  # early stopping must not end the run before we act
    killed = jobs.submit_job(long_run, store=store)
    cancelled = jobs.submit_job(long_run, store=store)
    queued_then_cancelled = jobs.submit_job(long_run, store=store)
    worker = workers(job_env)

    # kill -9 the job's child: only that job fails, the worker carries on
    wait_for(lambda: store.progress(killed), 180, "the first epoch of job 1")
    children = job_children(killed)
    assert len(children) == 1
    os.kill(children[0], signal.SIGKILL)
    job = wait_for(lambda: (j := store.get(killed)).status != "running" and j, 60, "job 1 to end")
    assert job.status == "failed" and "SIGKILL" in job.error
    assert "[progress] epoch=1" in job.log

    # a queued job is cancelled at once
    assert store.request_cancel(queued_then_cancelled) == "cancelled"

    # a running job stops at its next batch and saves nothing
    wait_for(lambda: store.progress(cancelled), 180, "the first epoch of job 2")
    assert store.request_cancel(cancelled) == "running"
    job = wait_for(
        lambda: (j := store.get(cancelled)).status != "running" and j, 60, "job 2 to stop"
    )
    assert job.status == "cancelled", (job.error, job.log[-2000:])
    assert len(store.progress(cancelled)) < 300
    assert store.get(queued_then_cancelled).status == "cancelled"
    assert worker.proc.poll() is None  # the worker survived both
    assert list(registry.iterdir()) == []  # nothing saved, no scratch left


@pytest.mark.slow
def test_killed_worker_fails_its_job_and_restart_keeps_the_queue(store, job_env, workers):
    registry = Path(job_env["TRAINED_MODELS_DIR"])
    make_existing_run(registry)
    before = tree_snapshot(registry)
    long_run = good_params(epochs=300, batch_size=8)
    long_run["patience"] = 300
    doomed = jobs.submit_job(long_run, store=store)
    waiting = jobs.submit_job(good_params(seed=5), store=store)

    worker = workers(job_env)
    # wait until the worker has copied the first epoch's line into the job log
    wait_for(lambda: "[progress] epoch=1" in store.get(doomed).log, 180, "the first epoch")
    children = job_children(doomed)
    assert len(children) == 1
    worker.proc.send_signal(signal.SIGKILL)
    worker.proc.wait(timeout=10)
    # the job's child dies with its worker (PR_SET_PDEATHSIG) and never reaches the registry
    wait_for(lambda: not job_children(doomed), 30, "the job child to die with the worker")
    assert store.get(doomed).status == "running"  # nobody has noticed yet
    assert store.get(waiting).status == "queued"
    assert tree_snapshot(registry) == before

    # restart: the orphan is failed with its log, the queued job runs
    restarted = workers(job_env, "--drain")
    assert restarted.proc.wait(timeout=300) == 0, restarted.output()
    job = store.get(doomed)
    assert job.status == "failed" and job.error == jobs.WORKER_DIED_MESSAGE
    assert "[progress] epoch=1" in job.log and jobs.WORKER_DIED_MESSAGE in job.log
    after = store.get(waiting)
    assert after.status == "succeeded", (after.error, after.log[-2000:])
    now = tree_snapshot(registry)
    new = {k: v for k, v in now.items() if k not in before}
    assert {k: now[k] for k in before} == before  # the existing run is byte-identical
    assert {Path(k).parts[0] for k in new} == {after.run_name}  # plus exactly the new run


# ---------------------------------------------------------------------------------------------
# a --db file that is not SQLite (issue 17 #9)
# ---------------------------------------------------------------------------------------------


def test_store_on_a_file_that_is_not_sqlite_names_it_and_leaves_it_alone(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"x\n")
    store = jobs.JobStore(bad)
    with pytest.raises(jobs.JobStoreError, match="not a database") as err:
        store.list()
    assert str(bad) in str(err.value) and "1." in str(err.value) and "2." in str(err.value)
    assert isinstance(err.value, RuntimeError)  # core.cli prints it as one line
    import sqlite3

    assert isinstance(err.value, sqlite3.Error)  # the Retrain page's sqlite handler shows it
    assert bad.read_bytes() == b"x\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.db"]


@pytest.mark.parametrize("command", [["list"], ["worker", "--once"], ["cancel", "1"]])
def test_cli_on_a_file_that_is_not_sqlite_prints_one_error_line(tmp_path, command):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"x\n")
    result = subprocess.run(
        [sys.executable, "-m", "core.jobs", *command, "--db", str(bad)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert str(bad) in lines[0] and "not a database" in lines[0] and "1." in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert bad.read_bytes() == b"x\n"  # never modified or deleted
    # no lock or worker log was created next to it: the check runs first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.db"]


def test_cli_cancel_of_an_unknown_job_is_a_user_error(store, capsys):
    from core import cli

    job_id = store.submit(good_params())
    store.request_cancel(job_id)
    assert cli.run(jobs.main, ["cancel", "999", "--db", str(store.path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: job 999 does not exist") and str(store.path) in err
    assert "core.jobs list" in err and len(err.splitlines()) == 1
    # a job that exists but has ended: a plain note, exit 1
    assert jobs.main(["cancel", str(job_id), "--db", str(store.path)]) == 1
    assert "already cancelled" in capsys.readouterr().out
