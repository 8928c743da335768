"""Model families, one builder each, listed in one table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from core import info
from core.models.cnn2d import build_cnn2d
from core.models.cnn3d import build_cnn3d
from core.models.layers import MULTI_LABEL, MaxPool3DBuiltin
from core.models.resnet import build_resnet
from core.models.vgg16_transfer import build_vgg16

BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "cnn3d": build_cnn3d,
    "cnn2d": build_cnn2d,
    "vgg16": build_vgg16,
    "resnet": build_resnet,
}

CUSTOM_OBJECTS = {"MaxPool3DBuiltin": MaxPool3DBuiltin}

__all__ = [
    "BUILDERS",
    "CUSTOM_OBJECTS",
    "build_model",
    "prepare_input",
    "input_shape_for",
    "compile_model",
    "MaxPool3DBuiltin",
]


def build_model(
    family: str, input_shape: tuple[int, ...], num_classes: int, task: str, **kwargs: Any
) -> keras.Model:
    """Build a model of ``family`` (one of ``BUILDERS``).

    Raises:
        ValueError: unknown family (the message lists the families).
    """
    if family not in BUILDERS:
        raise ValueError(
            f"model family {family!r} is not supported; choose one of {', '.join(BUILDERS)}"
        )
    return BUILDERS[family](tuple(input_shape), num_classes, task, **kwargs)


def prepare_input(family: str, x: np.ndarray, input_size: int | None = None) -> np.ndarray:
    """Convert ``core.data.load_split`` output to what the family expects (VGG16: RGB).

    ``input_size`` is accepted for the documented contract; VGG16 models resize in-graph, so the
    arrays keep their stored size here.
    """
    if family == "vgg16":
        from core.data import to_rgb

        return to_rgb(x)
    return x


def input_shape_for(family: str, flag: str, size: int = 28) -> tuple[int, ...]:
    """Model input shape for a dataset at a given size."""
    if info.is_3d(flag):
        return (size, size, size, 1)
    channels = 3 if family == "vgg16" else info.n_channels(flag)
    return (size, size, channels)


def sparse_smoothed_crossentropy(num_classes: int, label_smoothing: float) -> Any:
    """Cross-entropy on integer labels with label smoothing (Keras' sparse loss has none)."""
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)

    def smoothed(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
        labels = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
        return loss(tf.one_hot(labels, num_classes), y_pred)

    return smoothed


def compile_model(
    model: keras.Model,
    task: str,
    learning_rate: float = 1e-3,
    label_smoothing: float = 0.0,
) -> keras.Model:
    """Adam + the task's loss: binary cross-entropy per label, else sparse categorical.

    ``label_smoothing`` > 0 (single-label tasks only) smooths the categorical targets.
    """
    if task == MULTI_LABEL:
        if label_smoothing:
            raise ValueError("label_smoothing applies to single-label tasks only")
        loss: Any = "binary_crossentropy"
    elif label_smoothing:
        loss = sparse_smoothed_crossentropy(int(model.output_shape[-1]), label_smoothing)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
    return model
