"""Sanity check (Adebayo et al. 2018): do the maps change when the model's weights are randomized?

The trained model's maps are compared with the maps of a copy whose weights are re-drawn,
from the top layer down (cascading randomization). A method whose maps stay the same after
the weights are gone is showing the image (edges, brightness), not what the model learned.

The comparison is the Spearman rank correlation per sample. Quantus 0.6.0's ``MPRT`` ran on
our tf-keras 2D and 3D models (measured), but it re-draws one layer per stage (16 stages for
VGG16; too slow for Score-CAM), needs Quantus' channel-first batches and its wheel pulls
``opencv-python`` next to our ``opencv-python-headless`` (both write ``cv2``); grouping the
cascade into a few stages is a few lines here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tf_keras as keras

# model, inputs -> maps (N, *spatial); the model argument lets one function explain both the
# trained model and its randomized copy.
ModelMapFn = Callable[[keras.Model, np.ndarray], np.ndarray]
# Share of the weighted layers randomized at each cascade stage, top down; the first stage is
# the top layer alone ("last layer"), the last is every layer.
CASCADE = (0.0, 0.5, 1.0)


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each pair of maps (NaN where a map is constant).

    Args:
        a: Maps ``(N, ...)``.
        b: Maps of the same shape.

    Returns:
        ``(N,)`` correlations in [-1, 1].
    """
    from scipy.stats import rankdata

    x = np.asarray(a, np.float64).reshape(len(a), -1)
    y = np.asarray(b, np.float64).reshape(len(b), -1)
    if x.shape != y.shape:
        raise ValueError(f"maps differ in shape: {np.shape(a)} vs {np.shape(b)}")
    rx, ry = rankdata(x, axis=1), rankdata(y, axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    denom = np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (rx * ry).sum(axis=1) / denom, np.nan)


def weighted_layers(model: keras.Model) -> list[str]:
    """Names of layers with a kernel (convolutions, dense), graph order."""
    return [layer.name for layer in model.layers if getattr(layer, "kernel", None) is not None]


def cascade_stages(model: keras.Model, shares: Sequence[float] = CASCADE) -> list[list[str]]:
    """Cumulative layer sets to randomize, top down: the top layer, then growing shares.

    Args:
        model: The model.
        shares: Fractions of the weighted layers (0 = the top layer alone, 1 = all).

    Returns:
        One list of layer names per distinct stage.
    """
    names = weighted_layers(model)[::-1]
    if not names:
        raise ValueError(f"model {model.name!r} has no layer with weights to randomize")
    stages: list[list[str]] = []
    for share in shares:
        k = max(1, int(round(share * len(names))))
        if not stages or len(stages[-1]) != k:
            stages.append(names[:k])
    return stages


def _randomize(layer: keras.layers.Layer, rng: np.random.Generator) -> None:
    # Re-draw kernel and bias from a normal with each tensor's own scale (Adebayo et al. re-init
    # with a truncated normal); a zero-std tensor (biases at init) gets the kernel's scale.
    weights = layer.get_weights()
    scale = max(float(np.std(weights[0])), 1e-3) if weights else 1e-3
    new = [rng.normal(0.0, max(float(np.std(w)), scale), w.shape).astype(w.dtype) for w in weights]
    layer.set_weights(new)


def randomization_test(
    model: keras.Model,
    map_fn: ModelMapFn,
    x: np.ndarray,
    shares: Sequence[float] = CASCADE,
    seed: int = 0,
    trained_maps: np.ndarray | None = None,
) -> dict[str, Any]:
    """Cascading model-parameter randomization: rank correlation of trained vs randomized maps.

    Args:
        model: The trained tf-keras model (left untouched; a clone is randomized).
        map_fn: ``(model, x) -> maps (N, *spatial)``.
        x: Inputs ``(N, *spatial, C)``.
        shares: Cascade stages (see :data:`CASCADE`).
        seed: Seed of the re-drawn weights.
        trained_maps: The trained model's maps if already computed.

    Returns:
        ``{"stages": [{"layers", "top_layer", "n_layers", "rank_correlation",
        "constant_maps"}...], "last_layer": float, "rank_correlation": float, "n": int}``.
        ``rank_correlation`` is the mean over stages of the per-sample mean Spearman
        correlation; lower = the maps depend on the weights (Adebayo's sanity check passes).

    Raises:
        ValueError: If the model has no weighted layer or maps have the wrong shape.
    """
    arr = np.asarray(x, np.float32)
    trained = np.asarray(map_fn(model, arr) if trained_maps is None else trained_maps)
    if trained.shape != arr.shape[:-1]:
        raise ValueError(f"map_fn returned {trained.shape}; expected {arr.shape[:-1]}")
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    rng = np.random.default_rng(seed)
    done: set[str] = set()
    stages = []
    for names in cascade_stages(model, shares):
        for name in names:
            if name not in done:
                _randomize(clone.get_layer(name), rng)
                done.add(name)
        rho = spearman_rows(trained, np.asarray(map_fn(clone, arr)))
        stages.append(
            {
                "n_layers": len(names),
                "top_layer": names[0],
                "bottom_layer": names[-1],
                # a constant map (e.g. all-zero CAM of the random model) shares no ranking with
                # the trained map: it counts as 0, and how many there were is reported
                "rank_correlation": float(np.mean(np.nan_to_num(rho, nan=0.0))),
                # an inverted map (strongly negative rho) still follows the image; shown apart
                "abs_rank_correlation": float(np.mean(np.abs(np.nan_to_num(rho, nan=0.0)))),
                "constant_maps": int(np.sum(~np.isfinite(rho))),
            }
        )
    return {
        "n": int(len(arr)),
        "stages": stages,
        "last_layer": stages[0]["rank_correlation"],
        "rank_correlation": float(np.mean([s["rank_correlation"] for s in stages])),
        "abs_rank_correlation": float(np.mean([s["abs_rank_correlation"] for s in stages])),
    }
