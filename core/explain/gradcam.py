"""Explanations for 2D and 3D classifiers: Grad-CAM, Grad-CAM++, occlusion, alignment scores.

The maths is rank-agnostic: a feature map has shape ``(N, *spatial, C)`` and every reduction runs
over ``range(1, ndim - 1)``, so one code path serves images and volumes. Drawing (colormaps,
overlays, slices) lives in separate functions that take and return plain arrays.

Public entry points:
    grad_cam(model, x, layer_name=None, class_index=None) -> heatmaps in [0, 1]
    grad_cam_plus_plus(...)                               -> same, Grad-CAM++ weights
    occlusion_map(predict_fn, x, class_index, ...)        -> gradient-free map (works on TFLite)
    alignment_summary(model, x, y, flag, n=...)           -> "does attention hit anatomy?" numbers
    compute_alignment_run(run_dir)                        -> writes <run>/explain.json
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import threading  # noqa: E402
import weakref  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

METHODS = ("gradcam", "gradcam++")

# Layers that pass a convolution's feature map through without changing its grid. The default
# Grad-CAM layer follows the last convolution through these, because the raw (pre-BatchNorm,
# pre-ReLU) conv output of a trained 3D CNN gave all-zero maps while its activation did not.
_PASS_THROUGH = (
    keras.layers.BatchNormalization,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.PReLU,
    keras.layers.Add,
)

_CONV_TYPES = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
)

# Datasets whose anatomy can be segmented from the image itself (see anatomy_mask).
MASK_FLAGS = ("adrenalmnist3d", "vesselmnist3d", "retinamnist")

# model -> {(layer_name, method, compiled, upsample): callable}; weak keys, so the cached
# functions are freed with their model.
_FN_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()
# model -> {requested layer name or None: resolved layer name}
_LAYER_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


# --------------------------------------------------------------------------------------------
# Layer selection
# --------------------------------------------------------------------------------------------
def _is_conv(layer: keras.layers.Layer) -> bool:
    # Covers Conv1D/2D/3D, transposed, separable and depthwise convolutions.
    return isinstance(layer, _CONV_TYPES) or "conv" in type(layer).__name__.lower()


def _check_flat(model: keras.Model) -> None:
    nested = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
    if nested:
        raise ValueError(
            f"model {model.name!r} contains nested model layer(s) {nested}; Grad-CAM needs a flat "
            "graph. Build the model flat: call the inner model's layers on the outer tensors, "
            "e.g. VGG16(include_top=False, input_tensor=x) and continue from its .output."
        )


def _output_rank(layer: keras.layers.Layer) -> int | None:
    try:
        shape = layer.output_shape
    except (AttributeError, RuntimeError):
        return None
    if isinstance(shape, list):  # multi-output layers are never feature maps here
        return None
    return len(shape)


def spatial_layers(model: keras.Model) -> list[str]:
    """Names of the layers whose output is a spatial feature map ``(N, *spatial, C)``.

    Any of them can be passed as ``layer_name`` to :func:`grad_cam`.

    Args:
        model: A flat tf-keras model.

    Returns:
        Layer names in graph order.
    """
    rank = len(model.input_shape)
    return [
        layer.name
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer) and _output_rank(layer) == rank
    ]


def conv_layers(model: keras.Model) -> list[str]:
    """Names of the convolution layers of ``model`` in graph order."""
    return [layer.name for layer in model.layers if _is_conv(layer)]


def _consumers(model: keras.Model, layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    own = {id(candidate) for candidate in model.layers}
    return [
        node.outbound_layer
        for node in getattr(layer, "_outbound_nodes", [])
        if id(node.outbound_layer) in own
    ]


def default_layer(model: keras.Model) -> str:
    """The default Grad-CAM layer: the activation of the last convolution.

    Starts at the last conv layer and follows its single consumer through BatchNorm, activation
    and residual ``Add`` layers, stopping before pooling, flattening or dropout.

    Args:
        model: A flat tf-keras model with at least one convolution.

    Returns:
        The layer name.

    Raises:
        ValueError: If the model has no convolution layer.
    """
    _check_flat(model)
    convs = [layer for layer in model.layers if _is_conv(layer)]
    if not convs:
        raise ValueError(
            f"model {model.name!r} has no convolution layer; pass layer_name= one of "
            f"{spatial_layers(model)}"
        )
    rank = len(model.input_shape)
    layer = convs[-1]
    while True:
        nxt = _consumers(model, layer)
        if len(nxt) != 1 or not isinstance(nxt[0], _PASS_THROUGH):
            return layer.name
        if _output_rank(nxt[0]) != rank:
            return layer.name
        layer = nxt[0]


def _resolve_layer(model: keras.Model, layer_name: str | None) -> str:
    if layer_name is not None and not isinstance(layer_name, str):
        raise ValueError(f"layer_name must be a layer name (str) or None, got {layer_name!r}")
    # Walking the layers costs ~1 ms per call on this CPU, a fifth of an interactive Grad-CAM
    # budget; a model's graph never changes, so the answer is cached per (model, name).
    with _CACHE_LOCK:
        known = _LAYER_CACHE.setdefault(model, {})
        if layer_name in known:
            return known[layer_name]
    resolved = _resolve_layer_uncached(model, layer_name)
    with _CACHE_LOCK:
        known[layer_name] = resolved
    return resolved


def _resolve_layer_uncached(model: keras.Model, layer_name: str | None) -> str:
    _check_flat(model)
    if layer_name is None:
        return default_layer(model)
    candidates = spatial_layers(model)
    if layer_name not in candidates:
        convs = conv_layers(model)
        raise ValueError(
            f"layer {layer_name!r} is not a spatial layer of model {model.name!r}. "
            f"Convolution layers: {convs}. All layers with a spatial output: {candidates}"
        )
    return layer_name


def _score_tensor(model: keras.Model) -> tf.Tensor:
    # The class score must be taken before softmax: the softmax couples the classes, so its
    # gradient for one class mixes in every other class's evidence.
    try:
        return model.get_layer("logits").output
    except ValueError:
        pass
    last = model.layers[-1]
    if isinstance(last, keras.layers.Activation | keras.layers.Softmax):
        return last.input
    return model.output


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


def _cam_weights(method: str, grads: tf.Tensor, acts: tf.Tensor, axes: list[int]) -> tf.Tensor:
    if method == "gradcam":
        return tf.reduce_mean(grads, axis=axes, keepdims=True)
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
        weights = _cam_weights(method, grads, acts, axes)
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
        method: ``"gradcam"`` or ``"gradcam++"``.
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
    """
    if method not in METHODS:
        raise ValueError(f"Grad-CAM method {method!r} is not supported; choose one of {METHODS}")
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


