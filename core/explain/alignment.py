"""Does the attention hit the anatomy? Masks, energy in mask, deletion curves, per-run scores.

``compute_alignment_run`` writes a run's ``explain.json`` (read by the app and the report);
``python -m core.explain RUN`` calls it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tf_keras as keras

from core import registry
from core.explain.gradcam import METHODS, grad_cam, validate_input
from core.explain.layers import _resolve_layer
from core.explain.occlusion import keras_predict_fn
from core.models import prepare_input
from core.runs import load_run_for_eval

# Datasets whose anatomy can be segmented from the image itself (see anatomy_mask).
MASK_FLAGS = ("adrenalmnist3d", "vesselmnist3d", "retinamnist")


def _fundus_mask(image: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    grey = image.mean(axis=-1) if image.ndim == 3 else image
    # Fundus photographs sit on a black background; a threshold at 10% of the brightest pixel
    # separates the illuminated disk, and the largest component drops corner noise.
    mask = grey > 0.1 * max(float(grey.max()), 1e-6)
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.zeros(grey.shape, bool)
    sizes = ndimage.sum(mask, labels, index=range(1, n + 1))
    mask = labels == (int(np.argmax(sizes)) + 1)
    return ndimage.binary_fill_holes(mask)


def anatomy_mask(x: np.ndarray, flag: str) -> np.ndarray:
    """Anatomy mask computed from the image itself.

    AdrenalMNIST3D and VesselMNIST3D are binary shape masks, so the organ is the volume above
    0.5, dilated by one voxel (heat on the organ boundary counts as on the organ). For
    RetinaMNIST the fundus disk is the largest bright connected region, holes filled.

    Args:
        x: One sample ``(*spatial, C)`` or a batch ``(N, *spatial, C)`` with values in [0, 1].
        flag: MedMNIST dataset flag.

    Returns:
        Boolean mask without the channel axis (batch kept if given).

    Raises:
        ValueError: For a dataset without a defined anatomy mask.
    """
    from scipy import ndimage

    flag = flag.lower()
    arr = np.asarray(x, np.float32)
    if flag in ("adrenalmnist3d", "vesselmnist3d"):
        if arr.ndim == 4:
            return ndimage.binary_dilation(arr[..., 0] > 0.5, iterations=1)
        if arr.ndim == 5:
            return np.stack([anatomy_mask(v, flag) for v in arr])
        raise ValueError(f"{flag} expects (D, H, W, 1) volumes; got shape {arr.shape}")
    if flag == "retinamnist":
        if arr.ndim == 3:
            return _fundus_mask(arr)
        if arr.ndim == 4:
            return np.stack([_fundus_mask(img) for img in arr])
        raise ValueError(f"{flag} expects (H, W, 3) images; got shape {arr.shape}")
    raise ValueError(f"no anatomy mask is defined for {flag!r}; supported: {MASK_FLAGS}")


def energy_in_mask(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Share of the heatmap's total energy that falls inside ``mask``.

    A uniform heatmap scores the mask's area fraction, so report the two side by side.

    Args:
        heatmap: Non-negative map.
        mask: Boolean mask of the same shape.

    Returns:
        Value in [0, 1]; NaN when the heatmap is all zero.
    """
    heat = np.asarray(heatmap, np.float64)
    m = np.asarray(mask, bool)
    if heat.shape != m.shape:
        raise ValueError(f"heatmap {heat.shape} and mask {m.shape} differ in shape")
    heat = np.clip(heat, 0.0, None)
    total = heat.sum()
    if total <= 0:
        return float("nan")
    return float(heat[m].sum() / total)


