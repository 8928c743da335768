"""The local executor: each job in its own child process on this machine (the default).

The child is ``python -m core.jobs run-job ID`` (``core.jobs.child``), so a crash inside
TensorFlow fails that job only. Its stdout/stderr are pumped into the job's log; a cancel is
first a flag the child checks every few batches, then a kill after :data:`CANCEL_GRACE_S`.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from core import config
from core.jobs.executors.base import Executor, JobContext
from core.jobs.schema import Job

log = logging.getLogger("core.jobs.worker")

CANCEL_GRACE_S = 15.0  # a child that ignores the cancel flag this long is killed
STOP_GRACE_S = 10.0


def child_env() -> dict[str, str]:
    """This process's environment, with the repository on ``PYTHONPATH`` and unbuffered output."""
    env = dict(os.environ)
    root = str(config.REPO_ROOT)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in parts:
        env["PYTHONPATH"] = os.pathsep.join([root, *parts])
    env["PYTHONUNBUFFERED"] = "1"  # log lines reach the UI as they are printed
    return env


def describe_exit(code: int) -> str:
    """``exited with code N`` or ``was killed by SIGNAME``, for a job's error."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class LocalExecutor(Executor):
    """One job at a time, in a child process of the worker."""

    kind = "local"
    max_running = 1

    def describe(self) -> dict[str, object]:
        return {"kind": self.kind, "max_running": 1, "host": socket.gethostname()}

    def run_job(self, job: Job, ctx: JobContext) -> None:
        """Run one claimed job in a child process, pumping its output into the job log."""
        store = ctx.store
        if job.resource_request["workers"] > 1:
            message = (
                f"this job asks for {job.resource_request['workers']} workers but the worker "
                "runs jobs on this machine only. 1. Resubmit it with 1 worker, or 2. start the "
                "worker with `--executor ray --address HOST:PORT` (docs/scale-out.md)"
            )
            store.append_log(job.id, f"[worker] {message}\n")
            store.fail(job.id, message)
            return
        store.set_node(job.id, f"local ({socket.gethostname()})")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "core.jobs",
                "run-job",
                str(job.id),
                "--db",
                str(store.path),
                "--parent",
                str(ctx.worker_pid),
            ],
            cwd=config.REPO_ROOT,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        chunks: list[str] = []
        lock = threading.Lock()

        def pump() -> None:
            assert proc.stdout is not None
            for raw in iter(proc.stdout.readline, b""):
                with lock:
                    chunks.append(raw.decode("utf-8", errors="replace"))

        reader = threading.Thread(target=pump, name=f"job-{job.id}-log", daemon=True)
        reader.start()

        def flush() -> None:
            with lock:
                text = "".join(chunks)
                chunks.clear()
            store.append_log(job.id, text)

        cancel_at: float | None = None
        stop_at: float | None = None
        reason: str | None = None
        while proc.poll() is None:
            time.sleep(0.5)
            flush()
            now = time.monotonic()
            if cancel_at is None and store.cancel_requested(job.id):
                cancel_at = now
            if cancel_at is not None and now - cancel_at > CANCEL_GRACE_S and reason is None:
                reason = "cancel"  # the child did not notice the flag in time (e.g. loading)
                proc.kill()
            if ctx.stop.is_set() and stop_at is None:
                stop_at = now
                proc.terminate()
            if stop_at is not None and now - stop_at > STOP_GRACE_S and reason is None:
                reason = "stop"
                proc.kill()
        reader.join(timeout=5)
        flush()
        code = proc.returncode
        after = store.get(job.id, with_log=False)
        if after is not None and after.status == "running":  # the child reported nothing
            if reason == "cancel" or (cancel_at is not None and not ctx.stop.is_set()):
                store.append_log(job.id, "[worker] cancelled; nothing was saved\n")
                store.finish(job.id, status="cancelled")
            elif ctx.stop.is_set():
                store.requeue(job.id, "worker stopped; job put back in the queue")
            else:
                message = f"training process {describe_exit(code)}"
                store.append_log(job.id, f"[worker] {message}\n")
                store.fail(job.id, message)
