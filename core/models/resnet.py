"""ResNet from scratch, 2D or 3D: one generic builder plus thin variants (as Keras' resnet.py)."""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf
import tf_keras as keras

from core.models.layers import CONV, GAP, classifier_head, spatial_rank


def residual_block(
    x: tf.Tensor,
    filters: int,
    kernel_size: int = 3,
    stride: int = 1,
    rank: int = 2,
    name: str | None = None,
) -> tf.Tensor:
    """Conv → BN → ReLU → Conv → BN, plus a shortcut; a 1×1 projection when the shape changes."""
    conv = CONV[rank]
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = conv(filters, 1, strides=stride, use_bias=False, name=f"{name}_proj_conv")(x)
        shortcut = keras.layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    y = conv(
        filters, kernel_size, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1"
    )(x)
    y = keras.layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = conv(filters, kernel_size, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    y = keras.layers.BatchNormalization(name=f"{name}_bn2")(y)
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def stack(x: tf.Tensor, filters: int, blocks: int, stride: int, rank: int, name: str) -> tf.Tensor:
    """A stage: the first block may downsample, the rest keep the shape."""
    x = residual_block(x, filters, stride=stride, rank=rank, name=f"{name}_block1")
    for i in range(2, blocks + 1):
        x = residual_block(x, filters, rank=rank, name=f"{name}_block{i}")
    return x


def ResNet(  # noqa: N802 - named like Keras' applications.ResNet
    stack_fn: Callable[[tf.Tensor, int], tf.Tensor],
    input_shape: tuple[int, ...],
    num_classes: int,
    task: str,
    *,
    stem_filters: int = 32,
    dropout: float = 0.3,
    name: str = "resnet",
) -> keras.Model:
    """Generic ResNet: stem conv → ``stack_fn`` stages → global average pooling → classifier."""
    rank = spatial_rank(input_shape)
    inputs = keras.Input(shape=input_shape, name="volume" if rank == 3 else "image")
    x = CONV[rank](stem_filters, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = stack_fn(x, rank)
    x = GAP[rank](name="gap")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    return keras.Model(inputs, classifier_head(x, num_classes, task), name=name)


def build_resnet(
    input_shape: tuple[int, ...],
    num_classes: int,
    task: str,
    *,
    filters: tuple[int, ...] = (32, 64, 128),
    blocks: tuple[int, ...] = (2, 2, 2),
    stem_filters: int = 32,
    dropout: float = 0.3,
    name: str = "resnet",
) -> keras.Model:
    """ResNet-style network for 28–64 px inputs (2D or 3D by the input rank).

    Args:
        input_shape: ``(H, W, C)`` or ``(D, H, W, C)``.
        num_classes: output units (2 for binary tasks).
        task: medmnist task string.
        filters: channels per stage; each stage after the first halves the resolution.
        blocks: residual blocks per stage.
        stem_filters: channels of the stem convolution.
        dropout: dropout before the classifier.
        name: model name.
    """
    if len(filters) != len(blocks):
        raise ValueError(f"filters {filters} and blocks {blocks} must have the same length")

    def stack_fn(x: tf.Tensor, rank: int) -> tf.Tensor:
        for i, (f, n) in enumerate(zip(filters, blocks, strict=True), start=1):
            x = stack(x, f, n, stride=1 if i == 1 else 2, rank=rank, name=f"stage{i}")
        return x

    return ResNet(
        stack_fn,
        input_shape,
        num_classes,
        task,
        stem_filters=stem_filters,
        dropout=dropout,
        name=name,
    )
