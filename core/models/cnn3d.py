"""3D CNN from scratch for volumetric MedMNIST (Conv3D k3 + BN + ReLU + builtin-op pooling)."""

from __future__ import annotations

import tf_keras as keras

from core.models.layers import MaxPool3DBuiltin, classifier_head


def build_cnn3d(
    input_shape: tuple[int, ...],
    num_classes: int,
    task: str,
    *,
    filters: tuple[int, ...] = (16, 32, 64),
    dense_units: int = 128,
    dropout: float = 0.5,
    name: str = "cnn3d",
) -> keras.Model:
    """Three Conv3D/BatchNorm/ReLU/MaxPool stages, then Flatten → FC → Dropout → classifier.

    Args:
        input_shape: ``(D, H, W, C)``.
        num_classes: output units (2 for binary tasks).
        task: medmnist task string; picks the output activation.
        filters: channels of each stage.
        dense_units: width of the fully connected layer.
        dropout: dropout rate after the fully connected layer.
        name: model name.
    """
    if len(input_shape) != 4:
        raise ValueError(f"cnn3d needs a (D, H, W, C) input shape, got {input_shape}")
    inputs = keras.Input(shape=input_shape, name="volume")
    x = inputs
    for i, f in enumerate(filters, start=1):
        x = keras.layers.Conv3D(f, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
        x = MaxPool3DBuiltin(name=f"pool{i}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(dense_units, activation="relu", name="fc1")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    return keras.Model(inputs, classifier_head(x, num_classes, task), name=name)
