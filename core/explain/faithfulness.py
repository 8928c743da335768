"""Is a map faithful to the model? Deletion/insertion curves, a smooth-random baseline, ROAD.

Every function takes maps as arrays ``(N, *spatial)`` (any method, 2D or 3D) and a
``predict_fn`` (batch ``(B, *spatial, C)`` -> class probabilities ``(B, K)``), so the same code
rates Grad-CAM, Score-CAM, Integrated Gradients or occlusion, and any model that predicts.

- **Deletion / insertion** (Petsiuk et al. 2018, RISE): positions are replaced, in the map's
  order, by a *reference* input; deletion starts at the sample and ends at the reference,
  insertion the other way round. The reference must move the model (measured: a sigma = 2 px
  blur of a 28 px fundus photo moves the retina models' score by 0.00-0.05, so it cannot rank
  maps), so :func:`removal_reference` uses the training split's mean image (2D) or an empty
  volume (the 3D shape masks), and :func:`deletion_insertion` reports how far the fully
  removed input moves the score.
- **Smooth-random baseline** (:func:`smooth_random_maps`): random values on one fixed coarse
  grid (4x4 or 4x4x4) upsampled to the input, the same maps for every method, so a method is
  compared with a random map *of the same smoothness*, not with scattered pixels.
- **ROAD** (Rong et al. 2022, :func:`road_curves`): removed positions are filled by noisy linear
  imputation from their neighbours, so the removal itself leaks no shape information; most
  relevant first (MoRF, lower is better) and least relevant first (LeRF, higher is better).

Quantus 0.6.0 (PyPI) was measured for ROAD on our models (see docs/architecture.md): its
``quantus.ROAD`` raised ``IndexError`` on the 2D RetinaMNIST CNN and, on the 3D CNN, mixed
Keras 3 into the tf-keras model ("All `inputs` values must be KerasTensors"); its
``noisy_linear_imputation`` hard-codes the 8 offsets of a 2D image. So ROAD is written here,
rank-agnostic, with ROAD's neighbour weights (1/6 direct, 1/12 diagonal in 2D = weight
proportional to 1 / L1 length of the offset, which extends to 3D).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

PredictFn = Callable[[np.ndarray], np.ndarray]

# Shape-mask datasets: the input *is* the organ mask, so "nothing there" is the empty volume.
EMPTY_REFERENCE_FLAGS = ("adrenalmnist3d", "vesselmnist3d")
BASELINE_GRID = 4
ROAD_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
_DIRECT_SOLVE_MAX = 4096  # unknowns; above this ROAD's system is solved iteratively


def _check_maps(x: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sample = np.asarray(x, np.float32)
    heat = np.asarray(maps, np.float32)
    if sample.ndim not in (4, 5):
        raise ValueError(
            f"x must be a batch (N, H, W, C) or (N, D, H, W, C); got shape {sample.shape}"
        )
    if heat.shape != sample.shape[:-1]:
        raise ValueError(
            f"maps {heat.shape} must have the batch and spatial shape of x {sample.shape[:-1]}"
        )
    if not np.all(np.isfinite(heat)):
        raise ValueError("maps contain NaN or infinite values")
    return sample, heat


def removal_reference(x_train: np.ndarray, flag: str) -> np.ndarray:
    """The input that "removed" positions are replaced by.

    Args:
        x_train: Training images ``(N, *spatial, C)`` as the model sees them.
        flag: MedMNIST dataset flag.

    Returns:
        ``(*spatial, C)`` float32: zeros for the 3D shape masks (an empty volume), otherwise the
        training split's mean image (in distribution, unlike black or scattered noise).

    Raises:
        ValueError: For an empty training array.
    """
    arr = np.asarray(x_train, np.float32)
    if arr.ndim < 3 or len(arr) == 0:
        raise ValueError(f"x_train must be a non-empty batch of images; got shape {arr.shape}")
    if flag.lower() in EMPTY_REFERENCE_FLAGS:
        return np.zeros(arr.shape[1:], np.float32)
    return arr.mean(axis=0).astype(np.float32)


def _linear_resize(grid: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Separable linear interpolation with half-pixel centres (as ``tf.image.resize``)."""
    out = grid
    for axis, n_out in enumerate(size):
        n_in = out.shape[axis + 1]
        pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        frac = (pos - lo).reshape([-1 if a == axis + 1 else 1 for a in range(out.ndim)])
        out = np.take(out, lo, axis=axis + 1) * (1 - frac) + np.take(out, hi, axis=axis + 1) * frac
    return out


