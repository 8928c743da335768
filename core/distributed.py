"""``python -m core.distributed``: multi-worker training on this machine, one process per worker.

Starts ``--workers N`` copies of ``python -m core.train <train args> --strategy multiworker``,
each with its own ``TF_CONFIG`` naming all N workers on loopback ports, so TensorFlow's
``MultiWorkerMirroredStrategy`` trains one model across the processes (gradients are
all-reduced every step). Worker 0 is the chief: only it saves the run; its last output line is
the run directory, as with ``python -m core.train``.

The same recipe runs on several hosts: give each host the ``TF_CONFIG`` that
:func:`tf_config` builds with the hosts' addresses instead of 127.0.0.1, and run the same
``python -m core.train … --strategy multiworker`` on every host (docs/scale-out.md).

Usage::

    python -m core.distributed --workers 2 -- --dataset breastmnist --model cnn2d --epochs 1

If any worker fails, the others are stopped (a collective op would wait for it forever) and the
exit status is that worker's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from core import cli, config

POLL_S = 0.2
STOP_GRACE_S = 10.0


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct TCP ports that were free on ``host`` a moment ago.

    The sockets are held open together while the ports are picked, so the n ports differ; a
    port can still be taken by another program before TensorFlow binds it (then that worker
    fails at start and the launcher reports it).
    """
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tf_config(addresses: Sequence[str], index: int) -> str:
    """The ``TF_CONFIG`` JSON of worker ``index`` in a cluster of ``addresses`` (host:port).

    Args:
        addresses: one ``host:port`` per worker; worker 0 is the chief.
        index: this worker's position in ``addresses``.

    Returns:
        ``{"cluster": {"worker": [...]}, "task": {"type": "worker", "index": index}}`` as JSON.
    """
    return json.dumps(
        {"cluster": {"worker": list(addresses)}, "task": {"type": "worker", "index": index}}
    )


def _pump(proc: subprocess.Popen, prefix: str, out, lines: list[str]) -> None:
    assert proc.stdout is not None
    for raw in iter(proc.stdout.readline, b""):
        line = raw.decode("utf-8", errors="replace")
        lines.append(line.rstrip("\n"))
        out.write(f"{prefix}{line}")
        out.flush()


def launch(workers: int, train_args: Sequence[str], out=None) -> tuple[int, list[str]]:
    """Run ``python -m core.train`` as ``workers`` cooperating local processes.

    Args:
        workers: number of processes (2 or more for real multi-worker training).
        train_args: the ``core.train`` flags (``--strategy`` is set here).
        out: where the workers' prefixed output goes (default: stdout).

    Returns:
        ``(exit status, the chief's output lines)``; 0 only when every worker exited with 0.
    """
    out = out or sys.stdout
    addresses = [f"127.0.0.1:{port}" for port in free_ports(workers)]
    env = dict(os.environ)
    root = str(config.REPO_ROOT)
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([root, *[p for p in parts if p != root]])
    env["PYTHONUNBUFFERED"] = "1"
    args = [a for a in train_args if a != "--"]
    command = [sys.executable, "-m", "core.train", *args, "--strategy", "multiworker"]
    if "--no-progress" not in args:
        command.append("--no-progress")
    procs: list[subprocess.Popen] = []
    outputs: list[list[str]] = []
    threads = []
    try:
        for index in range(workers):
            proc = subprocess.Popen(
                command,
                cwd=config.REPO_ROOT,
                env={**env, "TF_CONFIG": tf_config(addresses, index)},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            procs.append(proc)
            outputs.append([])
            thread = threading.Thread(
                target=_pump, args=(proc, f"[worker {index}] ", out, outputs[-1]), daemon=True
            )
            thread.start()
            threads.append(thread)
        status = 0
        while any(p.poll() is None for p in procs):
            failed = [p for p in procs if p.returncode not in (None, 0)]
            if failed:
                status = failed[0].returncode
                break
            time.sleep(POLL_S)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for thread in threads:
            thread.join(timeout=5)
    if status == 0:
        status = next((p.returncode for p in procs if p.returncode != 0), 0)
    return status, outputs[0] if outputs else []


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: start N local workers of one ``core.train`` run.

    Returns:
        0 when every worker succeeded, else the first failing worker's exit status.

    Raises:
        core.cli.CLIError: fewer than 1 worker, or no training flags after ``--``.
    """
    p = cli.ArgumentParser(prog="python -m core.distributed", description=__doc__)
    p.add_argument("--workers", type=int, default=2, help="number of local worker processes")
    p.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then core.train's flags")
    args = p.parse_args(argv)
    if args.workers < 1:
        raise cli.CLIError(f"--workers must be 1 or more, got {args.workers}")
    train_args = [a for a in args.train_args if a != "--"]
    if not train_args:
        raise cli.CLIError(
            "no training flags given. 1. Put core.train's flags after `--`, e.g. "
            "`python -m core.distributed --workers 2 -- --dataset breastmnist --model cnn2d`."
        )
    if "--strategy" in train_args:
        raise cli.CLIError("drop --strategy: the launcher sets --strategy multiworker itself")
    status, _ = launch(args.workers, train_args)
    with contextlib.suppress(BrokenPipeError):
        print(f"[launcher] {args.workers} workers exited; status {status}")
    return status


if __name__ == "__main__":
    sys.exit(cli.run(main))
