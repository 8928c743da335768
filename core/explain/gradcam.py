"""Grad-CAM and Grad-CAM++ for 2D and 3D classifiers, one rank-agnostic code path.

A feature map has shape ``(N, *spatial, C)`` and every reduction runs over
``range(1, ndim - 1)``, so the same functions serve images and volumes. The CAM methods differ
only in how they turn the layer's gradients and activations into one weight per channel (the
design of pytorch-grad-cam's ``BaseCAM.get_cam_weights``): a new method is one weight function
plus one entry in :data:`CAM_WEIGHTS`.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from core.explain.layers import _resolve_layer, _score_tensor

# model -> {(layer_name, method, compiled, upsample): callable}; weak keys, so the cached
# functions are freed with their model.
_FN_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------------
# Grad-CAM maths
# --------------------------------------------------------------------------------------------
def _upsample(cam: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """Resize ``(N, *grid)`` maps to ``size`` (bilinear in 2D, separable trilinear in 3D)."""
    rank = cam.shape.rank - 1
    if rank == 1:
        return tf.image.resize(cam[:, :, None, None], tf.stack([size[0], 1]))[:, :, 0, 0]
    if rank == 2:
        return tf.image.resize(cam[..., None], size)[..., 0]
    if rank == 3:
        shape = tf.shape(cam)
        n, d = shape[0], shape[1]
        # (N*d, h, w, 1) -> resize h, w; then (N, d, H*W, 1) -> resize d. Scale 1 along H*W with
        # half-pixel centres samples exactly on the grid, so this equals trilinear interpolation.
        hw = tf.image.resize(tf.reshape(cam, tf.concat([[n * d], shape[2:], [1]], 0)), size[1:])
        flat = tf.reshape(hw, tf.stack([n, d, size[1] * size[2], 1]))
        full = tf.image.resize(flat, tf.stack([size[0], size[1] * size[2]]))
        return tf.reshape(full, tf.concat([[n], size], 0))
    raise ValueError(f"cannot upsample maps with {rank} spatial dimensions")


def _corner_aligned_matrix(n_in: tf.Tensor, n_out: tf.Tensor) -> tf.Tensor:
    """``(n_out, n_in)`` linear-interpolation weights with the end points of both grids aligned."""
    step = tf.cast(n_in - 1, tf.float32) / tf.cast(tf.maximum(n_out - 1, 1), tf.float32)
    pos = tf.cast(tf.range(n_out), tf.float32) * step
    lo = tf.minimum(tf.cast(tf.floor(pos), tf.int32), n_in - 1)
    hi = tf.minimum(lo + 1, n_in - 1)
    frac = (pos - tf.cast(lo, tf.float32))[:, None]
    return tf.one_hot(lo, n_in) * (1.0 - frac) + tf.one_hot(hi, n_in) * frac


def _upsample_align_corners(cam: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    """Separable linear resize with corner alignment, the convention of
    ``scipy.ndimage.zoom(order=1)`` (and so of tf-keras-vis), for any number of spatial axes.

    Each pass contracts axis 1 with its interpolation matrix and appends the resized axis last,
    so after one pass per spatial axis they are back in order.
    """
    for k in range(cam.shape.rank - 1):
        weights = _corner_aligned_matrix(tf.shape(cam)[1], size[k])
        cam = tf.tensordot(cam, weights, axes=[[1], [1]])
    return cam


def _normalise(cam: tf.Tensor) -> tf.Tensor:
    # Divide by the per-sample maximum (not min-max): zero keeps meaning "no positive evidence",
    # and an all-zero map stays all zero instead of becoming NaN.
    axes = list(range(1, cam.shape.rank))
    peak = tf.reduce_max(cam, axis=axes, keepdims=True)
    return tf.math.divide_no_nan(cam, peak)


def gradcam_weights(grads: tf.Tensor, acts: tf.Tensor, axes: list[int]) -> tf.Tensor:
    """Grad-CAM channel weights: the spatial mean of the gradient (Selvaraju et al. 2017)."""
    return tf.reduce_mean(grads, axis=axes, keepdims=True)


def gradcam_plus_plus_weights(grads: tf.Tensor, acts: tf.Tensor, axes: list[int]) -> tf.Tensor:
    """Grad-CAM++ channel weights: positive gradients weighted per position by ``alpha``."""
    # Grad-CAM++ (Chattopadhyay et al. 2018, eq. 19) with the exponential-score trick: with
    # Y = exp(S) the higher derivatives are exp(S) * g^2 and exp(S) * g^3. The exp(S) factor
    # cancels in alpha and only scales the weights, which the per-sample normalisation removes,
    # so it is left out (it overflows float32 for logits above ~88).
    g2 = tf.square(grads)
    g3 = g2 * grads
    global_sum = tf.reduce_sum(acts, axis=axes, keepdims=True)
    denom = 2.0 * g2 + g3 * global_sum
    denom = denom + tf.cast(tf.equal(g2, 0.0), denom.dtype)
    alphas = g2 / denom
    norm = tf.reduce_sum(alphas, axis=axes, keepdims=True)
    alphas = alphas / (norm + tf.cast(tf.equal(norm, 0.0), norm.dtype))
    return tf.reduce_sum(alphas * tf.nn.relu(grads), axis=axes, keepdims=True)


# method name -> weight function ``(grads, acts, axes) -> (N, 1, ..., 1, C)``. ``grads`` and
# ``acts`` are ``(N, *spatial, C)``; ``axes`` are the spatial axes. The map is then
# ReLU(sum_c weight_c * acts_c), upsampled and divided by its maximum, whatever the method.
# A new method is one function here plus one entry: grad_cam(method=...), METHODS, the
# alignment scores and the CLI pick it up.
CAM_WEIGHTS: dict[str, Callable[[tf.Tensor, tf.Tensor, list[int]], tf.Tensor]] = {
    "gradcam": gradcam_weights,
    "gradcam++": gradcam_plus_plus_weights,
}
METHODS = tuple(CAM_WEIGHTS)


def _build_fn(
    model: keras.Model, layer_name: str, method: str, compiled: bool, upsample: str | None
) -> Callable:
    grad_model = keras.Model(
        model.inputs, [model.get_layer(layer_name).output, _score_tensor(model)]
    )
    rank = len(model.input_shape)

    def cam_fn(x: tf.Tensor, class_idx: tf.Tensor, out_size: tf.Tensor):
        with tf.GradientTape() as tape:
            acts, logits = grad_model(x, training=False)
            predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
            target = tf.where(class_idx < 0, predicted, class_idx)
            score = tf.gather(logits, target, batch_dims=1)
        # Samples are independent in inference mode, so the gradient of the summed score gives
        # every sample its own gradient in one backward pass.
        grads = tape.gradient(score, acts)
        axes = list(range(1, rank - 1))
        weights = CAM_WEIGHTS[method](grads, acts, axes)
        cam = tf.nn.relu(tf.reduce_sum(weights * acts, axis=-1))
        if upsample == "bilinear":
            cam = _upsample(cam, out_size)
        elif upsample == "align_corners":
            cam = _upsample_align_corners(cam, out_size)
        return _normalise(cam), target

    if not compiled:
        return cam_fn
    # The concrete function skips tf.function's per-call signature matching (~1 ms here).
    return tf.function(
        cam_fn,
        input_signature=[
            tf.TensorSpec((None, *model.input_shape[1:]), tf.float32),
            tf.TensorSpec((None,), tf.int32),
            tf.TensorSpec((rank - 2,), tf.int32),
        ],
    ).get_concrete_function()


def _get_fn(
    model: keras.Model, layer_name: str, method: str, compiled: bool, upsample: str | None
) -> Callable:
    with _CACHE_LOCK:
        per_model = _FN_CACHE.setdefault(model, {})
        key = (layer_name, method, compiled, upsample)
        if key not in per_model:
            per_model[key] = _build_fn(model, layer_name, method, compiled, upsample)
        return per_model[key]


UPSAMPLE_MODES = ("bilinear", "align_corners")


def _upsample_mode(upsample: bool | str) -> str | None:
    if upsample is True:
        return "bilinear"
    if upsample is False or upsample is None:
        return None
    if upsample not in UPSAMPLE_MODES:
        raise ValueError(
            f"upsample={upsample!r} is not supported; use True/False or one of {UPSAMPLE_MODES}"
        )
    return upsample


def _num_scores(model: keras.Model) -> int:
    return int(_score_tensor(model).shape[-1])


def validate_input(model: keras.Model, x: Any) -> np.ndarray:
    """Check that ``x`` is a finite batch the model accepts; return it as float32.

    Args:
        model: The tf-keras model.
        x: Array of shape ``model.input_shape`` with a batch axis.

    Returns:
        ``x`` as a float32 numpy array.

    Raises:
        ValueError: On wrong rank, spatial size, channel count, or non-finite values.
    """
    arr = np.asarray(x)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"input must be a numeric array, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    expected = tuple(model.input_shape)
    if arr.ndim != len(expected):
        raise ValueError(
            f"input has shape {arr.shape} but model {model.name!r} expects a batch of shape "
            f"{expected} (batch first, channels last)"
        )
    if expected[-1] is not None and arr.shape[-1] != expected[-1]:
        hint = (
            " (convert grey images to RGB with core.models.prepare_input)"
            if expected[-1] == 3 and arr.shape[-1] == 1
            else ""
        )
        raise ValueError(
            f"input has {arr.shape[-1]} channel(s) but model {model.name!r} expects "
            f"{expected[-1]}{hint}"
        )
    for axis, (got, want) in enumerate(zip(arr.shape[1:-1], expected[1:-1], strict=True), 1):
        if want is not None and got != want:
            raise ValueError(
                f"input has size {got} on axis {axis} but model {model.name!r} expects "
                f"{want}: input shape {arr.shape}, model input {expected}"
            )
    if arr.shape[0] == 0:
        raise ValueError("input batch is empty")
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"input contains {bad} NaN or infinite value(s)")
    return arr


def _class_indices(class_index: Any, n: int, n_classes: int) -> np.ndarray:
    if class_index is None:
        return np.full((n,), -1, np.int32)
    idx = np.asarray(class_index)
    if idx.dtype == bool or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"class_index must be None, an int or an int array, got {class_index!r}")
    if idx.ndim == 0:
        idx = np.full((n,), int(idx))
    elif idx.shape != (n,):
        raise ValueError(f"class_index has shape {idx.shape}; expected a scalar or shape ({n},)")
    bad = idx[(idx < 0) | (idx >= n_classes)]
    if bad.size:
        raise ValueError(
            f"class_index {bad.tolist()[:5]} out of range: the model scores {n_classes} "
            f"classes/labels (0..{n_classes - 1})"
        )
    return idx.astype(np.int32)


def grad_cam(
    model: keras.Model,
    x: Any,
    layer_name: str | None = None,
    class_index: Any = None,
    *,
    method: str = "gradcam",
    upsample: bool | str = True,
    batch_size: int = 64,
    compiled: bool = True,
    return_classes: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Grad-CAM heatmaps for a batch of 2D images or 3D volumes.

    The class score is the ``logits`` layer output (before softmax). The gradient function is
    built once per (model, layer, method) and compiled, so repeated calls cost one forward and
    one backward pass.

    Args:
        model: A flat tf-keras model (no nested models).
        x: Batch ``(N, H, W, C)`` or ``(N, D, H, W, C)`` matching ``model.input_shape``.
        layer_name: Feature-map layer; default :func:`default_layer` (activation of the last
            convolution). Any name from :func:`spatial_layers` works.
        class_index: ``None`` for the predicted class, an int for one class (a label index for
            multi-label models), or an int array of shape ``(N,)``.
        method: One of :data:`METHODS` (``"gradcam"``, ``"gradcam++"``).
        upsample: Resize to the input grid. ``True`` or ``"bilinear"``: bilinear 2D / trilinear
            3D with half-pixel centres, so each grid cell stays over the pixels it pools (the
            default). ``"align_corners"``: linear with the first and last cells pinned to the
            image corners, the ``scipy.ndimage.zoom(order=1)`` convention of tf-keras-vis (use
            it to compare with that library). ``False`` returns the map on the layer's grid.
        batch_size: Samples per gradient pass.
        compiled: Run under ``tf.function`` (``False`` runs eagerly, for benchmarks).
        return_classes: Also return the class index each map explains.

    Returns:
        float32 heatmaps of shape ``(N, *spatial)`` in [0, 1], each divided by its maximum; with
        ``return_classes`` a tuple ``(heatmaps, classes)``.

    Raises:
        ValueError: For an unknown method or layer, a nested model, bad input or class index.

    Example (2D)::

        import numpy as np
        from core.explain import grad_cam, overlay
        from core.models import build_model

        model = build_model("cnn2d", (28, 28, 3), 5, "multi-class")
        x = np.random.rand(4, 28, 28, 3).astype(np.float32)
        heat = grad_cam(model, x)  # (4, 28, 28): predicted class, last conv activation
        picture = overlay(x[0], heat[0], contour_quantile=0.9)  # (28, 28, 3) uint8

    Example (3D, same call)::

        from core.explain import overlay_slice

        model = build_model("cnn3d", (28, 28, 28, 1), 2, "binary-class")
        vol = np.random.rand(2, 28, 28, 28, 1).astype(np.float32)
        heat, classes = grad_cam(model, vol, class_index=1, method="gradcam++",
                                 return_classes=True)  # heat (2, 28, 28, 28), classes [1, 1]
        axial = overlay_slice(vol[0, ..., 0], heat[0], axis=0, index=14)  # (28, 28, 3) uint8
    """
    if method not in CAM_WEIGHTS:
        raise ValueError(
            f"Grad-CAM method {method!r} is not supported; choose one of {tuple(CAM_WEIGHTS)}"
        )
    layer = _resolve_layer(model, layer_name)
    arr = validate_input(model, x)
    classes = _class_indices(class_index, arr.shape[0], _num_scores(model))
    fn = _get_fn(model, layer, method, compiled, _upsample_mode(upsample))
    out_size = tf.constant(arr.shape[1:-1], tf.int32)
    maps, targets = [], []
    for start in range(0, arr.shape[0], max(1, int(batch_size))):
        stop = start + max(1, int(batch_size))
        cam, target = fn(tf.constant(arr[start:stop]), tf.constant(classes[start:stop]), out_size)
        maps.append(cam.numpy())
        targets.append(target.numpy())
    heat = np.concatenate(maps).astype(np.float32)
    if return_classes:
        return heat, np.concatenate(targets)
    return heat


def grad_cam_plus_plus(
    model: keras.Model,
    x: Any,
    layer_name: str | None = None,
    class_index: Any = None,
    **kwargs: Any,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Grad-CAM++ heatmaps; same arguments and output as :func:`grad_cam`."""
    return grad_cam(model, x, layer_name, class_index, method="gradcam++", **kwargs)
