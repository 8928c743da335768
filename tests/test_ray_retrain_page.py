"""The Retrain page when the worker runs jobs on a Ray cluster (issue #12), as an AppTest.

No cluster is needed: the page never talks to Ray. It reads what the worker recorded in its
row of the job database (address, nodes, free CPUs/GPUs), so this test plays that worker: it
holds the worker lock and writes the row, as ``python -m core.jobs worker --executor ray`` does.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from streamlit import config as st_config
from streamlit.testing.v1 import AppTest

from core import jobs
from core.jobs import settings as worker_settings
from core.jobs import worker as job_worker

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "retrain.py")
CLUSTER = {
    "kind": "ray",
    "address": "10.1.2.3:6379",
    "max_running": 4,
    "nodes": 2,
    "cpus": 4.0,
    "gpus": 0.0,
    "free_cpus": 3.0,
    "free_gpus": 0.0,
    "max_node_cpus": 2.0,
}


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("JOBS_DB", str(tmp_path / "var" / "jobs.sqlite"))
    monkeypatch.setenv("TRAINED_MODELS_DIR", str(tmp_path / "trained_models"))
    monkeypatch.setenv("MEDMNIST_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("JOBS_WORKER_AUTOSTART", "0")
    old = st_config.get_option("server.address")
    st_config.set_option("server.address", "127.0.0.1")  # local-only: retraining allowed
    yield jobs.JobStore(tmp_path / "var" / "jobs.sqlite")
    st_config.set_option("server.address", old)


@pytest.fixture
def worker_row(store):
    """Play a live worker: hold its lock and record a row; yields a function that sets the
    executor description it reports."""
    fd = job_worker._try_lock(jobs.lock_path(store.path))
    settings = worker_settings.current(store.path)

    def record(executor):
        store.heartbeat(
            "w:1", os.getpid(), socket.gethostname(), settings=settings, executor=executor
        )

    try:
        yield record
    finally:
        os.close(fd)


def run_page() -> AppTest:
    return AppTest.from_file(PAGE, default_timeout=60).run()


def captions(at: AppTest) -> str:
    return "\n".join(str(c.value) for c in at.caption)


def test_a_ray_worker_shows_the_cluster_and_offers_cpus_and_workers_but_no_gpus(store, worker_row):
    worker_row(CLUSTER)
    at = run_page()
    assert not at.exception
    text = captions(at)
    assert "Ray cluster at `10.1.2.3:6379`" in text and "3 of 4 CPUs free" in text, text
    assert "no GPUs" in text and "dashboard" not in text.lower()
    assert at.number_input(key="retrain_cpus").max == 2  # the largest node
    assert at.number_input(key="retrain_workers").max == 4
    assert not [n for n in at.number_input if n.key == "retrain_gpus"]

    at.selectbox(key="retrain_dataset").set_value("breastmnist")
    at.selectbox(key="retrain_model").set_value("cnn2d")
    at.number_input(key="retrain_epochs").set_value(1)
    at.number_input(key="retrain_workers").set_value(2)
    at.button(key="retrain_submit").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (job,) = store.list()
    assert job.resources == {"cpus": 1, "gpus": 0, "workers": 2}
    assert job.params["dataset"] == "breastmnist" and "resources" not in job.params


def test_gpus_are_offered_when_the_cluster_has_some(store, worker_row):
    worker_row({**CLUSTER, "gpus": 2.0, "free_gpus": 1.0})
    at = run_page()
    assert not at.exception
    assert "1 of 2 GPUs free" in captions(at)
    assert at.number_input(key="retrain_gpus").max == 2


def test_a_local_worker_offers_no_resources_and_the_table_shows_the_node(store, worker_row):
    worker_row({"kind": "local", "max_running": 1, "host": socket.gethostname()})
    job_id = store.submit({"dataset": "breastmnist", "model": "cnn2d", "epochs": 1})
    store.claim_next("w:1")
    store.set_node(job_id, "10.1.2.4 (abcdef12)")
    at = run_page()
    assert not at.exception
    assert "Jobs run on this machine, one at a time" in captions(at)
    assert not [n for n in at.number_input if n.key in ("retrain_cpus", "retrain_workers")]
    table = at.dataframe[0].value
    assert list(table["node"]) == ["10.1.2.4 (abcdef12)"]
