"""Calibration: temperature scaling fitted on validation scores, ECE/MCE and reliability bins.

Numpy, SciPy and scikit-learn only (no TensorFlow): the functions take *scores* ``z`` — the
logits of one model, or the log of an ensemble's mean probability — and labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.calibration import calibration_curve

N_BINS = 15
# bounds on log(T): T in [0.05, 20] covers every model here with room (fitted 0.9-2.5)
_LOG_T_BOUNDS = (np.log(0.05), np.log(20.0))


def scaled_proba(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Probabilities ``softmax(z / T)`` row-wise.

    Args:
        z: scores ``(N, K)`` (logits, or log-probabilities of an ensemble mean).
        temperature: T > 0; T > 1 softens over-confident scores.

    Returns:
        ``(N, K)`` float64 probabilities, rows summing to 1.
    """
    return softmax(np.asarray(z, dtype=np.float64) / float(temperature), axis=1)


def nll(z: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of integer labels ``y`` under ``softmax(z / T)``."""
    y = np.asarray(y).reshape(-1).astype(int)
    logp = log_softmax(np.asarray(z, dtype=np.float64) / float(temperature), axis=1)
    return float(-logp[np.arange(len(y)), y].mean())


def fit_temperature(z: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising validation NLL (Guo et al. 2017, one scalar parameter).

    Args:
        z: validation scores ``(N, K)``.
        y: integer labels ``(N,)`` or ``(N, 1)``.

    Returns:
        T > 0 (a bounded 1-D search over log T; NLL is convex in 1/T).

    Raises:
        ValueError: empty input or shapes that disagree.
    """
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y).reshape(-1).astype(int)
    if z.ndim != 2 or len(z) == 0 or len(z) != len(y):
        raise ValueError(f"need scores (N, K) and N labels, got {z.shape} and {y.shape}")
    res = minimize_scalar(
        lambda log_t: nll(z, y, np.exp(log_t)), bounds=_LOG_T_BOUNDS, method="bounded"
    )
    return float(np.exp(res.x))


def reliability(proba: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> dict[str, Any]:
    """Top-label reliability bins, ECE and MCE.

    The per-bin accuracy and mean confidence come from scikit-learn's ``calibration_curve``
    (uniform bins) on "prediction correct" vs top-label confidence; it returns no bin counts,
    so the counts are recomputed here with the same ``searchsorted`` binning to weight ECE.

    Args:
        proba: probabilities ``(N, K)``.
        y: integer labels.
        n_bins: equal-width confidence bins on [0, 1].

    Returns:
        ``{"ece", "mce", "n", "bins": [{"lo", "hi", "count", "confidence", "accuracy"}]}``
        (empty bins omitted; ECE = Σ count/N · |accuracy − confidence|, MCE = max gap).
    """
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y).reshape(-1).astype(int)
    conf = np.clip(proba.max(axis=1), 0.0, 1.0)
    correct = (proba.argmax(axis=1) == y).astype(int)
    return reliability_from_confidence(conf, correct, n_bins)


def reliability_from_confidence(
    conf: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS
) -> dict[str, Any]:
    """:func:`reliability` from top-label confidences and 0/1 correctness."""
    conf = np.asarray(conf, dtype=np.float64)
    correct = np.asarray(correct).astype(int)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(edges[1:-1], conf)  # calibration_curve's own binning
    counts = np.bincount(ids, minlength=n_bins)
    # pos_label=1 so a set with only correct (or only wrong) predictions is still accepted
    acc, mean_conf = calibration_curve(correct, conf, n_bins=n_bins, pos_label=1)
    occupied = np.flatnonzero(counts)
    gaps = np.abs(acc - mean_conf)
    weights = counts[occupied] / max(len(conf), 1)
    bins = [
        {
            "lo": float(edges[i]),
            "hi": float(edges[i + 1]),
            "count": int(counts[i]),
            "confidence": float(c),
            "accuracy": float(a),
        }
        for i, c, a in zip(occupied, mean_conf, acc, strict=True)
    ]
    return {
        "ece": float(np.sum(weights * gaps)),
        "mce": float(gaps.max()) if len(gaps) else 0.0,
        "n": int(len(conf)),
        "bins": bins,
    }


def ece(proba: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> float:
    """Top-label expected calibration error (15 equal-width bins by default)."""
    return reliability(proba, y, n_bins)["ece"]


def simulated_ece_bound(
    conf: np.ndarray,
    quantile: float = 0.95,
    n_sims: int = 2000,
    n_bins: int = N_BINS,
    seed: int = 0,
) -> float:
    """The ECE a *perfectly calibrated* model with these confidences stays under ``quantile``
    of the time on a set of this size.

    Each simulation draws "correct" ~ Bernoulli(confidence) per case and measures ECE; finite
    sets give ECE > 0 even when calibration is perfect, so this is the noise floor to compare a
    measured ECE against.

    Args:
        conf: top-label confidences of the evaluated set ``(N,)``.
        quantile: e.g. 0.95.
        n_sims: number of simulated label draws.
        n_bins: ECE bins.
        seed: random seed (the bound is reproducible).

    Returns:
        The ``quantile`` of the simulated ECEs.
    """
    conf = np.clip(np.asarray(conf, dtype=np.float64), 0.0, 1.0)
    rng = np.random.default_rng(seed)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(edges[1:-1], conf)
    conf_sum = np.bincount(ids, weights=conf, minlength=n_bins)
    draws = rng.random((n_sims, len(conf))) < conf  # (sims, N) simulated correctness
    # vectorised over simulations (calibration_curve takes one draw at a time: 2000 calls
    # cost ~2 s here); the binning is the same searchsorted on the same edges
    correct_sum = np.stack([np.bincount(ids, weights=d, minlength=n_bins) for d in draws])
    eces = np.abs(correct_sum - conf_sum).sum(axis=1) / max(len(conf), 1)
    return float(np.quantile(eces, quantile))


def calibration_report(
    z_val: np.ndarray, y_val: np.ndarray, z_test: np.ndarray, y_test: np.ndarray
) -> dict[str, Any]:
    """Fit T on val and measure ECE/MCE before and after on val and test.

    Returns:
        ``{"temperature", "val": {"raw", "scaled"}, "test": {"raw", "scaled"},
        "test_ece_bound_95"}`` where raw/scaled are :func:`reliability` dicts plus ``nll``;
        the bound is :func:`simulated_ece_bound` on the scaled test confidences.
    """
    t = fit_temperature(z_val, y_val)
    out: dict[str, Any] = {"temperature": t}
    for split, z, y in (("val", z_val, y_val), ("test", z_test, y_test)):
        out[split] = {}
        for name, temp in (("raw", 1.0), ("scaled", t)):
            rel = reliability(scaled_proba(z, temp), y)
            rel["nll"] = nll(z, y, temp)
            out[split][name] = rel
    conf = scaled_proba(z_test, t).max(axis=1)
    out["test_ece_bound_95"] = simulated_ece_bound(conf)
    return out
