"""Which layer Grad-CAM explains and which tensor is the class score.

A feature map is any layer output of shape ``(N, *spatial, C)`` with the input's rank, so the
same rules pick a layer in 2D and 3D models. Answers are cached per model (weak keys), since a
model's graph never changes.
"""

from __future__ import annotations

import threading
import weakref

import tensorflow as tf
import tf_keras as keras

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


# model -> {requested layer name or None: resolved layer name}; weak keys, so entries are
# freed with their model.
_LAYER_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()


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


# A CAM on a grid of 2 cells per axis or fewer is a few smooth blobs whatever the model does
# (VGG16 at 32 px: block5_conv3 is 2x2, "-0.0 % vs uniform" on the anatomy score), so no default
# map may come from one. Every spatial axis of a default layer's grid must be at least this.
MIN_GRID = 3


def _grid(layer: keras.layers.Layer) -> tuple[int, ...]:
    return tuple(int(d) for d in layer.output_shape[1:-1])


def _is_colour_transform(layer: keras.layers.Layer) -> bool:
    # A frozen 1x1 convolution that maps the input channels to as many channels is a fixed
    # colour transform (VGG16's "caffe_preprocess"), not a feature detector worth explaining.
    kernel = getattr(layer, "kernel_size", None)
    filters = getattr(layer, "filters", None)
    if kernel is None or any(k != 1 for k in kernel) or layer.trainable:
        return False
    return filters == int(layer.input_shape[-1])


def _follow_activation(model: keras.Model, layer: keras.layers.Layer, rank: int):
    """From a convolution, follow its single consumer through BatchNorm, activation and
    residual ``Add`` layers (same grid), stopping before pooling, flattening or dropout."""
    while True:
        nxt = _consumers(model, layer)
        if len(nxt) != 1 or not isinstance(nxt[0], _PASS_THROUGH):
            return layer
        if _output_rank(nxt[0]) != rank:
            return layer
        layer = nxt[0]


def _conv_outputs(model: keras.Model) -> list[keras.layers.Layer]:
    rank = len(model.input_shape)
    seen: dict[str, keras.layers.Layer] = {}
    for conv in model.layers:
        if not _is_conv(conv) or _is_colour_transform(conv) or _output_rank(conv) != rank:
            continue
        out = _follow_activation(model, conv, rank)
        seen.setdefault(out.name, out)  # a residual block's two convs meet in one Add/ReLU
    order = {layer.name: i for i, layer in enumerate(model.layers)}
    return sorted(seen.values(), key=lambda layer: order[layer.name])


def candidate_layers(model: keras.Model) -> list[tuple[str, tuple[int, ...]]]:
    """The layers a CAM may explain by default, with their grid, shallow to deep.

    One entry per convolution: its activation (the convolution followed through BatchNorm,
    activation and residual ``Add`` layers), whose grid is at least :data:`MIN_GRID` on every
    spatial axis. Fixed colour transforms (VGG16's ``caffe_preprocess``) are left out.

    Args:
        model: A flat tf-keras model.

    Returns:
        ``[(layer_name, grid), ...]`` in graph order, e.g. ``("block4_conv3", (4, 4))``.

    Raises:
        ValueError: For a nested model.
    """
    _check_flat(model)
    return [
        (layer.name, _grid(layer))
        for layer in _conv_outputs(model)
        if min(_grid(layer)) >= MIN_GRID
    ]


def layer_grid(model: keras.Model, layer_name: str) -> tuple[int, ...]:
    """The spatial grid of a layer's output, e.g. ``(7, 7)`` or ``(7, 7, 7)``.

    Raises:
        ValueError: If the model has no such layer.
    """
    try:
        return _grid(model.get_layer(layer_name))
    except ValueError as exc:
        raise ValueError(
            f"model {model.name!r} has no layer {layer_name!r}; spatial layers: "
            f"{spatial_layers(model)}"
        ) from exc


def default_layer(model: keras.Model) -> str:
    """The default CAM layer: the deepest convolution activation with a grid of at least
    :data:`MIN_GRID` cells per axis (the last entry of :func:`candidate_layers`).

    VGG16 at 32 px thus explains ``block4_conv3`` (4x4), not ``block5_conv3`` (2x2). A model
    whose every convolution is coarser than that gets its finest one.

    Args:
        model: A flat tf-keras model with at least one convolution.

    Returns:
        The layer name.

    Raises:
        ValueError: If the model has no convolution layer or is nested.
    """
    _check_flat(model)
    outputs = _conv_outputs(model)
    if not outputs:
        raise ValueError(
            f"model {model.name!r} has no convolution layer; pass layer_name= one of "
            f"{spatial_layers(model)}"
        )
    fine = [layer for layer in outputs if min(_grid(layer)) >= MIN_GRID]
    if fine:
        return fine[-1].name
    # every grid is coarse: the finest is the least blurry (the latest among equals)
    return max(reversed(outputs), key=lambda layer: min(_grid(layer))).name


def fused_layers(model: keras.Model, count: int = 3) -> tuple[str, ...]:
    """Layers for fused LayerCAM: the deepest candidate layer of each of the ``count`` deepest
    grids (one per resolution stage), shallow to deep.

    Low-resolution inputs need this: the deepest usable grid is coarse (7x7 at 28 px), and the
    earlier stages add the detail (Jiang et al. 2021, LayerCAM).

    Args:
        model: A flat tf-keras model.
        count: How many resolution stages to fuse.

    Returns:
        Layer names, e.g. ``("block1_relu2", "block2_relu2", "block3_relu2")``.

    Raises:
        ValueError: If no layer qualifies (see :func:`candidate_layers`).
    """
    per_grid: dict[tuple[int, ...], str] = {}
    for name, grid in candidate_layers(model):
        per_grid[grid] = name  # graph order: the last one wins, the deepest of its stage
    names = list(per_grid.values())[-count:]
    if not names:
        raise ValueError(
            f"model {model.name!r} has no convolution with a grid of at least {MIN_GRID} per "
            f"axis; pass layer_name= a list from {spatial_layers(model)}"
        )
    return tuple(names)


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
