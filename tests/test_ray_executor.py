"""The Ray executor on a real two-node Ray cluster on this machine (issue #12).

A module fixture starts a head and a second node with one CPU each (``ray.cluster_utils``:
real raylets, object stores and a GCS, as ``ray start`` makes them) and shuts them down at the
end, whatever happened. The tests drive a real ``python -m core.jobs worker --executor ray``
process against it with tiny jobs (BreastMNIST, cnn2d, real data from ``MEDMNIST_ROOT``): they
run on both nodes and come back into a registry the nodes never see, a cancel kills the remote
work, and killing a node fails its job while the others finish.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import require_real_file
from ray.cluster_utils import Cluster  # pinned in requirements.txt: missing = broken setup

from core import jobs, registry

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

TINY = {"dataset": "breastmnist", "model": "cnn2d", "epochs": 1, "batch_size": 64}
# long enough to be cancelled or lose its node mid-run (early stopping cannot end it)
LONG = {**TINY, "epochs": 300, "patience": 300, "min_epochs": 300}


def wait_for(predicate, timeout: float, what: str, poll: float = 0.3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def cluster():
    """A head and one more node, one CPU each, on this machine; always shut down."""
    require_real_file("breastmnist")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    started = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        second = started.add_node(num_cpus=1)
        started.wait_for_nodes()
        yield started, second
    finally:
        started.shutdown()


@pytest.fixture
def job_env(tmp_path):
    """A fresh queue and registry; the real MedMNIST folder."""
    registry_dir = tmp_path / "trained_models"
    registry_dir.mkdir()
    env = dict(os.environ)
    env.update(
        {
            "TRAINED_MODELS_DIR": str(registry_dir),
            "JOBS_DB": str(tmp_path / "var" / "jobs.sqlite"),
            "PYTHONPATH": str(REPO),
            "RAY_USAGE_STATS_ENABLED": "0",
            "CUDA_VISIBLE_DEVICES": "",
        }
    )
    env.pop("RAY_ADDRESS", None)
    return env


class RayWorker:
    """``python -m core.jobs worker --executor ray`` against the test cluster; always stopped."""

    def __init__(self, env: dict[str, str], address: str, max_running: int = 2):
        self.log = Path(env["JOBS_DB"]).with_name("worker.log")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "core.jobs",
                "worker",
                "--executor",
                "ray",
                "--address",
                address,
                "--max-running",
                str(max_running),
                "--poll",
                "0.2",
            ],
            cwd=REPO,
            env=env,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._fh.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _ended(store: jobs.JobStore, ids: list[int]):
    rows = [store.get(i, with_log=False) for i in ids]
    return rows if all(r.status in jobs.TERMINAL_STATUSES for r in rows) else None


def _assert_complete_record(job: jobs.Job) -> None:
    """What the SQLite row of an ended job must hold, whatever its outcome."""
    assert job.status in jobs.TERMINAL_STATUSES
    assert job.started_at and job.finished_at and job.finished_at >= job.started_at
    assert job.worker and job.node, job
    if job.status == "succeeded":
        assert job.run_dir and Path(job.run_dir).is_dir() and not job.error
    if job.status == "failed":
        assert job.error and not job.run_dir


def _task_pid(store: jobs.JobStore, job_id: int) -> int:
    text = store.get(job_id).log
    match = re.search(r"\[ray\] worker 0 on node .*?, pid (\d+)", text)
    assert match, text[-2000:]
    return int(match.group(1))


def _pid_gone(pid: int) -> bool:
    """The process has exited (a zombie not yet reaped by its new parent counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_four_jobs_run_on_both_nodes_and_land_in_the_registry(cluster, job_env):
    started, _ = cluster
    store = jobs.JobStore(job_env["JOBS_DB"])
    ids = [jobs.submit_job({**TINY, "seed": seed}, "researcher", store) for seed in range(4)]
    worker = RayWorker(job_env, started.address, max_running=2)
    try:
        rows = wait_for(lambda: _ended(store, ids), 400, "the four jobs to end", poll=1)
    finally:
        worker.stop()
    assert [r.status for r in rows] == ["succeeded"] * 4, (
        [(r.status, r.error) for r in rows],
        worker.output()[-3000:],
    )
    nodes = {r.node for r in rows}
    assert len(nodes) == 2, nodes  # both nodes trained
    registry_dir = Path(job_env["TRAINED_MODELS_DIR"])
    for row in rows:
        _assert_complete_record(row)
        run_dir = Path(row.run_dir)
        assert run_dir.parent == registry_dir
        run = registry.read_run(run_dir)
        assert run is not None and run.dataset == "breastmnist"
        assert registry.read_json(run_dir, "config.json")["seed"] in range(4)
        assert 0.0 <= registry.read_json(run_dir, "metrics.json")["test"]["auc"] <= 1.0
        progress = store.progress(row.id)
        assert [p["epoch"] for p in progress] == [1]
        log = store.get(row.id).log
        assert "[progress] epoch=1" in log and f"run {run_dir.name} installed" in log
    # nothing half-written was left in the registry
    assert sorted(p.name for p in registry_dir.iterdir()) == sorted(
        Path(r.run_dir).name for r in rows
    )


def test_a_two_worker_job_trains_across_both_nodes_and_the_chief_returns_one_run(cluster, job_env):
    """N Ray tasks in a placement group meet in a rendezvous actor, set TF_CONFIG and train
    one model with MultiWorkerMirroredStrategy; only worker 0's run comes back."""
    started, _ = cluster
    store = jobs.JobStore(job_env["JOBS_DB"])
    job_id = jobs.submit_job(TINY, "researcher", store, resources={"workers": 2})
    worker = RayWorker(job_env, started.address, max_running=1)
    try:
        (row,) = wait_for(lambda: _ended(store, [job_id]), 300, "the two-worker job", poll=1)
    finally:
        worker.stop()
    log = store.get(job_id).log
    assert row.status == "succeeded", (row.error, log[-3000:], worker.output()[-2000:])
    _assert_complete_record(row)
    assert len(row.node.split(", ")) == 2, row.node  # one label per worker
    assert "TF_CONFIG cluster" in log and "worker 1 finished" in log
    cfg = registry.read_json(row.run_dir, "config.json")
    assert cfg["strategy"] == "MultiWorkerMirroredStrategy"
    assert [p.name for p in Path(job_env["TRAINED_MODELS_DIR"]).iterdir()] == [row.run_name]


def test_cancel_ends_the_remote_work_and_node_loss_fails_only_its_job(cluster, job_env):
    """Two long jobs (one per node), two tiny ones queued behind them. Killing the second node
    fails the job on it; cancelling the other kills its process; the tiny ones then finish on
    the head. Runs last in this module: the cluster has one node afterwards."""
    started, second = cluster
    store = jobs.JobStore(job_env["JOBS_DB"])
    long_ids = [jobs.submit_job({**LONG, "seed": s}, "researcher", store) for s in (10, 11)]
    tiny_ids = [jobs.submit_job({**TINY, "seed": s}, "researcher", store) for s in (12, 13)]
    worker = RayWorker(job_env, started.address, max_running=2)
    try:
        # both long jobs train (an epoch recorded), one on each node
        wait_for(lambda: all(store.progress(i) for i in long_ids), 240, "both long jobs to train")
        by_node = {store.get(i, with_log=False).node: i for i in long_ids}
        assert len(by_node) == 2, by_node
        on_second = next(i for node, i in by_node.items() if second.node_id[:8] in node)
        on_head = next(i for i in long_ids if i != on_second)
        lost_pid = _task_pid(store, on_second)

        started.remove_node(second, allow_graceful=False)
        lost = wait_for(
            lambda: (j := store.get(on_second, with_log=False)).status == "failed" and j,
            120,
            "the job on the killed node to fail",
        )
        assert "was lost" in lost.error and second.node_id[:8] in lost.error, lost.error
        wait_for(lambda: _pid_gone(lost_pid), 30, "the lost node's task process to exit")

        head_pid = _task_pid(store, on_head)
        assert store.request_cancel(on_head) == "running"
        wait_for(
            lambda: store.get(on_head, with_log=False).status == "cancelled",
            60,
            "the cancelled job to end",
        )
        wait_for(lambda: _pid_gone(head_pid), 30, "the cancelled task's process to exit")

        rows = wait_for(lambda: _ended(store, long_ids + tiny_ids), 300, "the tiny jobs")
    finally:
        worker.stop()
    status = {r.id: r.status for r in rows}
    assert status == {
        on_second: "failed",
        on_head: "cancelled",
        tiny_ids[0]: "succeeded",
        tiny_ids[1]: "succeeded",
    }, ([(r.id, r.status, r.error) for r in rows], worker.output()[-3000:])
    for row in rows:
        _assert_complete_record(row)
    assert not store.get(on_head, with_log=False).run_dir  # a cancelled job saves nothing
    runs = sorted(p.name for p in Path(job_env["TRAINED_MODELS_DIR"]).iterdir())
    assert runs == sorted(Path(store.get(i).run_dir).name for i in tiny_ids)
    assert worker.proc.returncode == 0, worker.output()[-3000:]