def deletion_curve(
    predict_fn: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    heatmap: np.ndarray,
    class_index: int,
    steps: int = 10,
    baseline: float = 0.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Class score as pixels/voxels are removed, most-salient first vs random order.

    A faithful heatmap makes the score fall faster than random removal (smaller area).

    Args:
        predict_fn: Maps a batch ``(B, *spatial, C)`` to class scores ``(B, n_classes)``.
        x: One sample ``(*spatial, C)``.
        heatmap: Its map with shape ``spatial``.
        class_index: Class whose score is tracked.
        steps: Number of removal steps (fractions 0, 1/steps, ..., 1).
        baseline: Value written into removed positions.
        seed: Seed for the random order and for breaking ties in the heatmap.

    Returns:
        ``{"fractions", "salient", "random", "auc_salient", "auc_random"}`` (lists and floats).
    """
    sample = np.asarray(x, np.float32)
    heat = np.asarray(heatmap, np.float32)
    if heat.shape != sample.shape[:-1]:
        raise ValueError(f"heatmap {heat.shape} does not match sample spatial shape {sample.shape}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    rng = np.random.default_rng(seed)
    n_pix = heat.size
    # Ties (e.g. the zero region of a ReLU'd map) are broken randomly, not in raster order.
    salient_order = np.lexsort((rng.random(n_pix), -heat.ravel()))
    random_order = rng.permutation(n_pix)
    fractions = np.linspace(0.0, 1.0, steps + 1)
    batch = []
    for order in (salient_order, random_order):
        for frac in fractions:
            img = sample.reshape(n_pix, -1).copy()
            img[order[: int(round(frac * n_pix))]] = baseline
            batch.append(img.reshape(sample.shape))
    scores = np.asarray(predict_fn(np.stack(batch)))[:, class_index]
    salient, rand = scores[: steps + 1], scores[steps + 1 :]
    return {
        "fractions": fractions.tolist(),
        "salient": salient.astype(float).tolist(),
        "random": rand.astype(float).tolist(),
        "auc_salient": float(np.trapezoid(salient, fractions)),
        "auc_random": float(np.trapezoid(rand, fractions)),
    }


def _nanmean(values: Sequence[float]) -> float | None:
    arr = np.asarray(values, np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if arr.size else None


def alignment_summary(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray | None,
    flag: str,
    n: int = 100,
    method: str = "gradcam",
    layer_name: str | None = None,
    steps: int = 10,
    seed: int = 0,
    mask_x: np.ndarray | None = None,
) -> dict[str, Any]:
    """Alignment numbers for one model over (a sample of) a split.

    Args:
        model: The flat tf-keras model.
        x: Model-ready inputs ``(N, *spatial, C)``.
        y: Labels ``(N, L)`` (only used to report how many explained predictions were right).
        flag: Dataset flag; energy-in-mask is reported only for :data:`MASK_FLAGS`.
        n: Number of samples (a seeded random subset when ``N > n``).
        method: ``"gradcam"`` or ``"gradcam++"``.
        layer_name: Grad-CAM layer (default: :func:`default_layer`).
        steps: Deletion-curve steps.
        seed: Seed for the subset and the random deletion order.
        mask_x: Images to build the anatomy mask from, if they differ from ``x`` (e.g. grey
            originals of RGB-converted inputs); same order and spatial shape.

    Returns:
        A JSON-serialisable dict: means of energy-in-mask and mask area (the uniform-heatmap
        score), deletion areas and mean curves, and counts.
    """
    arr = validate_input(model, x)
    rng = np.random.default_rng(seed)
    idx = np.arange(len(arr))
    if len(arr) > n:
        idx = np.sort(rng.choice(len(arr), size=n, replace=False))
    sub = arr[idx]
    layer = _resolve_layer(model, layer_name)
    heat, classes = grad_cam(model, sub, layer, method=method, return_classes=True)
    predict = keras_predict_fn(model)

    energy, area = [], []
    has_mask = flag.lower() in MASK_FLAGS
    if has_mask:
        masks = anatomy_mask(sub if mask_x is None else np.asarray(mask_x)[idx], flag)
        for h, m in zip(heat, masks, strict=True):
            energy.append(energy_in_mask(h, m))
            area.append(float(m.mean()))

    curves = [
        deletion_curve(predict, s, h, int(c), steps=steps, seed=seed + i)
        for i, (s, h, c) in enumerate(zip(sub, heat, classes, strict=True))
    ]
    correct = None
    if y is not None:
        y_sub = np.asarray(y)[idx]
        if y_sub.ndim == 2 and y_sub.shape[1] == 1:
            correct = int(np.sum(y_sub[:, 0] == classes))
    zero_maps = int(np.sum(heat.reshape(len(heat), -1).max(axis=1) <= 0))
    return {
        "flag": flag,
        "method": method,
        "layer": layer,
        "n": len(idx),
        "zero_maps": zero_maps,
        "correct_predictions": correct,
        "energy_in_mask_mean": _nanmean(energy) if has_mask else None,
        "mask_area_mean": _nanmean(area) if has_mask else None,
        "energy_over_area": (
            _nanmean(energy) / _nanmean(area)
            if has_mask and _nanmean(energy) is not None and _nanmean(area)
            else None
        ),
        "deletion_fractions": curves[0]["fractions"],
        "deletion_salient_mean": np.mean([c["salient"] for c in curves], axis=0).tolist(),
        "deletion_random_mean": np.mean([c["random"] for c in curves], axis=0).tolist(),
        "deletion_auc_salient_mean": float(np.mean([c["auc_salient"] for c in curves])),
        "deletion_auc_random_mean": float(np.mean([c["auc_random"] for c in curves])),
    }


def compute_alignment_run(
    run_dir: str | Path,
    n: int = 100,
    methods: Sequence[str] = METHODS,
    split: str = "test",
    steps: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """Compute alignment summaries for a registered run and write ``<run>/explain.json``.

    Args:
        run_dir: Run directory (see core.registry).
        n: Samples of the split to explain.
        methods: Subset of :data:`METHODS`.
        split: Data split to use.
        steps: Deletion-curve steps.
        seed: Sampling seed.

    Returns:
        The dict written to ``explain.json``.
    """
    run = registry.resolve_run(run_dir, allow_outside=True)
    # the masks are built from the images as stored (grey originals for a VGG16's RGB input)
    config, model, x_raw, y = load_run_for_eval(run, split, prepare=False)
    flag, family = config["dataset"], config["model"]
    x = prepare_input(family, x_raw)
    summaries = {
        method: alignment_summary(
            model, x, y, flag, n=n, method=method, steps=steps, seed=seed, mask_x=x_raw
        )
        for method in methods
    }
    result = {"run": run.name, "dataset": flag, "model": family, "split": split, **summaries}
    registry.write_json_atomic(run / "explain.json", result)
    return result