# --------------------------------------------------------------------------------------------
# Drawing (kept apart from the maths)
# --------------------------------------------------------------------------------------------
def colorize(heatmap: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """Map a 2D heatmap in [0, 1] to uint8 RGB with a matplotlib colormap.

    Args:
        heatmap: ``(H, W)`` array; values are clipped to [0, 1].
        cmap: Matplotlib colormap name.

    Returns:
        ``(H, W, 3)`` uint8 array.
    """
    import matplotlib

    heat = np.clip(np.nan_to_num(np.asarray(heatmap, np.float32)), 0.0, 1.0)
    rgba = matplotlib.colormaps[cmap](heat)
    return (rgba[..., :3] * 255.0 + 0.5).astype(np.uint8)


def _to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"image must be (H, W), (H, W, 1) or (H, W, 3); got shape {img.shape}")
    if img.dtype != np.uint8:
        img = (np.clip(img.astype(np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return img


def _resize_2d(heat: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if heat.shape == shape:
        return heat
    return tf.image.resize(heat[None, ..., None], shape).numpy()[0, ..., 0]


def overlay(
    image: np.ndarray,
    heatmap: np.ndarray,
    alpha: float = 0.4,
    cmap: str = "jet",
    contour_quantile: float | None = None,
    contour_color: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """Blend a heatmap over an image, optionally outlining the hottest region.

    Args:
        image: ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)``; float in [0, 1] or uint8.
        heatmap: ``(h, w)`` in [0, 1]; resized to the image if needed.
        alpha: Heatmap opacity in [0, 1].
        cmap: Matplotlib colormap name.
        contour_quantile: If set (e.g. 0.9), draw the outline of the pixels whose heat is at or
            above this quantile of the map.
        contour_color: RGB of the outline.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    base = _to_rgb_uint8(image)
    heat = _resize_2d(np.asarray(heatmap, np.float32), base.shape[:2])
    color = colorize(heat, cmap).astype(np.float32)
    out = (1.0 - alpha) * base.astype(np.float32) + alpha * color
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    if contour_quantile is not None:
        if not 0.0 < contour_quantile < 1.0:
            raise ValueError(f"contour_quantile must be in (0, 1), got {contour_quantile}")
        from scipy import ndimage

        level = np.quantile(heat, contour_quantile)
        if level > 0:
            region = heat >= level
            edge = region & ~ndimage.binary_erosion(region, border_value=0)
            out[edge] = np.asarray(contour_color, np.uint8)
    return out


def take_slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """One 2D slice of a ``(D, H, W)`` or ``(D, H, W, C)`` volume.

    Args:
        volume: The volume (a trailing channel axis is kept on the slice).
        axis: 0 (axial/depth), 1 or 2.
        index: Slice index along ``axis``; must be in range.

    Returns:
        The 2D slice, ``(rows, cols)`` or ``(rows, cols, C)``.
    """
    vol = np.asarray(volume)
    if vol.ndim not in (3, 4):
        raise ValueError(f"volume must be (D, H, W) or (D, H, W, C); got shape {vol.shape}")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    if not 0 <= index < vol.shape[axis]:
        raise ValueError(f"slice index {index} out of range 0..{vol.shape[axis] - 1}")
    return np.take(vol, index, axis=axis)


def overlay_slice(
    volume: np.ndarray,
    heatmap: np.ndarray,
    axis: int,
    index: int,
    alpha: float = 0.4,
    cmap: str = "jet",
    contour_quantile: float | None = None,
) -> np.ndarray:
    """:func:`overlay` on one slice of a volume and its 3D heatmap (same spatial shape)."""
    return overlay(
        take_slice(volume, axis, index),
        take_slice(heatmap, axis, index),
        alpha=alpha,
        cmap=cmap,
        contour_quantile=contour_quantile,
    )


# --------------------------------------------------------------------------------------------
# Gradient-free occlusion (works for Keras and TFLite predict functions)
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# Alignment with anatomy
# --------------------------------------------------------------------------------------------
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
    import json

    from core import data, models, registry

    run = Path(run_dir)
    config = json.loads((run / "config.json").read_text())
    flag, family = config["dataset"], config["model"]
    x_raw, y = data.load_split(flag, split, size=int(config.get("size", 28)))
    x = models.prepare_input(family, x_raw)
    model = registry.load_model(run, allow_outside=True)
    summaries = {
        method: alignment_summary(
            model, x, y, flag, n=n, method=method, steps=steps, seed=seed, mask_x=x_raw
        )
        for method in methods
    }
    result = {"run": run.name, "dataset": flag, "model": family, "split": split, **summaries}
    registry.write_json_atomic(run / "explain.json", result)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m core.explain RUN_DIR [--n 100]`` writes the run's explain.json."""
    import json

    from core import cli

    parser = cli.ArgumentParser(prog="python -m core.explain", description=main.__doc__)
    parser.add_argument("run_dir", help="run name in the registry, or path of a run directory")
    parser.add_argument("--n", type=cli.positive_int, default=100, help="test samples to explain")
    parser.add_argument("--steps", type=cli.positive_int, default=10, help="deletion-curve steps")
    args = parser.parse_args(argv)
    run = cli.check_run(args.run_dir)  # before minutes of saliency maps
    result = compute_alignment_run(run, n=args.n, steps=args.steps)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    from core import cli

    raise SystemExit(cli.run(main))
