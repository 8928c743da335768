"""Custom layers shared by the model families, and the task-dependent classifier head."""

from __future__ import annotations

import tensorflow as tf
import tf_keras as keras

from core.info import MULTI_LABEL


@keras.saving.register_keras_serializable(package="core")
class MaxPool3DBuiltin(keras.layers.Layer):
    """2×2×2 max pooling (stride 2, 'valid') written with TFLite builtin ops.

    ``MaxPool3D`` is not a TFLite builtin (it needs Flex ops, which the interpreters here cannot
    run). Pooling H and W with ``max_pool2d`` on depth-folded slices, then taking the max over
    depth pairs, gives numerically identical results with builtin ops only.
    """

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        d, h, w, c = inputs.shape[1], inputs.shape[2], inputs.shape[3], inputs.shape[4]
        ho, wo, do = h // 2, w // 2, d // 2
        x = tf.reshape(inputs, [-1, h, w, c])
        x = tf.nn.max_pool2d(x, ksize=2, strides=2, padding="VALID")
        x = tf.reshape(x, [-1, d, ho, wo, c])
        x = x[:, : do * 2]
        x = tf.reshape(x, [-1, do, 2, ho, wo, c])
        return tf.reduce_max(x, axis=2)

    def compute_output_shape(self, input_shape):
        n, d, h, w, c = input_shape
        return tf.TensorShape([n, d // 2, h // 2, w // 2, c])


def classifier_head(x: tf.Tensor, num_classes: int, task: str) -> tf.Tensor:
    """``logits`` Dense + ``predictions`` activation, as every model family ends.

    Binary tasks get a 2-way softmax so column -1 is P(positive), as medmnist's evaluator reads
    it; multi-label tasks get one sigmoid per label.
    """
    x = keras.layers.Dense(num_classes, name="logits")(x)
    activation = "sigmoid" if task == MULTI_LABEL else "softmax"
    return keras.layers.Activation(activation, name="predictions", dtype="float32")(x)


CONV = {2: keras.layers.Conv2D, 3: keras.layers.Conv3D}
POOL = {
    2: lambda name: keras.layers.MaxPooling2D(2, name=name),
    3: lambda name: MaxPool3DBuiltin(name=name),
}
GAP = {2: keras.layers.GlobalAveragePooling2D, 3: keras.layers.GlobalAveragePooling3D}


def spatial_rank(input_shape: tuple[int, ...]) -> int:
    """2 for ``(H, W, C)`` inputs, 3 for ``(D, H, W, C)``."""
    rank = len(input_shape) - 1
    if rank not in (2, 3):
        raise ValueError(f"input_shape must be (H, W, C) or (D, H, W, C), got {input_shape}")
    return rank
