"""Seeded, stateless augmentation for 2D images and 3D volumes (training split only).

All randomness comes from a per-batch ``seed`` tensor of shape ``(2,)`` and stateless ops, so
the same run seed gives the same augmented batches. 2D: horizontal flip, rotation, scaling,
brightness/contrast jitter. 3D: flips on every axis, 90° turns in the axial plane and
isotropic scaling.
"""

from __future__ import annotations

import math

import tensorflow as tf

MAX_ROTATION_DEG = 15.0
SCALE_RANGE = (0.9, 1.1)


def _affine(
    angle: tf.Tensor, scale: tf.Tensor, height: int, width: int, scale_y: tf.Tensor | None = None
) -> tf.Tensor:
    """Projective transforms (N, 8) mapping output to input pixels: rotation + zoom about centre."""
    scale_y = scale if scale_y is None else scale_y
    cos, sin = tf.cos(angle), tf.sin(angle)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    # inverse map: input = R^-1 S^-1 (output - c) + c
    a0, a1 = cos / scale, sin / scale
    b0, b1 = -sin / scale_y, cos / scale_y
    a2 = cx - a0 * cx - a1 * cy
    b2 = cy - b0 * cx - b1 * cy
    zeros = tf.zeros_like(angle)
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def _transform(images: tf.Tensor, transforms: tf.Tensor) -> tf.Tensor:
    shape = tf.shape(images)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=shape[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )


def augment_2d(x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Flip, rotate, scale and jitter a batch ``(N, H, W, C)`` of [0, 1] images."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 5)
    n = tf.shape(x)[0]
    flip = tf.random.stateless_uniform([n, 1, 1, 1], seeds[0]) < 0.5
    x = tf.where(flip, tf.reverse(x, axis=[2]), x)
    angle = tf.random.stateless_uniform([n], seeds[1], -1.0, 1.0) * (
        MAX_ROTATION_DEG * math.pi / 180
    )
    scale = tf.random.stateless_uniform([n], seeds[2], *SCALE_RANGE)
    x = _transform(x, _affine(angle, scale, x.shape[1], x.shape[2]))
    gain = tf.random.stateless_uniform([n, 1, 1, 1], seeds[3], 0.9, 1.1)
    bias = tf.random.stateless_uniform([n, 1, 1, 1], seeds[4], -0.05, 0.05)
    return tf.clip_by_value(x * gain + bias, 0.0, 1.0)


def augment_3d(x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Flip every axis, turn by k·90° axially and scale isotropically ``(N, D, H, W, C)``."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 5)
    n = tf.shape(x)[0]
    d, h, w, c = x.shape[1], x.shape[2], x.shape[3], x.shape[4]
    flips = tf.random.stateless_uniform([3, n, 1, 1, 1, 1], seeds[0]) < 0.5
    for axis in range(3):
        x = tf.where(flips[axis], tf.reverse(x, axis=[axis + 1]), x)
    if h == w:
        # one k per batch keeps the graph simple; batches are shuffled, so every k is seen
        k = tf.random.stateless_uniform([], seeds[1], 0, 4, dtype=tf.int32)
        x = tf.switch_case(
            k, [lambda j=j: tf.experimental.numpy.rot90(x, j, axes=(2, 3)) for j in range(4)]
        )
        x = tf.ensure_shape(x, [None, d, h, w, c])
    scale = tf.random.stateless_uniform([n], seeds[2], *SCALE_RANGE)
    zero = tf.zeros([n])
    # in-plane (H, W) scaling: slices as a batch, each volume's transform repeated over depth
    slices = tf.reshape(x, [-1, h, w, c])
    t_hw = tf.repeat(_affine(zero, scale, h, w), d, axis=0)
    x = tf.reshape(_transform(slices, t_hw), [-1, d, h, w, c])
    # depth scaling: (N, H, D, W) slices, scale along D only
    xt = tf.transpose(x, [0, 2, 1, 3, 4])
    t_d = tf.repeat(_affine(zero, tf.ones([n]), d, w, scale_y=scale), h, axis=0)
    xt = tf.reshape(_transform(tf.reshape(xt, [-1, d, w, c]), t_d), [-1, h, d, w, c])
    return tf.transpose(xt, [0, 2, 1, 3, 4])


def augment_batch(x: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Dispatch by rank: 4-D batches are 2D images, 5-D batches are volumes."""
    if x.shape.rank == 4:
        return augment_2d(x, seed)
    if x.shape.rank == 5:
        return augment_3d(x, seed)
    raise ValueError(f"augmentation expects a 4-D or 5-D batch, got shape {x.shape}")
