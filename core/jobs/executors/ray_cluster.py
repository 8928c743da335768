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
- **dead head**: Ray ends a driver process (``std::_Exit``) once a request to the head's GCS
  has stayed unanswered for ``gcs_rpc_server_reconnect_timeout_s`` (60 s). So the worker never
  lets a driver outlive its head: a :class:`HeadWatch` thread probes the GCS port with plain
  TCP connects; 5 s of refusals mark the head down, the running jobs fail at their next poll,
  the worker disconnects (``ray.shutdown``, 10-15 s after the head died in the test) and only
  calls ``ray.init`` again once the port accepts connections. No job is claimed unless the GCS
  port accepts a fresh connection, and after a job was lost not before the watch has seen the
  head answer for 5 s after the loss: a killed head's job channel actor still answers pings
  for up to a second, while its task is already reported lost. Every cluster query of its own
  has a timeout (the public state API, ``ray.nodes()`` and ``ray.cluster_resources()``, waits
  for ever on a dead GCS, which arms that 60 s exit).
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

import contextlib
import logging
import os
import signal
import threading
import time
from typing import Any

import ray
from ray.core.generated import gcs_pb2
from ray.exceptions import RayError, RayTaskError, TaskCancelledError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)

from core import config
from core.jobs.executors import archive
from core.jobs.executors.base import Executor, JobContext
from core.jobs.executors.ray_head import (
    HEAD_DOWN_AFTER_S,
    HeadLost,
    HeadWatch,
    gcs_reachable,
    split_address,
)
from core.jobs.executors.ray_task import JobChannel, Rendezvous, train_job
from core.jobs.schema import Job

log = logging.getLogger("core.jobs.worker")

NAMESPACE = "medmnist-jobs"
POLL_S = 0.5
PING_TIMEOUT_S = 10.0
RECONNECT_EVERY_S = 10.0
PLACEMENT_TIMEOUT_S = 600.0
DRAIN_TIMEOUT_S = 30.0
CANCEL_WAIT_S = 30.0
GCS_TIMEOUT_S = 5.0  # every cluster query of ours gives up after this, never waits for ever
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


def _gcs_client() -> Any:
    """The connected driver's GCS client, whose calls take a timeout.

    The public state API (``ray.nodes()``, ``ray.cluster_resources()``) goes through Ray's
    GlobalStateAccessor, which "retries indefinitely" on a dead GCS; such a pending request
    makes Ray end the whole process 60 s later, so the worker never uses it.
    """
    return ray._private.worker.global_worker.gcs_client  # noqa: SLF001 - see above


def _alive_nodes() -> list[Any]:
    """The cluster's live nodes (``GcsNodeInfo`` messages), or raise within GCS_TIMEOUT_S."""
    infos = _gcs_client().get_all_node_info(timeout=GCS_TIMEOUT_S)
    return [n for n in infos.values() if n.state == gcs_pb2.GcsNodeInfo.ALIVE]


