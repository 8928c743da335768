"""The one entry point for every explanation method: :func:`attribution` and :data:`METHODS`.

The methods live in :mod:`core.explain.cams` (Grad-CAM, Grad-CAM++, HiResCAM, LayerCAM, fused
LayerCAM, Score-CAM), :mod:`core.explain.gradients` (Integrated Gradients, SmoothGrad) and
:mod:`core.explain.occlusion`; each registers itself in :data:`core.explain.base.REGISTRY`.
:data:`METHODS` lists them in a fixed order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from core.explain import cams, gradients, occlusion  # noqa: F401 - registers the methods
from core.explain.base import REGISTRY, Attribution
from core.explain.gradcam import _class_indices, _num_scores, validate_input
from core.explain.layers import _resolve_layer, fused_layers, layer_grid

# CAMs coarse to fine, then pixel-level, then the slow gradient-free one; a method registered
# elsewhere (a plug-in) comes last.
_ORDER = (
    "gradcam",
    "gradcam++",
    "hirescam",
    "layercam",
    "layercam_fused",
    "scorecam",
    "integrated_gradients",
    "smoothgrad",
    "occlusion",
)
METHODS: tuple[str, ...] = tuple(sorted(REGISTRY, key=lambda n: (_ORDER + (n,)).index(n)))


def get_method(method: str) -> Attribution:
    """The registered method object (title, plain-language help, options).

    Raises:
        ValueError: For an unknown method, listing :data:`METHODS`.
    """
    if not isinstance(method, str) or method not in REGISTRY:
        raise ValueError(f"unknown explanation method {method!r}; choose one of {METHODS}")
    return REGISTRY[method]


def method_info(method: str) -> dict[str, Any]:
    """Plain facts about a method for pages and reports (no TensorFlow work).

    Args:
        method: One of :data:`METHODS`.

    Returns:
        ``{"name", "title", "help", "layers" ("one" | "many" | "none"), "options"}``.

    Raises:
        ValueError: For an unknown method.
    """
    m = get_method(method)
    return {
        "name": m.name,
        "title": m.title,
        "help": m.help,
        "layers": m.layers,
        "options": dict(m.defaults),
    }


def resolve_layers(
    model: keras.Model, method: str, layer_name: str | Sequence[str] | None = None
) -> tuple[str, ...]:
    """The layer(s) ``method`` explains on ``model`` for a given ``layer_name``.

    Args:
        model: A flat tf-keras model.
        method: One of :data:`METHODS`.
        layer_name: ``None`` for the default (:func:`core.explain.default_layer` for one-layer
            CAMs, :func:`core.explain.fused_layers` for ``layercam_fused``); a layer name; or,
            for ``layercam_fused`` only, a list of names. Pixel-level methods take ``None``.

    Returns:
        Layer names (empty for pixel-level methods).

    Raises:
        ValueError: For an unknown method or layer, or a layer argument the method cannot use.
    """
    kind = get_method(method).layers
    if kind == "none":
        if layer_name is not None:
            raise ValueError(
                f"method {method!r} explains input pixels/voxels and takes no layer; pass "
                f"layer_name=None (got {layer_name!r})"
            )
        return ()
    if kind == "many":
        if layer_name is None:
            return fused_layers(model)
        names = [layer_name] if isinstance(layer_name, str) else list(layer_name)
        if not names:
            raise ValueError(f"method {method!r} needs at least one layer name")
        return tuple(_resolve_layer(model, name) for name in names)
    if layer_name is not None and not isinstance(layer_name, str):
        raise ValueError(
            f"method {method!r} explains one layer; layer_name must be a name or None, got "
            f"{layer_name!r} (only 'layercam_fused' takes a list)"
        )
    return (_resolve_layer(model, layer_name),)


def describe_layers(model: keras.Model, layers: Sequence[str]) -> str:
    """``"block4_conv3 (4×4)"``-style text naming the layers and their grids ("" if none)."""
    return ", ".join(
        f"{name} ({'×'.join(str(d) for d in layer_grid(model, name))})" for name in layers
    )


def attribution(
    model: keras.Model,
    x: Any,
    method: str,
    class_index: Any = None,
    layer_name: str | Sequence[str] | None = None,
    *,
    batch_size: int | None = None,
    return_classes: bool = False,
    **options: Any,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Explanation maps of a batch of 2D images or 3D volumes by any method in :data:`METHODS`.

    Each method's function is built once per (model, method, layers, options), compiled with
    ``tf.function`` and cached, so repeated calls cost only the method's passes.

    Args:
        model: A flat tf-keras model (no nested models).
        x: Batch ``(N, H, W, C)`` or ``(N, D, H, W, C)`` matching ``model.input_shape``.
        method: One of :data:`METHODS`.
        class_index: ``None`` for the predicted class, an int (a label index for multi-label
            models), or an int array of shape ``(N,)``.
        layer_name: See :func:`resolve_layers`; ``None`` picks the default.
        batch_size: Samples per compiled call; default the method's own (memory-bound).
        return_classes: Also return the class index each map explains.
        **options: Method options (see ``method_info(method)["options"]``), e.g. ``steps=32``
            for Integrated Gradients, ``upsample=False`` for a CAM on the layer's grid.

    Returns:
        float32 maps ``(N, *spatial)`` in [0, 1] (each divided by its maximum; all-zero when
        nothing speaks for the class) at input resolution, or the layer grid with
        ``upsample=False``; with ``return_classes`` a tuple ``(maps, classes)``.

    Raises:
        ValueError: For an unknown method, layer, option or class, a nested model, or an input
            of the wrong shape or with NaN/inf values.

    Example::

        heat = attribution(model, x, "layercam_fused")          # (N, 28, 28)
        heat = attribution(model, vol, "integrated_gradients", class_index=1, steps=64)
    """
    m = get_method(method)
    layers = resolve_layers(model, method, layer_name)
    opts = m.options(options)
    arr = validate_input(model, x)
    classes = _class_indices(class_index, arr.shape[0], _num_scores(model))
    fn = m.function(model, layers, opts)
    extra = m.extra_inputs(arr, opts)
    step = max(1, int(batch_size or m.batch_size))
    maps, targets = [], []
    for start in range(0, arr.shape[0], step):
        chunk = slice(start, start + step)
        heat, target = fn(
            tf.constant(arr[chunk]),
            tf.constant(classes[chunk]),
            *(tf.constant(np.ascontiguousarray(e[chunk])) for e in extra),
        )
        maps.append(np.asarray(heat, np.float32))
        targets.append(np.asarray(target, np.int32))
    heat = np.concatenate(maps)
    peak = heat.reshape(len(heat), -1).max(axis=1).reshape((-1,) + (1,) * (heat.ndim - 1))
    # divide by the maximum, not min-max: 0 keeps meaning "no evidence for the class"
    heat = np.clip(np.divide(heat, peak, out=np.zeros_like(heat), where=peak > 0), 0.0, 1.0)
    if return_classes:
        return heat, np.concatenate(targets)
    return heat
