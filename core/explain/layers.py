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
