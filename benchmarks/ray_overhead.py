"""``python -m benchmarks.ray_overhead``: what the Ray executor costs per job, and what a
second node buys (issue #12).

Two measurements with the same tiny job (BreastMNIST, cnn2d, 1 epoch, real data from
``MEDMNIST_ROOT``), each through a real ``python -m core.jobs worker`` process and the SQLite
job store, as the app submits them:

1. **Per-job overhead**: ``--jobs`` jobs one after another with the local executor (a child
   process each) and with the Ray executor on a one-node local cluster (a Ray task each, run
   returned as tar bytes). The job time is ``finished_at - started_at`` of the job row (claim to
   run installed); the worker's one-off connection to the cluster is not part of it. Added per
   job = median(Ray) - median(local). Goal: at most 3 s.
   The Ray job asks for every core of the one-node cluster, so TensorFlow gets the same
   threads as the local child.
2. **Scale-out**: 4 jobs submitted at once to a Ray worker (``--max-running 4``) on a local
   cluster of one node, then of two nodes, one CPU each (each job 1 CPU: TensorFlow then uses
   one thread pool of that size). Wall = last ``finished_at`` - first ``started_at``.

The clusters are ``ray.cluster_utils.Cluster`` (real raylets and GCS on this machine), always
shut down. Prints a table; ``--json FILE`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core import config, jobs

TINY = {"dataset": "breastmnist", "model": "cnn2d", "epochs": 1, "batch_size": 64}


def _run_worker(
    tmp: Path, n_jobs: int, worker_args: list[str], resources: dict[str, int] | None = None
) -> list[jobs.Job]:
    """Queue ``n_jobs`` tiny jobs in a fresh store, drain them with one worker, return rows."""
    db = tmp / f"jobs-{time.monotonic_ns()}.sqlite"
    registry_dir = tmp / f"registry-{time.monotonic_ns()}"
    registry_dir.mkdir()
    store = jobs.JobStore(db)
    ids = [
        jobs.submit_job({**TINY, "seed": s}, "benchmark", store, resources=resources)
        for s in range(n_jobs)
    ]
    env = {
        **os.environ,
        "JOBS_DB": str(db),
        "TRAINED_MODELS_DIR": str(registry_dir),
        "PYTHONPATH": str(config.REPO_ROOT),
        "RAY_USAGE_STATS_ENABLED": "0",
        "CUDA_VISIBLE_DEVICES": "",
    }
    env.pop("RAY_ADDRESS", None)
    log = tmp / f"worker-{time.monotonic_ns()}.log"
    with log.open("wb") as fh:
        proc = subprocess.run(
            [sys.executable, "-m", "core.jobs", "worker", "--drain", "--poll", "0.2", *worker_args],
            cwd=config.REPO_ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=1800,
            check=False,
        )
    rows = [store.get(i, with_log=False) for i in ids]
    bad = [(r.id, r.status, r.error) for r in rows if r.status != "succeeded"]
    if proc.returncode != 0 or bad:
        raise RuntimeError(
            f"benchmark jobs did not all succeed: {bad}; worker exit {proc.returncode}; see {log}"
        )
    return rows


def _cluster(nodes: int, cpus: int = 1):
    from ray.cluster_utils import Cluster

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus})
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=cpus)
    cluster.wait_for_nodes()
    return cluster


def measure(n_jobs: int) -> dict[str, float]:
    """Run both measurements; return the numbers of the table."""
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="ray-overhead-") as scratch:
        tmp = Path(scratch)
        local = _run_worker(tmp, n_jobs, [])
        local_s = [r.finished_at - r.started_at for r in local]
        # the whole machine for one job, as the local child gets it (TensorFlow's threads)
        cores = os.cpu_count() or 1
        cluster = _cluster(1, cpus=cores)
        try:
            remote = _run_worker(
                tmp,
                n_jobs,
                ["--executor", "ray", "--address", cluster.address, "--max-running", "1"],
                resources={"cpus": cores} if cores > 1 else None,
            )
        finally:
            cluster.shutdown()
        ray_s = [r.finished_at - r.started_at for r in remote]
        out["local_median_s"] = statistics.median(local_s)
        out["ray_median_s"] = statistics.median(ray_s)
        out["local_first_s"], out["ray_first_s"] = local_s[0], ray_s[0]
        out["added_per_job_s"] = out["ray_median_s"] - out["local_median_s"]
        for nodes in (1, 2):
            cluster = _cluster(nodes)
            try:
                args = ["--executor", "ray", "--address", cluster.address, "--max-running", "4"]
                rows = _run_worker(tmp, 4, args)
            finally:
                cluster.shutdown()
            wall = max(r.finished_at for r in rows) - min(r.started_at for r in rows)
            out[f"four_jobs_{nodes}_node_wall_s"] = wall
            out[f"four_jobs_{nodes}_node_nodes_used"] = len({r.node for r in rows})
    return out


def table(result: dict[str, float], n_jobs: int) -> str:
    """The printed table (Markdown)."""
    rows = [
        "| measurement | value |",
        "|---|---|",
        f"| local executor, tiny job, median of {n_jobs} (claim → run saved) "
        f"| {result['local_median_s']:.1f} s |",
        f"| Ray executor (1-node local cluster, all cores), same job, median of {n_jobs} "
        f"| {result['ray_median_s']:.1f} s |",
        f"| **added by Ray per job** (goal ≤ 3 s) | **{result['added_per_job_s']:+.1f} s** |",
        f"| first job: local / Ray (Ray: code upload to the node) "
        f"| {result['local_first_s']:.1f} s / {result['ray_first_s']:.1f} s |",
        f"| 4 tiny jobs, 1 node × 1 CPU, wall | {result['four_jobs_1_node_wall_s']:.1f} s |",
        f"| 4 tiny jobs, 2 nodes × 1 CPU, wall "
        f"({result['four_jobs_2_node_nodes_used']:.0f} nodes used) "
        f"| {result['four_jobs_2_node_wall_s']:.1f} s |",
        f"| speed-up of the second node "
        f"| {result['four_jobs_1_node_wall_s'] / result['four_jobs_2_node_wall_s']:.2f}× |",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Measure and print the table.

    Returns:
        0 (a job that fails raises, naming the worker's log).
    """
    p = argparse.ArgumentParser(prog="python -m benchmarks.ray_overhead", description=__doc__)
    p.add_argument("--jobs", type=int, default=3, help="sequential jobs per executor")
    p.add_argument("--json", help="also write the numbers to this file")
    args = p.parse_args(argv)
    load = os.getloadavg()
    result = measure(args.jobs)
    result["load_before"] = load[0]
    print(table(result, args.jobs))
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
