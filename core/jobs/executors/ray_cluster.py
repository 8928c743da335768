"""The Ray executor: each claimed job runs as Ray work on a cluster, several at once.

The worker stays the only writer of the SQLite job table. For each job it starts
``ray_task.train_job`` as a Ray task with the job's CPUs and GPUs (a multi-worker job: N tasks
in a placement group that set ``TF_CONFIG`` themselves), then, every half second, moves the
task's log lines and epochs from the :class:`~ray_task.JobChannel` into the store and looks at
the job's cancel flag.

- **cancel**: ``ray.cancel(force=True)`` kills the task's process on its node; the job ends
  ``cancelled``.
- **node loss**: Ray reports the task's death (``NodeDiedError``, ``WorkerCrashedError``, …);
  tasks are never retried (``max_retries=0``: a half-trained job is not silently restarted),
  so the job fails with the node and the reason, and the worker goes on with the others.
- **result**: the chief returns the run as tar bytes; ``archive.install_run`` writes it into
  this machine's registry atomically. No filesystem is shared with the nodes.
- **code and data**: the repository reaches the nodes as the runtime environment's
  ``working_dir`` (without models, data, virtualenvs or test output); ``MEDMNIST_ROOT`` and
  friends are passed as environment variables (``RAY_NODE_MEDMNIST_ROOT`` overrides the data
  folder on the nodes), and ``core.data`` downloads a missing file there, MD5-checked.

The app never talks to Ray: the worker writes the cluster's address and free resources into its
row of the job database (:meth:`RayExecutor.describe`), which the Retrain page reads.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import ray
from ray.exceptions import RayError, RayTaskError, TaskCancelledError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)

from core import config
from core.jobs.executors import archive
from core.jobs.executors.base import Executor, JobContext
from core.jobs.executors.ray_task import JobChannel, Rendezvous, train_job
from core.jobs.schema import Job

log = logging.getLogger("core.jobs.worker")

NAMESPACE = "medmnist-jobs"
POLL_S = 0.5
PING_TIMEOUT_S = 10.0
RECONNECT_EVERY_S = 10.0
PLACEMENT_TIMEOUT_S = 600.0
# what never goes to the nodes (gitignore syntax): models, data, environments, test output
EXCLUDES = [
    ".git/",
    ".venv/",
    "trained_models/",
    "var/",
    "test-artifacts/",
    "benchmarks/results/",
    "__pycache__/",
    ".pytest_cache/",
    ".ruff_cache/",
    "*.npz",
    "*.h5",
    "*.sqlite*",
]
# settings that change what a job does on a node (see core.jobs.settings)
NODE_ENV = ("MEDMNIST_ROOT", "REQUIRE_REAL_DATA", "VGG16_WEIGHTS")


def runtime_env() -> dict[str, Any]:
    """The code and settings every task of this worker gets on its node.

    Returns:
        ``{"working_dir": <repository>, "excludes": [...], "env_vars": {...}}``.
    """
    env = {name: os.environ[name] for name in NODE_ENV if os.environ.get(name)}
    if os.environ.get("RAY_NODE_MEDMNIST_ROOT"):
        env["MEDMNIST_ROOT"] = os.environ["RAY_NODE_MEDMNIST_ROOT"]
    env["PYTHONUNBUFFERED"] = "1"
    return {"working_dir": str(config.REPO_ROOT), "excludes": EXCLUDES, "env_vars": env}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


class RayExecutor(Executor):
    """Runs each job as Ray task(s) on the cluster at ``address``."""

    kind = "ray"

    def __init__(self, address: str, max_running: int | None = None):
        self.address = address
        self._max_running = max_running
        self.max_running = max_running or 1
        self.channel: Any = None
        self.node_id: str | None = None
        # max_calls=1: a fresh process per job, so TensorFlow state never leaks into the next
        self._task = ray.remote(max_calls=1)(train_job)
        self._last_connect = 0.0

    # -- connection --------------------------------------------------------------------------
    def start(self) -> None:
        """Connect to the cluster and place the job channel on this worker's node.

        Raises:
            RuntimeError: the cluster cannot be reached (numbered steps in the message).
        """
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        try:
            ray.init(
                address=self.address,
                namespace=NAMESPACE,
                runtime_env=runtime_env(),
                log_to_driver=False,  # the tasks' output comes through the channel instead
                logging_level=logging.WARNING,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RuntimeError(
                f"cannot connect to the Ray cluster at {self.address} ({_first_line(exc)}). "
                "1. Check that the head runs (`ray status --address ADDRESS` on the head). "
                "2. Check the address: HOST:PORT of the head's GCS, default port 6379. "
                "3. Unset RAY_ADDRESS / drop --executor ray to train on this machine."
            ) from exc
        self.node_id = ray.get_runtime_context().get_node_id()
        # on this worker's own node: losing another node never loses the live output
        self.channel = JobChannel.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(self.node_id, soft=False)
        ).remote()
        ray.get(self.channel.ping.remote(), timeout=120)
        if self._max_running is None:
            self.max_running = max(1, int(ray.cluster_resources().get("CPU", 1)))
        log.info("[ray] connected to %s; running up to %d jobs", self.address, self.max_running)

    def ready(self, busy: bool) -> bool:
        """Ping the job channel; after a dead head, disconnect and reconnect when it is back.

        Ray ends a driver whose head stays unreachable for about a minute; disconnecting first
        keeps the worker alive, its queued jobs waiting in SQLite until the cluster returns.
        """
        if self.channel is not None:
            try:
                ray.get(self.channel.ping.remote(), timeout=PING_TIMEOUT_S)
                return True
            except RayError as exc:
                log.warning("[ray] the cluster at %s is unreachable: %s", self.address, exc)
                if busy:  # their tasks report the loss first; disconnect once they ended
                    return False
                self.close()
        if time.monotonic() - self._last_connect < RECONNECT_EVERY_S:
            return False
        self._last_connect = time.monotonic()
        try:
            self.start()
        except RuntimeError as exc:
            log.warning("[ray] still no cluster; jobs wait in the queue: %s", exc)
            self.close()
            return False
        return True

    def close(self) -> None:
        self.channel = None
        if ray.is_initialized():
            ray.shutdown()

    def describe(self) -> dict[str, Any]:
        """The cluster's address, live nodes and total/free CPUs and GPUs.

        Raises:
            RuntimeError: not connected (the worker records the error for the page).
        """
        if self.channel is None or not ray.is_initialized():
            raise RuntimeError(f"not connected to {self.address}; retrying every 10 s")
        total = ray.cluster_resources()
        free = ray.available_resources()
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        return {
            "kind": self.kind,
            "address": self.address,
            "max_running": self.max_running,
            "nodes": len(nodes),
            "cpus": total.get("CPU", 0.0),
            "gpus": total.get("GPU", 0.0),
            "free_cpus": free.get("CPU", 0.0),
            "free_gpus": free.get("GPU", 0.0),
            "max_node_cpus": max((n["Resources"].get("CPU", 0.0) for n in nodes), default=0.0),
        }

    # -- one job -----------------------------------------------------------------------------
    def _unplaceable(self, wanted: dict[str, int]) -> str | None:
        """Why the cluster can never run this request (Ray would wait for ever), or None."""
        total = ray.cluster_resources()
        need_cpus = wanted["cpus"] * wanted["workers"]
        need_gpus = wanted["gpus"] * wanted["workers"]
        if need_cpus > total.get("CPU", 0) or need_gpus > total.get("GPU", 0):
            return (
                f"the job asks for {need_cpus} CPU(s) and {need_gpus} GPU(s) in all, but the "
                f"cluster at {self.address} has {total.get('CPU', 0):g} CPU(s) and "
                f"{total.get('GPU', 0):g} GPU(s). 1. Resubmit with fewer CPUs, GPUs or workers, "
                "or 2. add nodes to the cluster (docs/scale-out.md)"
            )
        return None

    def _launch(self, job: Job, wanted: dict[str, int]) -> tuple[list[Any], Any, Any]:
        """Start the job's task(s). Returns ``(refs, placement group, rendezvous actor)``."""
        options: dict[str, Any] = {
            "num_cpus": wanted["cpus"],
            "num_gpus": wanted["gpus"],
            "max_retries": 0,
        }
        task = self._task
        if wanted["workers"] == 1:
            return [task.options(**options).remote(job.id, job.params, self.channel)], None, None
        bundle = {"CPU": wanted["cpus"], **({"GPU": wanted["gpus"]} if wanted["gpus"] else {})}
        group = placement_group([bundle] * wanted["workers"], strategy="SPREAD")
        ready, _ = ray.wait([group.ready()], timeout=PLACEMENT_TIMEOUT_S)
        if not ready:
            remove_placement_group(group)
            raise RuntimeError(
                f"the cluster did not free {wanted['workers']} worker slots within "
                f"{PLACEMENT_TIMEOUT_S:.0f} s"
            )
        meeting = Rendezvous.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(self.node_id, soft=False)
        ).remote(wanted["workers"])
        refs = [
            task.options(
                **options,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    group, placement_group_bundle_index=index
                ),
            ).remote(job.id, job.params, self.channel, index, meeting)
            for index in range(wanted["workers"])
        ]
        return refs, group, meeting

    def _pump(self, job: Job, ctx: JobContext, nodes: dict[int, str]) -> None:
        """Move the channel's messages for ``job`` into the store."""
        try:
            messages = ray.get(self.channel.drain.remote(job.id), timeout=30)
        except RayError as exc:
            log.warning("[ray] job %d: could not read its channel: %s", job.id, exc)
            return
        text = []
        for kind, payload in messages:
            if kind == "log":
                text.append(payload)
            elif kind == "progress":
                ctx.store.update_progress(job.id, payload)
            elif kind == "node":
                nodes[int(payload["index"])] = payload["node"]
                ctx.store.set_node(job.id, ", ".join(nodes[i] for i in sorted(nodes)))
        ctx.store.append_log(job.id, "".join(text))

    def run_job(self, job: Job, ctx: JobContext) -> None:
        """Run one claimed job on the cluster until it succeeds, fails, is cancelled or the
        worker stops (then it goes back in the queue)."""
        store = ctx.store
        wanted = job.resource_request
        reason = self._unplaceable(wanted)
        if reason:
            store.append_log(job.id, f"[ray] {reason}\n")
            store.fail(job.id, reason)
            return
        store.append_log(
            job.id,
            f"[ray] submitting to {self.address}: {wanted['workers']} worker(s) x "
            f"{wanted['cpus']} CPU, {wanted['gpus']} GPU\n",
        )
        started = time.monotonic()
        refs, group, meeting = self._launch(job, wanted)
        nodes: dict[int, str] = {}
        ended: str | None = None  # "cancel" or "stop" when we killed the tasks
        try:
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
                self._pump(job, ctx, nodes)
                failed = any(_outcome(ref)[0] != "ok" for ref in done)
                if ended is None and store.cancel_requested(job.id):
                    ended = "cancel"
                elif ended is None and ctx.stop.is_set():
                    ended = "stop"
                if pending and (ended or failed):
                    for ref in pending:  # one worker gone: the others would wait for ever
                        ray.cancel(ref, force=True)
                    ray.wait(pending, num_returns=len(pending), timeout=30)
                    pending = []
            self._pump(job, ctx, nodes)
        finally:
            if group is not None:
                remove_placement_group(group)
            if meeting is not None:
                ray.kill(meeting)
        self._finish(job, ctx, refs, nodes, ended, time.monotonic() - started)

    def _finish(
        self,
        job: Job,
        ctx: JobContext,
        refs: list[Any],
        nodes: dict[int, str],
        ended: str | None,
        seconds: float,
    ) -> None:
        store = ctx.store
        if ended == "cancel":
            store.append_log(job.id, "[ray] cancelled: the remote work was stopped\n")
            store.finish(job.id, status="cancelled")
            return
        if ended == "stop":
            store.requeue(job.id, "worker stopped; the Ray task was stopped, job put back")
            return
        outcomes = [_outcome(ref) for ref in refs]
        for index, (kind, detail) in enumerate(outcomes):
            if kind == "lost":
                where = nodes.get(index, "unknown node")
                message = f"the Ray node running the job ({where}) was lost: {detail}"
                store.append_log(job.id, f"[ray] {message}\n")
                store.fail(job.id, message)
                return
        for kind, detail in outcomes:
            if kind == "failed":
                store.fail(job.id, detail)
                return
        chief = ray.get(refs[0])
        try:
            run_dir = archive.install_run(chief["archive"], chief["name"])
        except Exception as exc:  # noqa: BLE001 - the run came back but cannot be stored
            message = f"could not install the returned run: {_first_line(exc)}"
            store.append_log(job.id, f"[ray] {message}\n")
            store.fail(job.id, message)
            return
        store.append_log(job.id, f"[ray] run {run_dir.name} installed ({seconds:.1f} s)\n")
        store.finish(job.id, run_dir=run_dir)


def _outcome(ref: Any) -> tuple[str, str]:
    """``("ok" | "failed" | "cancelled" | "lost", detail)`` of a finished task."""
    try:
        result = ray.get(ref, timeout=30)
    except TaskCancelledError:
        return "cancelled", "cancelled"
    except RayTaskError as exc:  # an error outside train_job's own handling (e.g. an import)
        return "failed", _first_line(exc.cause if exc.cause is not None else exc)
    except RayError as exc:  # the process or node died, or the object was lost with it
        return "lost", _first_line(exc)
    if not result.get("ok"):
        return "failed", str(result.get("error") or "training failed on the node")
    return "ok", ""
