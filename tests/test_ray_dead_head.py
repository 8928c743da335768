"""The Ray executor when the head of the cluster dies (issue #12).

Its own one-node cluster (killing the head ends it): a long job trains on the head, the head
is killed. The job must fail with the reason, and a job submitted afterwards must stay in the
SQLite queue (not be claimed into a dead cluster and lost) while the worker waits for the
cluster to come back.
"""

from __future__ import annotations

import os
import time

import pytest
from conftest import require_real_file
from ray.cluster_utils import Cluster  # pinned in requirements.txt: missing = broken setup
from test_ray_executor import LONG, REPO, TINY, RayWorker, wait_for

from core import jobs

pytestmark = pytest.mark.slow


def test_a_dead_head_fails_the_running_job_and_keeps_the_queue(tmp_path):
    require_real_file("breastmnist")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    registry_dir = tmp_path / "trained_models"
    registry_dir.mkdir()
    env = {
        **os.environ,
        "TRAINED_MODELS_DIR": str(registry_dir),
        "JOBS_DB": str(tmp_path / "var" / "jobs.sqlite"),
        "PYTHONPATH": str(REPO),
        "CUDA_VISIBLE_DEVICES": "",
    }
    env.pop("RAY_ADDRESS", None)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    worker = None
    try:
        cluster.wait_for_nodes()
        store = jobs.JobStore(env["JOBS_DB"])
        long_id = jobs.submit_job(LONG, "researcher", store)
        worker = RayWorker(env, cluster.address, max_running=1)
        wait_for(lambda: store.progress(long_id), 240, "the long job to train")

        cluster.remove_node(cluster.head_node, allow_graceful=False)
        lost = wait_for(
            lambda: (j := store.get(long_id, with_log=False)).status == "failed" and j,
            120,
            "the job on the dead head to fail",
        )
        assert "was lost" in lost.error and lost.finished_at, lost.error

        later = jobs.submit_job(TINY, "researcher", store)
        time.sleep(20)  # the worker polls every 0.2 s: it would have claimed it by now
        assert store.get(later, with_log=False).status == "queued"
        assert "unreachable" in worker.output()
    finally:
        if worker is not None:
            worker.stop()
        cluster.shutdown()
