"""Gradient-free explanations: occlusion sensitivity, and a Keras model as a ``predict_fn``.

Occlusion needs only forward passes, so it explains a deployed TFLite model as well as the
float Keras model, and comparing the two maps shows what quantization changed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf
import tf_keras as keras

from core.explain.base import Attribution, register


def occlusion_map(
    predict_fn: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    class_index: int | None = None,
    patch: int = 4,
    stride: int | None = None,
    baseline: float = 0.0,
    batch_size: int = 128,
) -> np.ndarray:
    """Occlusion sensitivity: how much the class score drops when a patch is blanked.

    Needs only forward passes, so it explains a deployed TFLite model as well
    (pass ``TFLiteModel(...).predict``).

    Args:
        predict_fn: Maps a batch ``(B, *spatial, C)`` to scores ``(B, n_classes)``.
        x: One sample ``(*spatial, C)`` (2D image or 3D volume).
        class_index: Class to explain; ``None`` = the predicted class.
        patch: Patch edge length in pixels/voxels.
        stride: Step between patches (default ``patch``).
        baseline: Value written into the occluded patch.
        batch_size: Occluded copies per ``predict_fn`` call.

    Returns:
        float32 map of shape ``spatial``: mean score drop of the patches covering each position
        (positive = evidence for the class).
    """
    sample = np.asarray(x, np.float32)
    spatial = sample.shape[:-1]
    if len(spatial) not in (2, 3):
        raise ValueError(
            f"x must be one (H, W, C) image or (D, H, W, C) volume; got {sample.shape}"
        )
    if patch < 1:
        raise ValueError(f"patch must be >= 1, got {patch}")
    stride = patch if stride is None else int(stride)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    base_scores = np.asarray(predict_fn(sample[None]))[0]
    cls = int(np.argmax(base_scores)) if class_index is None else int(class_index)
    if not 0 <= cls < base_scores.shape[-1]:
        raise ValueError(f"class_index {cls} out of range 0..{base_scores.shape[-1] - 1}")
    starts = [
        sorted({*range(0, max(size - patch, 0) + 1, stride), max(size - patch, 0)})
        for size in spatial
    ]
    corners = np.array(np.meshgrid(*starts, indexing="ij")).reshape(len(spatial), -1).T
    drop = np.zeros(spatial, np.float64)
    count = np.zeros(spatial, np.float64)
    for start in range(0, len(corners), batch_size):
        chunk = corners[start : start + batch_size]
        batch = np.repeat(sample[None], len(chunk), axis=0)
        windows = [tuple(slice(c, c + patch) for c in corner) for corner in chunk]
        for i, win in enumerate(windows):
            batch[(i, *win)] = baseline
        scores = np.asarray(predict_fn(batch))[:, cls]
        for win, score in zip(windows, scores, strict=True):
            drop[win] += base_scores[cls] - score
            count[win] += 1.0
    return (drop / np.maximum(count, 1.0)).astype(np.float32)


def occlusion_agreement(map_a: np.ndarray, map_b: np.ndarray) -> float:
    """Pearson correlation between two maps of the same shape (NaN if either is constant)."""
    a = np.asarray(map_a, np.float64).ravel()
    b = np.asarray(map_b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"maps differ in size: {np.shape(map_a)} vs {np.shape(map_b)}")
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def keras_predict_fn(model: keras.Model, batch_size: int = 256) -> Callable:
    """A compiled ``predict_fn`` (batch -> probabilities as numpy) for a Keras model."""
    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
    call = tf.function(lambda t: model(t, training=False), input_signature=[spec])

    def predict(batch: np.ndarray) -> np.ndarray:
        arr = np.asarray(batch, np.float32)
        return np.concatenate(
            [call(arr[i : i + batch_size]).numpy() for i in range(0, len(arr), batch_size)]
        )

    return predict


@register
class Occlusion(Attribution):
    """:func:`occlusion_map` as an attribution method: the positive score drop, per sample.

    Not compiled as one graph: it is a loop of batched forward passes (the predict function is
    compiled). Default patch 4 px with stride 2 in 2D, 4 voxels with stride 4 in 3D (343
    occluded copies of a 28³ volume).
    """

    name = "occlusion"
    title = "Occlusion"
    help = (
        "Covers the image with a small grey-out square, one place at a time, and records how "
        "much the model's confidence in the class drops there. Slow but needs no gradients."
    )
    layers = "none"
    batch_size = 1
    defaults = {"patch": 4, "stride": None, "baseline": 0.0}

    def build(self, model: keras.Model, layers: tuple[str, ...], options: dict) -> Callable:
        predict = keras_predict_fn(model)
        spatial = len(model.input_shape) - 2
        patch = int(options["patch"])
        stride = options["stride"] or (patch if spatial == 3 else max(1, patch // 2))

        def fn(x: tf.Tensor, classes: tf.Tensor) -> tuple[np.ndarray, np.ndarray]:
            arr, wanted = np.asarray(x), np.asarray(classes)
            probs = predict(arr)
            targets = np.where(wanted < 0, probs.argmax(-1), wanted).astype(np.int32)
            maps = [
                np.maximum(
                    occlusion_map(predict, sample, int(t), patch, int(stride), options["baseline"]),
                    0.0,
                )
                for sample, t in zip(arr, targets, strict=True)
            ]
            return np.stack(maps), targets

        return fn
