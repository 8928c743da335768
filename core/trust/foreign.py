"""Foreign (out-of-distribution) image sets and the conversion of any image to a model's input.

Real foreign sets are other MedMNIST datasets converted to the model's input format (grey to
RGB, resized); synthetic ones are derived from the in-distribution images of the same split:
noise, blank (constant), inverted and heavily blurred. Numpy, SciPy and core.data only.
"""

from __future__ import annotations

import os

import numpy as np
from scipy import ndimage

from core import data

# foreign MedMNIST datasets per in-distribution dataset (same dimensionality)
FOREIGN_DATASETS = {
    "retinamnist": ("pneumoniamnist", "breastmnist"),
    "adrenalmnist3d": ("vesselmnist3d",),
}
SYNTHETIC = ("noise", "blank", "inverted", "blurred")
BLUR_SIGMA = 3.0  # pixels at 28 px: the retina's vessels and the masks' edges are gone
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


def conform(x: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """Convert a batch to a model's input format: channel count, then spatial size.

    Args:
        x: ``(N, *spatial, C)`` float in [0, 1] (``core.data.load_split`` format).
        input_shape: the model's input shape without the batch axis, e.g. ``(28, 28, 3)``.

    Returns:
        float32 ``(N, *input_shape)``.

    Raises:
        ValueError: the rank differs (a 2D image for a 3D model or the reverse).
    """
    x = np.asarray(x, dtype=np.float32)
    want = tuple(int(d) for d in input_shape)
    if x.ndim != len(want) + 1:
        raise ValueError(
            f"images of shape {x.shape[1:]} cannot feed a model expecting {want}: "
            f"{'3D volumes' if len(want) == 4 else '2D images'} are needed"
        )
    if x.shape[-1] == 1 and want[-1] == 3:
        x = data.to_rgb(x)
    elif x.shape[-1] == 3 and want[-1] == 1:
        x = x.mean(axis=-1, keepdims=True)
    spatial = want[:-1]
    if tuple(x.shape[1:-1]) != spatial:
        if len(spatial) == 2 and spatial[0] == spatial[1]:
            x = data.resize(x, spatial[0])
        else:
            factors = (1.0, *(s / c for s, c in zip(spatial, x.shape[1:-1], strict=True)), 1.0)
            x = ndimage.zoom(x, factors, order=1)
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def synthetic(kind: str, x_in: np.ndarray, seed: int = 0) -> np.ndarray:
    """A synthetic foreign set of the same shape as ``x_in``.

    Args:
        kind: ``noise`` (uniform), ``blank`` (one random constant grey level per image,
            black to white), ``inverted`` (1 − x) or ``blurred`` (Gaussian, σ = 3 px).
        x_in: in-distribution images ``(N, *spatial, C)`` in [0, 1].
        seed: random seed for noise and blank.

    Raises:
        ValueError: unknown kind.
    """
    rng = np.random.default_rng(seed)
    x_in = np.asarray(x_in, dtype=np.float32)
    if kind == "noise":
        return rng.random(x_in.shape, dtype=np.float32)
    if kind == "blank":
        level = rng.random((len(x_in),) + (1,) * (x_in.ndim - 1), dtype=np.float32)
        return np.broadcast_to(level, x_in.shape).copy()
    if kind == "inverted":
        return 1.0 - x_in
    if kind == "blurred":
        sigma = (0.0, *([BLUR_SIGMA] * (x_in.ndim - 2)), 0.0)
        return ndimage.gaussian_filter(x_in, sigma=sigma).astype(np.float32)
    raise ValueError(f"synthetic set {kind!r} is not supported; choose one of {SYNTHETIC}")


def foreign_sets(
    dataset: str,
    split: str,
    x_in: np.ndarray,
    input_shape: tuple[int, ...],
    n: int = 300,
    root: str | os.PathLike | None = None,
) -> dict[str, np.ndarray]:
    """Every foreign set for ``dataset`` from ``split``, in the model's input format.

    Args:
        dataset: in-distribution flag (keys of ``FOREIGN_DATASETS``; others get synthetic sets).
        split: ``val`` to choose detectors, ``test`` to report.
        x_in: the in-distribution images of that split (for the synthetic sets).
        input_shape: model input shape (see :func:`conform`).
        n: at most this many images per set (a seeded random subset).
        root: MedMNIST folder.

    Returns:
        ``{name: (M, *input_shape)}``.
    """
    seed = SPLIT_SEEDS[split]
    rng = np.random.default_rng(seed)
    out = {}
    for flag in FOREIGN_DATASETS.get(dataset, ()):
        x, _ = data.load_split(flag, split, 28, root=root)
        if len(x) > n:
            x = x[np.sort(rng.choice(len(x), n, replace=False))]
        out[flag] = conform(x, input_shape)
    base = x_in[:n]
    for kind in SYNTHETIC:
        out[kind] = conform(synthetic(kind, base, seed), input_shape)
    return out