def smooth_random_maps(
    n: int, spatial: Sequence[int], grid: int = BASELINE_GRID, seed: int = 0
) -> np.ndarray:
    """Random maps of a fixed coarse smoothness: uniform values on a ``grid**d`` lattice, upsampled.

    Sample ``i`` always gets the same map for a given ``seed``, so every method of a model is
    compared with the same baseline.

    Args:
        n: Number of maps.
        spatial: Spatial shape, 2 or 3 axes.
        grid: Lattice points per axis (4 = a 4x4 or 4x4x4 grid).
        seed: Random seed.

    Returns:
        float32 ``(n, *spatial)`` in [0, 1], each map's maximum 1.

    Raises:
        ValueError: For a rank other than 2 or 3, or a grid below 2.
    """
    spatial = tuple(int(s) for s in spatial)
    if len(spatial) not in (2, 3) or min(spatial) < 1:
        raise ValueError(f"spatial must be 2 or 3 positive sizes; got {spatial}")
    if grid < 2:
        raise ValueError(f"grid must be >= 2 lattice points per axis; got {grid}")
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    rng = np.random.default_rng(seed)
    coarse = rng.random((n, *([grid] * len(spatial))))
    maps = _linear_resize(coarse, spatial)
    peak = maps.reshape(n, -1).max(axis=1) if n else np.ones(0)
    return (maps / peak.reshape(-1, *[1] * len(spatial))).astype(np.float32)


def _orders(heat: np.ndarray, seed: int) -> np.ndarray:
    """Per-sample rank of each position, 0 = most important; ties broken randomly."""
    flat = heat.reshape(len(heat), -1)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(flat.shape), -flat), axis=1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None], axis=1)
    return ranks


def _class_scores(predict_fn: PredictFn, batch: np.ndarray, classes: np.ndarray) -> np.ndarray:
    probs = np.asarray(predict_fn(batch), np.float64)
    if probs.ndim == 2 and probs.shape[1] == 1:  # one sigmoid unit: score of class 1
        probs = np.concatenate([1.0 - probs, probs], axis=1)
    return probs[np.arange(len(batch)), classes]


def deletion_insertion(
    predict_fn: PredictFn,
    x: np.ndarray,
    maps: np.ndarray,
    classes: Sequence[int],
    reference: np.ndarray,
    steps: int = 16,
    seed: int = 0,
    chunk: int = 512,
) -> dict[str, Any]:
    """Deletion and insertion curves for a batch of maps (RISE, with a reference input).

    Args:
        predict_fn: Batch ``(B, *spatial, C)`` -> probabilities ``(B, K)`` (or ``(B, 1)``).
        x: Samples ``(N, *spatial, C)``.
        maps: Their maps ``(N, *spatial)``; higher = more important.
        classes: Class explained per sample (its probability is tracked).
        reference: ``(*spatial, C)`` written into removed positions (:func:`removal_reference`).
        steps: Curve steps; fractions ``0, 1/steps, ..., 1`` of the positions.
        seed: Seed for breaking ties in the maps.
        chunk: Inputs per ``predict_fn`` call.

    Returns:
        ``{"fractions", "deletion", "insertion"}`` with per-sample curves ``(N, steps + 1)``,
        per-sample AUCs ``deletion_auc``/``insertion_auc`` ``(N,)`` (trapezoid over the
        fractions), and ``removal_shift`` ``(N,)``: score of the sample minus score of the
        reference, the largest move any curve can show.

    Raises:
        ValueError: On mismatched shapes, non-finite maps, a bad reference or ``steps < 1``.
    """
    sample, heat = _check_maps(x, maps)
    ref = np.asarray(reference, np.float32)
    if ref.shape != sample.shape[1:]:
        raise ValueError(f"reference {ref.shape} must have one sample's shape {sample.shape[1:]}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}")
    cls = np.asarray(classes, int).reshape(-1)
    if len(cls) != len(sample):
        raise ValueError(f"{len(cls)} classes for {len(sample)} samples")
    n, n_pix = len(sample), heat[0].size
    ranks = _orders(heat, seed)
    fractions = np.linspace(0.0, 1.0, steps + 1)
    counts = np.round(fractions * n_pix).astype(int)
    flat_x = sample.reshape(n, n_pix, -1)
    flat_ref = ref.reshape(1, n_pix, -1)
    jobs = [(i, k, mode) for i in range(n) for mode in (0, 1) for k in range(steps + 1)]
    scores = np.empty(len(jobs))
    for start in range(0, len(jobs), chunk):
        part = jobs[start : start + chunk]
        batch = np.empty((len(part), n_pix, flat_x.shape[2]), np.float32)
        for j, (i, k, mode) in enumerate(part):
            removed = (ranks[i] < counts[k])[:, None]
            if mode == 0:  # deletion: the top-k positions become the reference
                batch[j] = np.where(removed, flat_ref[0], flat_x[i])
            else:  # insertion: start from the reference, reveal the top-k positions
                batch[j] = np.where(removed, flat_x[i], flat_ref[0])
        scores[start : start + len(part)] = _class_scores(
            predict_fn, batch.reshape(len(part), *sample.shape[1:]), cls[[p[0] for p in part]]
        )
    curves = scores.reshape(n, 2, steps + 1)
    deletion, insertion = curves[:, 0], curves[:, 1]
    return {
        "fractions": fractions,
        "deletion": deletion,
        "insertion": insertion,
        "deletion_auc": np.trapezoid(deletion, fractions, axis=1),
        "insertion_auc": np.trapezoid(insertion, fractions, axis=1),
        "removal_shift": deletion[:, 0] - deletion[:, -1],
    }


