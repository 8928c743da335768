"""The job child: trains one claimed job in its own process and reports through the store.

The worker starts ``python -m core.jobs run-job ID --db PATH --parent PID`` for each job and
pumps this process's stdout/stderr into the job's log, which the Retrain page shows (and
``core.joblog`` splits into the log and the traceback). The lines this module writes —
``[job] ...``, ``[download] ...``, ``[progress] epoch=1 ...``, a failure's traceback — go
through the ``core.jobs.child`` logger, which ``python -m core.jobs`` prints to stdout as bare
messages, so the log reads as before.

Example (what the worker's child does)::

    store = JobStore("var/jobs.sqlite")
    run_job(7, store, parent_pid=os.getppid())  # 0: succeeded or cancelled, 1: failed
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Mapping
from typing import Any

from core import config, data
from core.jobs.store import JobStore

log = logging.getLogger(__name__)


def _die_with_parent(parent_pid: int | None) -> None:
    """Make the kernel SIGKILL this process when the worker dies (Linux).

    Without it, a job whose worker was killed would keep training and could write a run into
    the registry after the job was already marked failed.
    """
    if parent_pid is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the worker died before prctl took effect
        os._exit(1)


def run_job(job_id: int, store: JobStore | None = None, parent_pid: int | None = None) -> int:
    """Train one claimed job in this process (the worker's child); report through the store.

    Returns:
        0 when the job ended as succeeded/cancelled, 1 when it failed.
    """
    _die_with_parent(parent_pid)
    store = store or JobStore()
    job = store.get(job_id, with_log=False)
    if job is None or job.status != "running":
        log.warning(
            "job %d is not running (%s); nothing to do", job_id, job.status if job else "missing"
        )
        return 1
    last_check = [0.0, False]

    def should_cancel() -> bool:
        # Checked every batch: one SQLite read per second at most keeps it cheap.
        if parent_pid is not None and os.getppid() != parent_pid:
            return True  # orphaned (no prctl on this OS): stop without saving
        now = time.monotonic()
        if now - last_check[0] >= 1.0:
            last_check[0] = now
            last_check[1] = store.cancel_requested(job_id)
        return bool(last_check[1])

    def on_progress(logs: Mapping[str, Any]) -> None:
        store.update_progress(job_id, logs)
        parts = [
            f"{k}={logs[k]:.4f}" if isinstance(logs.get(k), float) else f"{k}={logs.get(k)}"
            for k in ("epoch", "epochs", "loss", "val_auc", "val_acc")
            if k in logs
        ]
        log.info("[progress] %s", " ".join(parts))

    try:
        cfg = config.TrainConfig.from_dict(job.params).validate()
        log.info("[job] %s", json.dumps(cfg.to_dict(), sort_keys=True))
        last_pct = [-10]

        def on_download(done: int, total: int) -> None:
            pct = int(100 * done / total) if total else 0
            if pct >= last_pct[0] + 10:
                last_pct[0] = pct
                log.info("[download] %s %d%% of %.1f MB", cfg.dataset, pct, total / 1e6)

        data.ensure_file(cfg.dataset, cfg.size, download=True, progress=on_download)

        from core import training  # here, not at the top: it imports TensorFlow

        run_dir = training.run(
            cfg,
            callbacks=[
                training.ProgressCallback(on_progress),
                training.CancelCallback(should_cancel),
            ],
        )
    except BaseException as exc:  # noqa: BLE001 - every failure must end up in the job row
        training_mod = sys.modules.get("core.training")
        cancelled_type = getattr(training_mod, "TrainingCancelled", None)
        if cancelled_type is not None and isinstance(exc, cancelled_type):
            log.info("[job] cancelled; nothing was saved")
            store.finish(job_id, status="cancelled")
            return 0
        # the bare traceback, as print_exc wrote it: core.joblog finds it in the job log
        log.error("%s", traceback.format_exc().rstrip("\n"))
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        store.fail(job_id, f"{type(exc).__name__}: {message}" if message else type(exc).__name__)
        return 1
    log.info("[job] saved run %s", run_dir)
    store.finish(job_id, run_dir=run_dir)
    return 0