def _sum(maps: list[Any]) -> dict[str, float]:
    total: dict[str, float] = {}
    for resources in maps:
        for name, value in resources.items():
            total[name] = total.get(name, 0.0) + value
    return total


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
        self._target = split_address(address)  # the GCS to probe (known after connecting)
        self._watch: HeadWatch | None = None
        self._lock = threading.Lock()  # describe() (heartbeat thread) vs close() (main thread)
        self._waiting_logged = self._probe_logged = False  # log each outage once
        self._refused_logged = False
        # monotonic time a job of this connection was lost with its node (the head, maybe)
        self._lost_at: float | None = None

    @property
    def head_down(self) -> bool:
        return self._watch is not None and self._watch.down.is_set()

    # -- connection --------------------------------------------------------------------------
    def start(self) -> None:
        """Connect to the cluster, watch its head and place the job channel on this worker's
        node.

        Raises:
            RuntimeError: the cluster cannot be reached (numbered steps in the message).
        """
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        steps = (
            "1. Check that the head runs (`ray status --address ADDRESS` on the head). "
            "2. Check the address: HOST:PORT of the head's GCS, default port 6379. "
            "3. Unset RAY_ADDRESS / drop --executor ray to train on this machine."
        )
        if self._target is not None and not gcs_reachable(self._target):
            raise RuntimeError(
                f"cannot connect to the Ray cluster at {self.address} (nothing accepts "
                f"connections on {self._target[0]}:{self._target[1]}). {steps}"
            )
        main = threading.current_thread() is threading.main_thread()
        handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            ray.init(
                address=self.address,
                namespace=NAMESPACE,
                runtime_env=runtime_env(),
                log_to_driver=False,  # the tasks' output comes through the channel instead
                logging_level=logging.WARNING,
            )
            # a fresh remote function per connection: nothing cached from a previous cluster
            self._task = ray.remote(max_calls=1)(train_job)
            self._target = split_address(ray.get_runtime_context().gcs_address) or self._target
            if self._target is not None:
                self._watch = HeadWatch(self._target)
            self.node_id = ray.get_runtime_context().get_node_id()
            # on this worker's own node: losing another node never loses the live output
            channel = JobChannel.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(self.node_id, soft=False)
            ).remote()
            ping = channel.ping.remote()
            if self._wait([ping], 120, self._watch):  # polled: the head may die meanwhile
                raise TimeoutError("the job channel did not start within 120 s")
            ray.get(ping)
            if self._max_running is None:
                cpus = _sum([dict(n.resources_total) for n in _alive_nodes()]).get("CPU", 1)
                self.max_running = max(1, int(cpus))
        except (ConnectionError, RuntimeError, TimeoutError, ValueError, RayError, HeadLost) as exc:
            self.close()  # no half-connected driver may outlive the head (see the docstring)
            raise RuntimeError(
                f"cannot connect to the Ray cluster at {self.address} ({_first_line(exc)}). {steps}"
            ) from exc
        finally:
            if main:  # ray.init installs its own SIGTERM handler: the worker's must stay
                for sig, handler in handlers.items():
                    signal.signal(sig, handler)
        self.channel = channel
        self._waiting_logged = self._probe_logged = self._refused_logged = False
        self._lost_at = None  # this head was just reached: an earlier loss says nothing of it
        log.info("[ray] connected to %s; running up to %d jobs", self.address, self.max_running)

    def ready(self, busy: bool) -> bool:
        """Whether a job may be claimed: connected, head alive and the job channel answering.

        "Head alive" is checked against the head itself (:meth:`_head_answers`), never only
        through the channel actor, which can outlive a killed head by a second.

        After a dead head: disconnect as soon as the running jobs have ended (they fail at
        their next poll), then reconnect only once the GCS port accepts connections again,
        checked every 10 s. Queued jobs wait in SQLite meanwhile.
        """
        if self.channel is not None:
            if self.head_down:
                if not self._waiting_logged:
                    log.warning(
                        "[ray] the cluster at %s is unreachable (its head is down); jobs wait "
                        "in the queue",
                        self.address,
                    )
                    self._waiting_logged = True
                if busy:  # the running jobs see the head down and end within seconds
                    return False
                self.close()
            else:
                if not self._head_answers():
                    return False  # the watch says within seconds whether the head is gone
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
        if self._target is not None and not gcs_reachable(self._target):
            if not self._probe_logged:
                log.warning(
                    "[ray] still no cluster at %s; probing its GCS port every %.0f s, jobs "
                    "wait in the queue",
                    self.address,
                    RECONNECT_EVERY_S,
                )
                self._probe_logged = True
            return False
        try:
            self.start()
        except RuntimeError as exc:
            log.warning("[ray] still no cluster; jobs wait in the queue: %s", exc)
            return False
        return True

    def _head_answers(self) -> bool:
        """Whether the head itself answers now, as far as a claim needs it.

        The channel actor's ping cannot tell: actor calls go straight to the actor's process,
        never through the head, and a killed head's worker processes (the channel actor among
        them) live on for up to a second until they notice their raylet is gone, while the
        job's task is reported lost within half a second. Hence a fresh TCP connection to the
        GCS port, and after a lost job (its node died; the head may have died with it, its GCS
        in the same second) a connection the head watch made at least HEAD_DOWN_AFTER_S after
        the loss: a head that died with the node is called down by then.
        """
        if self._target is not None and not gcs_reachable(self._target):
            if not self._refused_logged:
                log.warning(
                    "[ray] the head's GCS at %s:%d refused a connection; no job is claimed "
                    "until it answers again",
                    *self._target,
                )
                self._refused_logged = True
            return False
        self._refused_logged = False
        lost_at = self._lost_at
        if lost_at is None:
            return True
        watch = self._watch
        if watch is not None and not watch.answered_since(lost_at + HEAD_DOWN_AFTER_S):
            return False
        self._lost_at = None
        return True

    def close(self) -> None:
        """Disconnect (``ray.shutdown``) and stop watching the head; safe to call twice."""
        with self._lock:
            self.channel = None
            if self._watch is not None:
                self._watch.stop()
                self._watch = None
            ray.shutdown()  # also after a failed ray.init: it may have left a core worker

    def describe(self) -> dict[str, Any]:
        """The cluster's address, live nodes and total/free CPUs and GPUs.

        Raises:
            RuntimeError: not connected, or the head is down (the worker records the error
                for the page); a GCS query that times out after GCS_TIMEOUT_S.
        """
        with self._lock:
            if self.channel is None or self.head_down:
                raise RuntimeError(
                    f"not connected to {self.address}; retrying every {RECONNECT_EVERY_S:.0f} s"
                )
            nodes = _alive_nodes()
            alive = {n.node_id for n in nodes}
            usage = _gcs_client().get_all_resource_usage(timeout=GCS_TIMEOUT_S)
        total = _sum([dict(n.resources_total) for n in nodes])
        free = _sum(
            [
                dict(d.resources_available)
                for d in usage.resource_usage_data.batch
                if d.node_id in alive
            ]
        )
        return {
            "kind": self.kind,
            "address": self.address,
            "max_running": self.max_running,
            "nodes": len(nodes),
            "cpus": total.get("CPU", 0.0),
            "gpus": total.get("GPU", 0.0),
            "free_cpus": free.get("CPU", 0.0),
            "free_gpus": free.get("GPU", 0.0),
            "max_node_cpus": max((n.resources_total.get("CPU", 0.0) for n in nodes), default=0.0),
        }

    # -- one job -----------------------------------------------------------------------------
    def _unplaceable(self, wanted: dict[str, int]) -> str | None:
        """Why the cluster can never run this request (Ray would wait for ever), or None."""
        total = _sum([dict(n.resources_total) for n in _alive_nodes()])
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

    def _wait(self, refs: list[Any], timeout: float, watch: HeadWatch | None) -> list[Any]:
        """``ray.wait`` for all ``refs`` in short steps; returns those still pending.

        Raises:
            HeadLost: the head went down meanwhile (no Ray call may then block for long).
        """
        deadline = time.monotonic() + timeout
        pending = list(refs)
        while pending and time.monotonic() < deadline:
            if watch is not None and watch.down.is_set():
                raise HeadLost
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
        return pending

    def _launch(
        self, job: Job, wanted: dict[str, int], watch: HeadWatch | None
    ) -> tuple[list[Any], Any, Any]:
        """Start the job's task(s). Returns ``(refs, placement group, rendezvous actor)``.

        Raises:
            HeadLost: the head went down while waiting for the placement group.
        """
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
        if self._wait([group.ready()], PLACEMENT_TIMEOUT_S, watch):
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

    def _pump(
        self, job: Job, ctx: JobContext, nodes: dict[int, str], watch: HeadWatch | None
    ) -> None:
        """Move the channel's messages for ``job`` into the store.

        Raises:
            HeadLost: the head went down (a call to a channel on a dead node would block for
                the whole timeout, waiting for a death notice the dead GCS never sends).
        """
        ref = self.channel.drain.remote(job.id)
        try:
            if self._wait([ref], DRAIN_TIMEOUT_S, watch):
                log.warning("[ray] job %d: its channel did not answer in time", job.id)
                return
            messages = ray.get(ref, timeout=POLL_S)
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
        worker stops (then it goes back in the queue); fail it at once when the head dies."""
        store = ctx.store
        watch = self._watch  # this connection's watch (a reconnect makes a new one)
        wanted = job.resource_request
        try:
            reason = self._unplaceable(wanted)
        except (RayError, TimeoutError) as exc:  # the head went away since ready()
            store.requeue(job.id, f"the Ray cluster did not answer ({_first_line(exc)})")
            return
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
        nodes: dict[int, str] = {}
        ended: str | None = None  # "cancel" or "stop" when we killed the tasks
        group = meeting = None
        try:
            refs, group, meeting = self._launch(job, wanted, watch)
            pending = list(refs)
            while pending:
                if watch is not None and watch.down.is_set():
                    raise HeadLost
                done, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
                self._pump(job, ctx, nodes, watch)
                failed = any(_outcome(ref)[0] != "ok" for ref in done)
                if ended is None and store.cancel_requested(job.id):
                    ended = "cancel"
                elif ended is None and ctx.stop.is_set():
                    ended = "stop"
                if pending and (ended or failed):
                    for ref in pending:  # one worker gone: the others would wait for ever
                        ray.cancel(ref, force=True)
                    self._wait(pending, CANCEL_WAIT_S, watch)
                    pending = []
            with contextlib.suppress(HeadLost):  # ended: Ray's own reason is more precise
                self._pump(job, ctx, nodes, watch)
        except HeadLost:
            # no more Ray calls for this job (placement group, rendezvous: they went with the
            # head); the worker disconnects once its jobs have ended
            message = (
                f"the Ray head at {self.address} was lost while the job ran (its GCS refused "
                f"connections for {HEAD_DOWN_AFTER_S:.0f} s); the remote work is gone with it"
            )
            store.append_log(job.id, f"[ray] {message}\n")
            store.fail(job.id, message)
            return
        finally:
            if not (watch is not None and watch.down.is_set()):
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
                self._lost_at = time.monotonic()  # no claim until the head is confirmed
                log.info(
                    "[ray] job %d lost its node; no job is claimed until the head has answered "
                    "for %.0f s",
                    job.id,
                    HEAD_DOWN_AFTER_S,
                )
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
