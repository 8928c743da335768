"""What runs on a Ray node: one job's training, and the two small actors it talks to.

The worker (``ray_cluster.RayExecutor``) starts :func:`train_job` as a Ray task with the CPUs
and GPUs the job asked for. The task gets the code through Ray's runtime environment (the
repository, without models and data), finds or downloads the MedMNIST file on its node with
``core.data.ensure_file`` (MD5-checked), trains into a scratch registry of its own and returns
the run as tar bytes (``archive.pack_run``): nothing assumes a filesystem shared with the app.

Live output goes through a :class:`JobChannel` actor that lives on the worker's own node: log
lines, one message per epoch and, first, the node the task runs on. A multi-worker job runs N
such tasks in a placement group; they meet in a :class:`Rendezvous` actor to build the
``TF_CONFIG`` of ``MultiWorkerMirroredStrategy``, and only the chief returns the run.

Imported by the worker and, through Ray, on the nodes; never by the app.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import time
import traceback
from typing import Any

import ray

from core import config, data
from core.jobs.executors.archive import pack_run

RENDEZVOUS_TIMEOUT_S = 120.0


@ray.remote(num_cpus=0)
class JobChannel:
    """A mailbox per job id: ``(kind, payload)`` messages from tasks, drained by the worker."""

    def __init__(self) -> None:
        self._items: dict[int, list[tuple[str, Any]]] = {}

    def put(self, job_id: int, kind: str, payload: Any) -> None:
        self._items.setdefault(job_id, []).append((kind, payload))

    def drain(self, job_id: int) -> list[tuple[str, Any]]:
        return self._items.pop(job_id, [])

    def ping(self) -> bool:
        return True


@ray.remote(num_cpus=0)
class Rendezvous:
    """Where the N tasks of a multi-worker job publish their ``host:port`` and read all."""

    def __init__(self, workers: int) -> None:
        self._addresses: list[str | None] = [None] * workers

    def register(self, index: int, address: str) -> None:
        self._addresses[index] = address

    def addresses(self) -> list[str] | None:
        return None if None in self._addresses else list(self._addresses)  # type: ignore[arg-type]


class _ChannelHandler(logging.Handler):
    """Sends each log record of the task to the job's channel, as one bare line."""

    def __init__(self, channel: Any, job_id: int) -> None:
        super().__init__(logging.INFO)
        self.channel = channel
        self.job_id = job_id
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.channel.put.remote(self.job_id, "log", self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - a lost channel must not fail the training
            self.handleError(record)


def node_label() -> str:
    """``<node ip> (<first 8 hex of the Ray node id>)``: where this task runs."""
    node_id = ray.get_runtime_context().get_node_id()
    return f"{ray.util.get_node_ip_address()} ({node_id[:8]})"


def _join_cluster(rendezvous: Any, index: int, log: logging.Logger) -> None:
    """Publish this task's address, wait for the others, and set ``TF_CONFIG``.

    Raises:
        TimeoutError: the other workers did not register within :data:`RENDEZVOUS_TIMEOUT_S`.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    ray.get(rendezvous.register.remote(index, f"{ray.util.get_node_ip_address()}:{port}"))
    deadline = time.monotonic() + RENDEZVOUS_TIMEOUT_S
    while (addresses := ray.get(rendezvous.addresses.remote())) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the other workers of this job did not start within {RENDEZVOUS_TIMEOUT_S:.0f} s"
            )
        time.sleep(0.2)
    os.environ["TF_CONFIG"] = json.dumps(
        {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
    )
    log.info("[ray] worker %d of %d: TF_CONFIG cluster %s", index, len(addresses), addresses)


def train_job(
    job_id: int,
    params: dict[str, Any],
    channel: Any,
    index: int = 0,
    rendezvous: Any = None,
) -> dict[str, Any]:
    """Train one job on this node (the body of the Ray task).

    Args:
        job_id: the job, for the channel's messages.
        params: the job's ``TrainConfig`` as a dict.
        channel: the worker's :class:`JobChannel`.
        index: this task's worker index (multi-worker jobs; 0 is the chief).
        rendezvous: a :class:`Rendezvous` for multi-worker jobs, None for one worker.

    Returns:
        ``{"ok": True, "name", "archive"}`` from the chief (``archive``: the run as tar bytes),
        ``{"ok": True}`` from another worker, ``{"ok": False, "error"}`` when training failed
        (the traceback went to the log). Killing the task (cancel, node loss) returns nothing.
    """
    log = logging.getLogger(f"core.jobs.ray_task.{job_id}.{index}")
    log.setLevel(logging.INFO)
    log.propagate = False
    handler = _ChannelHandler(channel, job_id)
    log.addHandler(handler)
    # TensorFlow's thread pools default to every core of the node: keep the job to the CPUs it
    # was given, so jobs sharing a node do not slow each other down (read when TF loads)
    cpus = int(ray.get_runtime_context().get_assigned_resources().get("CPU", 0) or 0)
    if cpus >= 1:
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(cpus)
        os.environ["TF_NUM_INTEROP_THREADS"] = str(cpus)
    label = node_label()
    channel.put.remote(job_id, "node", {"node": label, "pid": os.getpid(), "index": index})
    log.info("[ray] worker %d on node %s, pid %d", index, label, os.getpid())
    try:
        cfg = config.TrainConfig.from_dict(params).validate()
        log.info("[job] %s", json.dumps(cfg.to_dict(), sort_keys=True))
        data.ensure_file(cfg.dataset, cfg.size, download=True)
        if rendezvous is not None:
            _join_cluster(rendezvous, index, log)
        from core import training  # TensorFlow: imported after the node label went out

        strategy = training.get_strategy("multiworker") if rendezvous is not None else None
        chief = training.is_chief(strategy)

        def on_progress(logs: dict[str, Any]) -> None:
            values = {k: float(v) if isinstance(v, float) else v for k, v in logs.items()}
            channel.put.remote(job_id, "progress", values)
            parts = [
                f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                for k, v in values.items()
                if k in ("epoch", "epochs", "loss", "val_auc", "val_acc")
            ]
            log.info("[progress] %s", " ".join(parts))

        callbacks = [training.ProgressCallback(on_progress)] if chief else []
        with tempfile.TemporaryDirectory(prefix=f"ray-job-{job_id}-") as scratch:
            run_dir = training.run(cfg, output_root=scratch, callbacks=callbacks, strategy=strategy)
            if not chief:
                log.info("[ray] worker %d finished; the chief returns the run", index)
                return {"ok": True}
            archive = pack_run(run_dir)
        log.info("[job] trained run %s (%.1f MB to send back)", run_dir.name, len(archive) / 1e6)
        return {"ok": True, "name": run_dir.name, "archive": archive}
    except Exception as exc:  # noqa: BLE001 - every failure must reach the job row
        log.error("%s", traceback.format_exc().rstrip("\n"))
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return {"ok": False, "error": f"{type(exc).__name__}: {message}".rstrip(": ")}
    finally:
        log.removeHandler(handler)
