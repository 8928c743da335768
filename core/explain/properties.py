"""What does the model's score track? Spearman correlation with simple measurable properties.

For the 3D shape masks: gland volume, surface area and elongation; for fundus photographs:
brightness, contrast and disk size. If a "hyperplasia" score rises with gland volume, heat on
the empty space around the gland is no mystery: the model measures how much is there.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.explain.alignment import anatomy_mask
from core.explain.anatomy import SHAPE_MASK_FLAGS


def mask_properties(volume: np.ndarray) -> dict[str, float]:
    """Volume (voxels), surface area (exposed voxel faces) and elongation of one mask.

    Elongation is sqrt(largest / smallest eigenvalue) of the voxel coordinates' covariance
    (1 = round; larger = stretched). NaN for fewer than 2 voxels.
    """
    arr = np.asarray(volume, np.float32)
    m = (arr[..., 0] if arr.ndim == 4 else arr) > 0.5
    padded = np.pad(m, 1).astype(np.int8)
    faces = sum(int(np.abs(np.diff(padded, axis=a)).sum()) for a in range(m.ndim))
    coords = np.argwhere(m).astype(np.float64)
    elong = float("nan")
    if len(coords) >= 2:
        eig = np.linalg.eigvalsh(np.cov(coords.T))
        elong = float(np.sqrt(eig[-1] / max(eig[0], 1e-6)))
    return {"volume": float(m.sum()), "surface_area": float(faces), "elongation": elong}


def fundus_properties(image: np.ndarray) -> dict[str, float]:
    """Brightness and contrast (mean and std of grey inside the fundus disk) and disk size."""
    img = np.asarray(image, np.float32)
    disk = anatomy_mask(img, "retinamnist")
    grey = img.mean(axis=-1)
    vals = grey[disk] if disk.any() else grey.ravel()
    return {
        "brightness": float(vals.mean()),
        "contrast": float(vals.std()),
        "disk_size": float(disk.mean()),
    }


def model_score(probs: np.ndarray) -> tuple[np.ndarray, str]:
    """One number per sample: P(positive) for two classes, expected grade for ordinal/multi."""
    p = np.asarray(probs, np.float64)
    if p.ndim == 2 and p.shape[1] == 1:
        return p[:, 0], "P(class 1)"
    if p.shape[1] == 2:
        return p[:, 1], "P(class 1)"
    return p @ np.arange(p.shape[1]), "expected class index"


def property_correlations(probs: np.ndarray, x_raw: np.ndarray, flag: str) -> dict[str, Any] | None:
    """Spearman correlation of the model's score with each property over the given samples.

    Args:
        probs: Model probabilities ``(N, K)``.
        x_raw: Samples as stored ``(N, *spatial, C)``.
        flag: Dataset flag.

    Returns:
        ``{"score": what the score is, "n": N, "correlations": {property: rho},
        "p_values": {...}}``, or ``None`` for a dataset without defined properties.
    """
    from scipy.stats import spearmanr

    flag = flag.lower()
    if flag in SHAPE_MASK_FLAGS:
        props = [mask_properties(v) for v in x_raw]
    elif flag == "retinamnist":
        props = [fundus_properties(v) for v in x_raw]
    else:
        return None
    score, what = model_score(probs)
    out: dict[str, Any] = {"score": what, "n": len(score), "correlations": {}, "p_values": {}}
    for key in props[0]:
        vals = np.array([p[key] for p in props])
        ok = np.isfinite(vals)
        if ok.sum() < 3 or np.std(vals[ok]) == 0 or np.std(score[ok]) == 0:
            out["correlations"][key], out["p_values"][key] = None, None
            continue
        res = spearmanr(score[ok], vals[ok])
        out["correlations"][key] = float(res.statistic)
        out["p_values"][key] = float(res.pvalue)
    return out


def describe(corr: dict[str, Any] | None, threshold: float = 0.5) -> str | None:
    """Plain-words sentence naming every property the score tracks (|rho| >= threshold)."""
    if not corr:
        return None
    vals = {k: v for k, v in corr["correlations"].items() if v is not None and abs(v) >= threshold}
    if not vals:
        return None
    parts = [
        f"{'rises' if v > 0 else 'falls'} with {k.replace('_', ' ')} ({v:+.2f})"
        for k, v in sorted(vals.items(), key=lambda kv: -abs(kv[1]))
    ]
    sentence = (
        f"The model's score ({corr['score']}) " + " and ".join(parts) + " (rank correlations)"
    )
    if "volume" in vals or "surface_area" in vals:
        # on a shape mask, "how much gland" is read off the whole volume, background included
        return sentence + ": it partly measures gland size and shape, so heat on the empty space "
        "around the gland is no surprise."
    return sentence + ": it partly measures these image properties, which are not signs of disease."
