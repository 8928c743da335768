"""Time one upload through the trust predictor: calibrated probabilities + uncertainty + OOD
score + refer flag (``Predictor.assess`` on a batch of one), per run and per ensemble.

Usage (from the repository root)::

    MEDMNIST_ROOT=/path/to/npz python -m benchmarks.predict_speed [RUN ...] [--repeats 50]

Without RUN names every run and ensemble with a ``calibration.json`` is timed. Prints the
median and 95th percentile wall time of one ``assess`` call after warm-up, the targets
(≤ 50 ms single model, ≤ 150 ms ensemble) and the machine load (``os.getloadavg``): the
machine is shared, so figures taken under load are upper bounds.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

import numpy as np

from core import data, registry

TARGET_MS = {"run": 50.0, "ensemble": 150.0}


def time_assess(predictor, x: np.ndarray, repeats: int) -> tuple[float, float]:
    """(median, p95) milliseconds of ``predictor.assess(x)`` after three warm-up calls."""
    for _ in range(3):
        predictor.assess(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predictor.assess(x)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times)), float(np.percentile(times, 95))


def main(argv: Sequence[str] | None = None) -> int:
    """Time every named (or fitted) run; print one line each."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks.predict_speed", description=__doc__)
    ap.add_argument("runs", nargs="*")
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args(argv)
    names = args.runs or [
        p.name
        for p in [r.path for r in registry.runs()] + registry.ensemble_dirs()
        if (p / "calibration.json").is_file()
    ]
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(
        f"{'run':24s} {'kind':9s} {'members':>7s} {'tta':>4s} {'median ms':>10s} "
        f"{'p95 ms':>8s} {'target':>7s}  met"
    )
    for name in names:
        p = registry.load_predictor(name)
        kind = "ensemble" if len(p.members) > 1 or p.tta else "run"
        cfg = p.members[0].config
        x, _ = data.load_split(cfg["dataset"], "test", int(cfg.get("size", 28)))
        med, p95 = time_assess(p, x[:1], args.repeats)
        target = TARGET_MS[kind]
        print(
            f"{name:24s} {kind:9s} {len(p.members):7d} {str(p.tta):>4s} {med:10.1f} {p95:8.1f} "
            f"{target:7.0f}  {'yes' if p95 <= target else 'NO'}",
            flush=True,
        )
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
