"""One input through a run's predictor: calibrated probabilities, uncertainty band, OOD and
refer verdicts, as plain values (no drawing). ``app.cache.assessment`` caches it and
``app.trust_ui`` draws it; kept apart from both so neither imports the other.

The predictor is what ``core.registry.load_predictor`` returns; this module needs only its
``assess(x)`` and, for the band, its ``trust`` dict (``calibration.json``) and, for ensembles,
``members``, ``raw(x)["logits"]``, ``temperature`` and ``bias``.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _band(predictor: Any, x: np.ndarray, proba: np.ndarray) -> tuple[Any, str]:
    """``((low, high), kind)`` for one sample: ensemble members' range, else ± val ECE."""
    trust = getattr(predictor, "trust", None) or {}
    raw = getattr(predictor, "raw", None)
    if callable(raw) and len(getattr(predictor, "members", ()) or ()) > 1:
        from scipy.special import softmax

        t = float(getattr(predictor, "temperature", 1.0) or 1.0)
        bias = getattr(predictor, "bias", None)
        b = 0.0 if bias is None else np.asarray(bias, dtype=float)
        per_member = np.stack(
            [softmax(np.asarray(z, dtype=float)[0] / t + b) for z in raw(x[None])["logits"]]
        )
        return (per_member.min(axis=0), per_member.max(axis=0)), "ensemble"
    ece = (((trust.get("calibration") or {}).get("val") or {}).get("scaled") or {}).get("ece")
    if isinstance(ece, int | float):
        return (proba - ece, proba + ece), "single"
    return None, "none"


def assess_one(predictor: Any, x: np.ndarray) -> dict[str, Any]:
    """The predictor's answer for one model input ``x`` (no batch axis).

    Returns:
        ``{"proba" (K,), "uncertainty", "ood_score", "is_ood", "refer", "band" ((lo, hi) or
        None), "band_kind" ("ensemble" | "single" | "none"), "fitted" (bool), "refer_info"
        (the run's refer settings or {})}``. A run without ``calibration.json`` gives its raw
        probabilities with ``fitted`` False and no OOD or refer verdict.
    """
    trust = getattr(predictor, "trust", None) or {}
    try:
        out = predictor.assess(x[None])
    except Exception as exc:  # TrustNotFittedError: no calibration.json for this run yet
        if trust or type(exc).__name__ != "TrustNotFittedError":
            raise
        proba = np.asarray(predictor.predict_proba(x[None]), dtype=float)[0]
        return {
            "proba": proba,
            "uncertainty": float(1.0 - proba.max()),
            "ood_score": None,
            "is_ood": False,
            "refer": False,
            "band": None,
            "band_kind": "none",
            "fitted": False,
            "refer_info": {},
        }
    proba = np.asarray(out["proba"], dtype=float)[0]
    band, kind = _band(predictor, x, proba)
    return {
        "proba": proba,
        "uncertainty": float(np.asarray(out["uncertainty"])[0]),
        "ood_score": float(np.asarray(out["ood_score"])[0]),
        "is_ood": bool(np.asarray(out["is_ood"])[0]),
        "refer": bool(np.asarray(out["refer"])[0]),
        "band": band,
        "band_kind": kind,
        "fitted": True,
        "refer_info": trust.get("refer") or {},
    }
