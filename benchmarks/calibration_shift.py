"""Diagnosis: does the temperature the validation split asks for carry over to the test split?

**Nothing computed here is used to choose anything.** The shipped calibration map stays the one
``python -m core.trust`` fitted on val; this script only explains why, on most RetinaMNIST
predictors, that map lowers the val ECE but not the test ECE (issue #14's goal: test ECE after
scaling ≤ the simulated 95 % bound and ≤ ½ the raw test ECE). For every shipped run and ensemble
with a ``calibration.json`` it prints and stores:

* ``T_val`` and ``T_test``: the single temperature minimising NLL on val alone and on test
  alone (``core.trust.calibration.fit_temperature``; T < 1 sharpens, T > 1 softens). Where the
  shipped map is temperature + per-class bias, its T is listed separately;
* raw (T = 1) accuracy and mean top-label confidence on both splits;
* a 90 % percentile-bootstrap interval of ``T_val`` (SciPy's ``bootstrap``, 1 000 resamples
  of the val cases): how far the few val images (120 retina, 98 adrenal) pin the temperature
  down, and whether ``T_test`` lies inside it;
* the test ECE at T = 1, at ``T_val``, with the shipped map, and at ``T_test`` (an oracle that
  looks at test labels; shown only as the best a single temperature could do).

Figures go to ``docs/results/calibration_shift.json`` (with the command, date and load).

    python -m benchmarks.calibration_shift [RUN ...]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import softmax
from scipy.stats import bootstrap

from core import registry
from core.trust import calibration

OUT = Path(__file__).resolve().parents[1] / "docs" / "results" / "calibration_shift.json"
CONFIDENCE = 0.90
N_RESAMPLES = 1000


def temperature_interval(
    z: np.ndarray,
    y: np.ndarray,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the NLL-optimal temperature over resampled cases.

    Args:
        z: scores ``(N, K)`` (logits, or the log of an ensemble's mean probability).
        y: integer labels ``(N,)`` or ``(N, 1)``.
        confidence: interval coverage, e.g. 0.9.
        n_resamples: bootstrap resamples (each refits one temperature, ~2 ms for N = 120).
        seed: resampling seed (the interval is reproducible).

    Returns:
        ``(low, high)`` temperatures.

    Raises:
        ValueError: empty input or shapes that disagree.
    """
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y).reshape(-1).astype(int)
    if z.ndim != 2 or len(z) == 0 or len(z) != len(y):
        raise ValueError(f"need scores (N, K) and N labels, got {z.shape} and {y.shape}")
    # resample case indices, so scores and labels stay paired
    res = bootstrap(
        (np.arange(len(y)),),
        lambda idx: calibration.fit_temperature(z[idx], y[idx]),
        n_resamples=n_resamples,
        confidence_level=confidence,
        method="percentile",
        vectorized=False,
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def shift_study(
    name: str,
    scores: dict[str, tuple[np.ndarray, np.ndarray]],
    shipped: dict[str, Any],
    n_resamples: int = N_RESAMPLES,
) -> dict[str, Any]:
    """Every figure of the module docstring for one predictor.

    Args:
        name: run or ensemble name.
        scores: ``{"val": (z, y), "test": (z, y)}`` uncalibrated scores and labels.
        shipped: the predictor's ``calibration.json`` (its fitted map, bound and goal).
        n_resamples: bootstrap resamples for the ``T_val`` interval.

    Returns:
        A JSON-ready dict (see ``docs/results/calibration_shift.json``).
    """
    z = {s: np.asarray(v[0], dtype=np.float64) for s, v in scores.items()}
    y = {s: np.asarray(v[1]).reshape(-1).astype(int) for s, v in scores.items()}
    t = {s: calibration.fit_temperature(z[s], y[s]) for s in ("val", "test")}
    lo, hi = temperature_interval(z["val"], y["val"], n_resamples=n_resamples)
    raw = {s: softmax(z[s], axis=1) for s in z}
    cal = shipped["calibration"]
    t_ship, bias = float(shipped["temperature"]), shipped.get("bias")
    zt, yt = z["test"], y["test"]
    test_raw, test_scaled = cal["test"]["raw"]["ece"], cal["test"]["scaled"]["ece"]
    return {
        "run": name,
        "dataset": shipped["dataset"],
        "kind": shipped.get("kind", "run"),
        "n": {s: len(y[s]) for s in ("val", "test")},
        "shipped_map": shipped.get("calibrator", cal.get("method", "temperature")),
        "shipped_temperature": t_ship,
        "t_val": t["val"],
        "t_test": t["test"],
        "t_val_interval": [lo, hi],
        "confidence_level": CONFIDENCE,
        "t_test_inside": bool(lo <= t["test"] <= hi),
        "same_direction": bool((t["val"] - 1.0) * (t["test"] - 1.0) > 0),
        "accuracy": {s: float((raw[s].argmax(1) == y[s]).mean()) for s in raw},
        "confidence": {s: float(raw[s].max(1).mean()) for s in raw},
        "test_ece": {
            "raw": calibration.ece(raw["test"], yt),
            "t_val": calibration.ece(calibration.scaled_proba(zt, t["val"]), yt),
            "shipped": calibration.ece(calibration.scaled_proba(zt, t_ship, bias), yt),
            "t_test": calibration.ece(calibration.scaled_proba(zt, t["test"]), yt),
        },
        "test_ece_bound_95": cal["test_ece_bound_95"],
        # the goal, judged on the shipped map exactly as the Trust table does
        "goal_met": bool(test_scaled <= cal["test_ece_bound_95"] and test_scaled <= test_raw / 2),
    }


def print_header() -> None:
    print(
        f"{'run':22s} {'T_val':>5s} {'90% interval':>13s} {'T_test':>6s} in?  "
        "valACC testACC val_conf test_conf | test ECE raw  T_val shipped T_test bound goal"
    )


def print_study(s: dict[str, Any]) -> None:
    lo, hi = s["t_val_interval"]
    e = s["test_ece"]
    print(
        f"{s['run']:22s} {s['t_val']:5.2f} [{lo:4.2f}, {hi:4.2f}] {s['t_test']:6.2f} "
        f"{'yes' if s['t_test_inside'] else 'no ':3s}  "
        f"{s['accuracy']['val']:.3f}  {s['accuracy']['test']:.3f}   "
        f"{s['confidence']['val']:.3f}    {s['confidence']['test']:.3f}  | "
        f"{e['raw']:.3f} {e['t_val']:.3f}  {e['shipped']:.3f}  {e['t_test']:.3f} "
        f"{s['test_ece_bound_95']:.3f} {'met' if s['goal_met'] else 'NOT'}",
        flush=True,
    )


def shipped_predictors(root: str | os.PathLike | None = None) -> list[Path]:
    """Every run and ensemble folder of the registry with a ``calibration.json``."""
    paths = [r.path for r in registry.runs(root)] + registry.ensemble_dirs(root)
    return [Path(p) for p in paths if (Path(p) / "calibration.json").is_file()]


def predictor_scores(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Uncalibrated val/test scores of a run or ensemble, computed as ``core.trust.fit`` does
    (the predictor's own input size, channels and test-time flips)."""
    from core import data

    p = registry.load_predictor(path)
    cfg = p.members[0].config
    out = {}
    for split in ("val", "test"):
        x, y = data.load_split(cfg["dataset"], split, int(cfg.get("size", 28)))
        out[split] = (p.raw(x)["z"], y)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.calibration_shift", description=__doc__)
    p.add_argument("runs", nargs="*", help="run or ensemble names (default: every fitted one)")
    p.add_argument("--registry", default=None, help="model registry (default TRAINED_MODELS_DIR)")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--resamples", type=int, default=N_RESAMPLES)
    args = p.parse_args(argv)
    paths = shipped_predictors(args.registry)
    if args.runs:
        by_name = {q.name: q for q in paths}
        unknown = [r for r in args.runs if r not in by_name]
        if unknown:
            print(
                f"no fitted run or ensemble named {', '.join(unknown)}.\n"
                "  1. Check the name against the registry folder (`ls trained_models`).\n"
                "  2. Fit its trust values first: `python -m core.trust RUN`.",
                file=sys.stderr,
            )
            return 2
        paths = [by_name[r] for r in args.runs]
    print_header()
    studies = []
    for path in paths:
        shipped = registry.read_json(path, "calibration.json")
        s = shift_study(path.name, predictor_scores(path), shipped, args.resamples)
        print_study(s)
        studies.append(s)
    out = {
        "command": shlex.join(["python", "-m", "benchmarks.calibration_shift", *(argv or [])]),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "resamples": args.resamples,
        "runs": studies,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
