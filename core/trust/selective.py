"""Selective prediction: the risk–coverage curve and the "refer" threshold chosen on val.

A case is *retained* (the model's grade is shown as usable) when its uncertainty is at most the
threshold; otherwise it is *referred* to a specialist. Numpy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# accuracy required of the cases the model keeps (the rest are referred): the targets
TARGET_ACCURACY = {"retinamnist": 0.70, "adrenalmnist3d": 0.90}
DEFAULT_TARGET = 0.90


def risk_coverage(uncertainty: np.ndarray, correct: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy of the retained cases at every coverage, most certain cases kept first.

    Ties in uncertainty are kept or referred together (a threshold cannot split them), so the
    curve has one point per distinct uncertainty value.

    Args:
        uncertainty: ``(N,)`` higher = less sure.
        correct: ``(N,)`` 1 where the prediction is right.

    Returns:
        ``{"threshold", "coverage", "accuracy"}`` arrays, coverage increasing; retaining
        cases with ``uncertainty <= threshold[i]`` gives ``coverage[i]`` and ``accuracy[i]``.

    Raises:
        ValueError: empty or mismatched inputs.
    """
    u = np.asarray(uncertainty, dtype=np.float64).reshape(-1)
    c = np.asarray(correct, dtype=np.float64).reshape(-1)
    if len(u) == 0 or len(u) != len(c):
        raise ValueError(f"need N uncertainties and N outcomes, got {len(u)} and {len(c)}")
    order = np.argsort(u, kind="stable")
    u, c = u[order], c[order]
    kept = np.arange(1, len(u) + 1)
    acc = np.cumsum(c) / kept
    last_of_tie = np.r_[u[1:] != u[:-1], True]
    return {
        "threshold": u[last_of_tie],
        "coverage": kept[last_of_tie] / len(u),
        "accuracy": acc[last_of_tie],
    }


def aurc(curve: dict[str, np.ndarray]) -> float:
    """Area under the risk (1 − accuracy) – coverage curve (lower is better), step-wise."""
    cov = np.r_[0.0, curve["coverage"]]
    risk = 1.0 - curve["accuracy"]
    return float(np.sum(np.diff(cov) * risk))


def choose_threshold(
    uncertainty: np.ndarray, correct: np.ndarray, target_accuracy: float
) -> dict[str, Any]:
    """The largest-coverage threshold whose retained accuracy reaches ``target_accuracy``.

    Args:
        uncertainty, correct: validation cases (choose on val, measure on test).
        target_accuracy: required accuracy among retained cases, e.g. 0.70.

    Returns:
        ``{"threshold", "coverage", "accuracy", "target_accuracy", "reached"}``; when no
        coverage reaches the target the most selective point is returned with
        ``reached=False`` (only the most certain tie group is retained).
    """
    curve = risk_coverage(uncertainty, correct)
    ok = np.flatnonzero(curve["accuracy"] >= target_accuracy)
    i = int(ok[-1]) if len(ok) else 0
    return {
        "threshold": float(curve["threshold"][i]),
        "coverage": float(curve["coverage"][i]),
        "accuracy": float(curve["accuracy"][i]),
        "target_accuracy": float(target_accuracy),
        "reached": bool(len(ok)),
    }


def apply_threshold(
    uncertainty: np.ndarray, correct: np.ndarray, threshold: float
) -> dict[str, float]:
    """Coverage and retained accuracy of a fixed threshold on another split (e.g. test)."""
    u = np.asarray(uncertainty, dtype=np.float64).reshape(-1)
    c = np.asarray(correct, dtype=np.float64).reshape(-1)
    keep = u <= threshold
    return {
        "coverage": float(keep.mean()) if len(u) else 0.0,
        "accuracy": float(c[keep].mean()) if keep.any() else float("nan"),
        "n_retained": int(keep.sum()),
        "n": int(len(u)),
    }


def curve_to_json(curve: dict[str, np.ndarray], max_points: int = 101) -> dict[str, list]:
    """A curve thinned to at most ``max_points`` evenly spread points for calibration.json."""
    n = len(curve["coverage"])
    idx = np.unique(np.linspace(0, n - 1, min(n, max_points)).round().astype(int))
    return {k: [float(v) for v in np.asarray(a)[idx]] for k, a in curve.items()}