def faithfulness_summary(curves: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Mean AUCs of a method and of the smooth-random baseline on the same samples, and ratios.

    Args:
        curves: :func:`deletion_insertion` of the method's maps.
        baseline: :func:`deletion_insertion` of :func:`smooth_random_maps` on the same samples.

    Returns:
        JSON-ready dict: ``deletion_auc``, ``insertion_auc``, the baseline's two AUCs,
        ``deletion_ratio`` (method / baseline, below 1 is better), ``insertion_ratio`` (above 1
        is better), ``margin`` = ``(1 - deletion_ratio) + (insertion_ratio - 1)``, mean curves,
        ``removal_shift`` (mean score move from sample to reference) and ``n``.
    """
    d, i = float(np.mean(curves["deletion_auc"])), float(np.mean(curves["insertion_auc"]))
    bd, bi = float(np.mean(baseline["deletion_auc"])), float(np.mean(baseline["insertion_auc"]))
    d_ratio = d / bd if bd > 0 else float("nan")
    i_ratio = i / bi if bi > 0 else float("nan")
    return {
        "n": int(len(curves["deletion_auc"])),
        "deletion_auc": d,
        "insertion_auc": i,
        "baseline_deletion_auc": bd,
        "baseline_insertion_auc": bi,
        "deletion_ratio": d_ratio,
        "insertion_ratio": i_ratio,
        "margin": (1.0 - d_ratio) + (i_ratio - 1.0),
        "removal_shift": float(np.mean(curves["removal_shift"])),
        "fractions": np.asarray(curves["fractions"]).round(4).tolist(),
        "deletion_curve": np.mean(curves["deletion"], axis=0).round(4).tolist(),
        "insertion_curve": np.mean(curves["insertion"], axis=0).round(4).tolist(),
    }


# --------------------------------------------------------------------------------------------
# ROAD: noisy linear imputation, rank-agnostic
# --------------------------------------------------------------------------------------------
def _offsets(rank: int) -> list[tuple[tuple[int, ...], float]]:
    # ROAD's 2D weights are 1/6 for the 4 direct and 1/12 for the 4 diagonal neighbours, i.e.
    # proportional to 1 / (L1 length of the offset); the same rule gives the 3D neighbourhood.
    offs = [o for o in itertools.product((-1, 0, 1), repeat=rank) if any(o)]
    return [(o, 1.0 / sum(abs(c) for c in o)) for o in offs]


def noisy_linear_impute(
    sample: np.ndarray, removed: np.ndarray, noise: float = 0.01, seed: int = 0
) -> np.ndarray:
    """Fill the removed positions from their neighbours (ROAD's noisy linear imputation).

    Each removed value is the weighted mean of its in-bounds neighbours (removed neighbours are
    unknowns too, so one sparse linear system is solved), plus Gaussian noise.

    Args:
        sample: One input ``(*spatial, C)``.
        removed: Boolean ``spatial`` mask of positions to impute.
        noise: Standard deviation of the added noise.
        seed: Noise seed.

    Returns:
        float32 copy of ``sample`` with the removed positions imputed.
    """
    from scipy import sparse
    from scipy.sparse.linalg import cg, spsolve

    arr = np.asarray(sample, np.float32)
    spatial = arr.shape[:-1]
    mask = np.asarray(removed, bool)
    if mask.shape != spatial:
        raise ValueError(f"removed {mask.shape} must have the spatial shape {spatial}")
    flat = arr.reshape(-1, arr.shape[-1]).astype(np.float64)
    var = np.flatnonzero(mask.ravel())
    if var.size == 0:
        return arr.copy()
    var_id = -np.ones(flat.shape[0], int)
    var_id[var] = np.arange(var.size)
    coords = np.array(np.unravel_index(var, spatial))  # (rank, n_var)
    rows, cols, vals = [], [], []
    diag = np.zeros(var.size)
    rhs = np.zeros((var.size, flat.shape[1]))
    for off, weight in _offsets(len(spatial)):
        nb = coords + np.array(off)[:, None]
        ok = np.all((nb >= 0) & (nb < np.array(spatial)[:, None]), axis=0)
        nb_flat = np.ravel_multi_index(tuple(nb[:, ok]), spatial)
        idx = np.flatnonzero(ok)
        diag[idx] += weight
        unknown = var_id[nb_flat] >= 0
        rows.append(idx[unknown])
        cols.append(var_id[nb_flat[unknown]])
        vals.append(np.full(unknown.sum(), -weight))
        rhs[idx[~unknown]] += weight * flat[nb_flat[~unknown]]
    a = sparse.csc_matrix(
        (
            np.concatenate([diag, *vals]),
            (
                np.concatenate([np.arange(var.size), *rows]),
                np.concatenate([np.arange(var.size), *cols]),
            ),
        ),
        shape=(var.size, var.size),
    )
    if var.size <= _DIRECT_SOLVE_MAX:
        solved = np.asarray(spsolve(a, rhs)).reshape(var.size, -1)
    else:
        # SuperLU's fill-in explodes on 3D grids (measured: 28^3 volume, 90 % removed: 28 s
        # per solve); the system is symmetric positive definite, so conjugate gradients with a
        # Jacobi preconditioner solve it in well under a second.
        precond = sparse.diags(1.0 / diag)
        solved = np.stack(
            [cg(a, rhs[:, c], rtol=1e-3, maxiter=1000, M=precond)[0] for c in range(rhs.shape[1])],
            axis=1,
        )
    rng = np.random.default_rng(seed)
    out = flat.copy()
    out[var] = solved + noise * rng.standard_normal(solved.shape)
    return out.reshape(arr.shape).astype(np.float32)


def road_curves(
    predict_fn: PredictFn,
    x: np.ndarray,
    maps: np.ndarray,
    classes: Sequence[int],
    fractions: Sequence[float] = ROAD_FRACTIONS,
    noise: float = 0.01,
    seed: int = 0,
) -> dict[str, Any]:
    """ROAD: class probability after imputing the most (MoRF) or least (LeRF) relevant positions.

    Args:
        predict_fn: Batch -> probabilities.
        x: Samples ``(N, *spatial, C)``.
        maps: Maps ``(N, *spatial)``.
        classes: Class tracked per sample.
        fractions: Fractions of positions removed.
        noise: Imputation noise (ROAD's default 0.01 on [0, 1] inputs).
        seed: Seed for ties and noise.

    Returns:
        ``{"fractions", "morf", "lerf"}`` mean curves and ``morf_auc``/``lerf_auc`` (mean over
        the fractions; MoRF lower and LeRF higher = more faithful), ``n``.
    """
    sample, heat = _check_maps(x, maps)
    cls = np.asarray(classes, int).reshape(-1)
    fr = np.asarray(fractions, float)
    if fr.size == 0 or np.any((fr <= 0) | (fr >= 1)):
        raise ValueError(f"fractions must lie strictly between 0 and 1; got {list(fr)}")
    ranks = _orders(heat, seed)
    n_pix = heat[0].size
    batch, owners = [], []
    for i in range(len(sample)):
        for j, f in enumerate(fr):
            k = int(round(f * n_pix))
            for lerf in (False, True):
                removed = ranks[i] >= n_pix - k if lerf else ranks[i] < k
                seed_ij = seed + 7919 * i + 2 * j + int(lerf)
                batch.append(
                    noisy_linear_impute(sample[i], removed.reshape(heat.shape[1:]), noise, seed_ij)
                )
                owners.append(cls[i])
    scores = _class_scores(predict_fn, np.stack(batch), np.asarray(owners)).reshape(
        len(sample), len(fr), 2
    )
    morf, lerf = scores[..., 0].mean(axis=0), scores[..., 1].mean(axis=0)
    return {
        "n": int(len(sample)),
        "fractions": fr.round(4).tolist(),
        "morf": morf.round(4).tolist(),
        "lerf": lerf.round(4).tolist(),
        "morf_auc": float(morf.mean()),
        "lerf_auc": float(lerf.mean()),
    }
