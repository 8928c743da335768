"""Custom deep 2D CNN: VGG-style blocks of two convolutions with BatchNorm and Dropout."""

from __future__ import annotations

import tf_keras as keras

from core.models.layers import classifier_head


def build_cnn2d(
    input_shape: tuple[int, ...],
    num_classes: int,
    task: str,
    *,
    filters: tuple[int, ...] = (32, 64, 128),
    convs_per_block: int = 2,
    block_dropout: float = 0.25,
    dense_units: int = 128,
    dropout: float = 0.5,
    name: str = "cnn2d",
) -> keras.Model:
    """Blocks of (Conv → BN → ReLU) × ``convs_per_block`` → MaxPool → Dropout, then GAP → FC.

    Args:
        input_shape: ``(H, W, C)``.
        num_classes: output units (2 for binary tasks).
        task: medmnist task string; picks the output activation.
        filters: channels of each block.
        convs_per_block: convolutions per block.
        block_dropout: dropout after each block's pooling.
        dense_units: width of the fully connected layer.
        dropout: dropout before the classifier.
        name: model name.
    """
    if len(input_shape) != 3:
        raise ValueError(f"cnn2d needs an (H, W, C) input shape, got {input_shape}")
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for b, f in enumerate(filters, start=1):
        for c in range(1, convs_per_block + 1):
            x = keras.layers.Conv2D(f, 3, padding="same", use_bias=False, name=f"block{b}_conv{c}")(
                x
            )
            x = keras.layers.BatchNormalization(name=f"block{b}_bn{c}")(x)
            x = keras.layers.ReLU(name=f"block{b}_relu{c}")(x)
        if b < len(filters):  # keep the last feature map at 7×7 for a useful Grad-CAM grid
            x = keras.layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
        x = keras.layers.Dropout(block_dropout, name=f"block{b}_dropout")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(dense_units, activation="relu", name="fc1")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    return keras.Model(inputs, classifier_head(x, num_classes, task), name=name)
