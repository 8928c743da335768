"""What the Ray executor adds to the job store, without a cluster (issue #12): the ``node`` and
``resources`` columns and their migration, resource checks, the executor choice, and the
archive that brings a run back from a node into the registry atomically."""

from __future__ import annotations

import io
import sqlite3
import tarfile

import pytest

from core import registry
from core.jobs import InvalidParamsError, JobStore, check_resources, make_executor, submit_job
from core.jobs.executors import LocalExecutor, archive


def test_an_old_database_gains_the_new_columns_and_keeps_its_jobs(tmp_path):
    path = tmp_path / "jobs.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, status TEXT NOT NULL,
          params TEXT NOT NULL, submitted_by TEXT, submitted_at REAL NOT NULL, started_at REAL,
          finished_at REAL, worker TEXT, run_dir TEXT, error TEXT,
          cancel_requested INTEGER NOT NULL DEFAULT 0, log TEXT NOT NULL DEFAULT '');
        CREATE TABLE workers (id TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL,
          started_at REAL NOT NULL, heartbeat_at REAL NOT NULL, job_id INTEGER);
        INSERT INTO jobs (status, params, submitted_at) VALUES ('succeeded', '{"dataset": "x"}', 1);
        """
    )
    conn.close()
    store = JobStore(path)
    (old,) = store.list()
    assert old.node is None and old.resources is None
    assert old.resource_request == {"cpus": 1, "gpus": 0, "workers": 1}
    new_id = store.submit({"dataset": "y"}, "me", {"cpus": 2, "gpus": 0, "workers": 2})
    store.set_node(new_id, "10.0.0.7 (0123abcd)")
    new = store.get(new_id)
    assert new.node == "10.0.0.7 (0123abcd)" and new.resource_request["workers"] == 2
    store.heartbeat("h:1", 1, "h", executor={"kind": "ray", "address": "a:1"})
    store.heartbeat("h:1", 1, "h")  # later beats without a description keep the last one
    assert '"address": "a:1"' in store.workers()[0]["executor"]


@pytest.mark.parametrize(
    "given, error",
    [
        ({"cpus": 0}, "cpus"),
        ({"gpus": -1}, "gpus"),
        ({"workers": 1.5}, "workers"),
        ({"workers": True}, "workers"),
        ({"tpus": 1}, "unknown"),
    ],
)
def test_bad_resource_requests_are_refused(given, error):
    wanted, errors = check_resources(given)
    assert wanted is None and len(errors) == 1 and error in errors[0]


def test_default_resources_store_nothing_and_submit_checks_them(tmp_path):
    assert check_resources({"cpus": 1, "workers": 1}) == (None, [])
    assert check_resources({"gpus": 1}) == ({"cpus": 1, "gpus": 1, "workers": 1}, [])
    store = JobStore(tmp_path / "jobs.sqlite")
    params = {"dataset": "breastmnist", "model": "cnn2d", "epochs": 1}
    with pytest.raises(InvalidParamsError, match="workers must be"):
        submit_job(params, store=store, resources={"workers": 0})
    job_id = submit_job(params, store=store, resources={"workers": 3})
    assert store.get(job_id).resources == {"cpus": 1, "gpus": 0, "workers": 3}


def test_the_executor_follows_ray_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert isinstance(make_executor(), LocalExecutor)
    with pytest.raises(ValueError, match="needs the Ray executor"):
        make_executor("local", max_running=2)
    with pytest.raises(ValueError, match="needs a cluster address"):
        make_executor("ray")
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    executor = make_executor()  # not connected until the worker starts it
    assert executor.kind == "ray" and executor.address == "10.0.0.1:6379"


def _fake_run(folder):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"dataset": "breastmnist"}')
    (folder / "model.keras").write_bytes(b"\0" * 1000)
    return folder


def test_a_packed_run_is_installed_whole_and_never_overwrites(tmp_path):
    packed = archive.pack_run(_fake_run(tmp_path / "node" / "run-a"))
    root = tmp_path / "registry"
    installed = archive.install_run(packed, "run-a", root)
    assert installed == root / "run-a"
    assert (installed / "model.keras").read_bytes() == b"\0" * 1000
    with pytest.raises(registry.RegistryError, match="already exists"):
        archive.install_run(packed, "run-a", root)
    assert sorted(p.name for p in root.iterdir()) == ["run-a"]  # no scratch left behind


def test_an_archive_escaping_the_registry_is_refused_and_leaves_nothing(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("../evil.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    root = tmp_path / "registry"
    with pytest.raises(tarfile.TarError):
        archive.install_run(buffer.getvalue(), "run-b", root)
    assert not (tmp_path / "evil.txt").exists()
    assert list(root.iterdir()) == []
    with pytest.raises(registry.RegistryError, match="no config.json"):
        archive.install_run(archive.pack_run(tmp_path), "run-c", root)
