"""Quantization-friendly rewrite: fold a head BatchNorm back into the last convolution.

Usage::

    folded, note = fold_head_batchnorm(model)   # note is None when nothing was folded

:func:`core.quantize.quantize` applies it before every conversion.
"""

from __future__ import annotations

import numpy as np
import tf_keras as keras

from core.models.layers import MaxPool3DBuiltin

# Layers through which a positive per-channel scale passes unchanged: relu(s·x) = s·relu(x),
# max(s·x) = s·max(x) and mean(s·x) = s·mean(x) for s > 0.
_SCALE_EQUIVARIANT = (
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
)


def inbound_layers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The layers feeding ``layer``'s first call (empty for an input layer)."""
    nodes = getattr(layer, "_inbound_nodes", [])
    if not nodes:
        return []
    inbound = nodes[0].inbound_layers
    return list(inbound) if isinstance(inbound, list | tuple) else [inbound]


def _is_chain(model: keras.Model) -> bool:
    layers = model.layers
    return all(
        [x.name for x in inbound_layers(layer)] == [layers[i].name]
        for i, layer in enumerate(layers[1:])
    )


def _head_bn_fold_plan(model: keras.Model) -> tuple[int, int, int] | None:
    """Indices (conv, bn, dense) of a conv → pooling → BatchNorm → Dense head, else None."""
    layers = model.layers
    for b, layer in enumerate(layers):
        if not isinstance(layer, keras.layers.BatchNormalization) or b + 1 >= len(layers):
            continue
        if not isinstance(layers[b + 1], keras.layers.Dense):
            continue
        c = b - 1
        while c > 0 and isinstance(layers[c], (*_SCALE_EQUIVARIANT, MaxPool3DBuiltin)):
            c -= 1
        conv = layers[c]
        if (
            c < b - 1
            and isinstance(conv, keras.layers.Conv2D | keras.layers.Conv3D)
            and getattr(conv.activation, "__name__", "") in ("relu", "linear")
        ):
            return c, b, b + 1
    return None


def fold_head_batchnorm(model: keras.Model) -> tuple[keras.Model, str | None]:
    """An equivalent model without the BatchNorm between pooling and the first Dense layer.

    The fine-tuned VGG16 head normalises GAP channels whose variances span 0.0008 to 7400. A
    full-integer model gives that pooled tensor one int8 scale, and the converter multiplies the
    BatchNorm into the Dense kernel, whose rows then span the same ~3000× range: either way the
    small channels round to zero and every image gets the same output. BatchNorm is a per-channel
    ``s·x + t``; with every ``s > 0`` the scale moves through pooling and ReLU into the last
    convolution (``kernel[..., c] *= s_c``) and the shift into the Dense bias (``b += t @ W``).
    The conv then emits channels on comparable scales, which per-tensor int8 keeps.

    Returns:
        ``(model, note)``: the rewritten model and a one-line note, or the original model and
        None when there is no such BatchNorm, the graph is not a plain chain, or some ``s <= 0``
        (a negative scale would turn max pooling into min pooling).
    """
    plan = _head_bn_fold_plan(model)
    if plan is None or not _is_chain(model):
        return model, None
    c, b, d = plan
    layers = model.layers
    conv, bn, dense = layers[c], layers[b], layers[d]
    names = [w.name.split("/")[-1].split(":")[0] for w in bn.weights]
    weights = dict(zip(names, bn.get_weights(), strict=True))
    ones = np.ones_like(weights["moving_mean"])
    scale = weights.get("gamma", ones) / np.sqrt(weights["moving_variance"] + bn.epsilon)
    shift = weights.get("beta", 0.0 * ones) - weights["moving_mean"] * scale
    if not np.all(scale > 0):
        return model, None
    kernel, *bias = conv.get_weights()
    conv_weights = [kernel * scale, bias[0] * scale] if bias else [kernel * scale]
    dense_kernel, dense_bias = dense.get_weights()
    dense_weights = [dense_kernel, dense_bias + shift @ dense_kernel]

    inputs = keras.Input(batch_shape=model.input_shape, name=layers[0].name)
    x = inputs
    for i, layer in enumerate(layers[1:], 1):
        if i == b:
            continue
        new = layer.__class__.from_config(layer.get_config())
        x = new(x)
        new.set_weights(
            conv_weights if i == c else dense_weights if i == d else layer.get_weights()
        )
        new.trainable = layer.trainable
    folded = keras.Model(inputs, x, name=model.name)
    note = (
        f"{bn.name} folded into {conv.name} and {dense.name} before conversion (an exact "
        f"rewrite; BatchNorm scales spanned {scale.min():.3g}..{scale.max():.3g})"
    )
    return folded, note
