"""core.augment: seeded 2D/3D augmentation keeps shape, range and anatomy, and is repeatable."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from core import augment


def _disk(n: int, size: int = 24, rank: int = 2) -> np.ndarray:
    """Centred bright disk (2D) or ball (3D): symmetric, so flips/turns keep it in place."""
    axes = np.meshgrid(*[np.arange(size) - (size - 1) / 2] * rank, indexing="ij")
    r = np.sqrt(sum(a**2 for a in axes))
    img = (r < size / 4).astype(np.float32) * 0.8 + 0.1
    return np.repeat(img[None, ..., None], n, axis=0)


def _seed(a: int, b: int = 0) -> tf.Tensor:
    return tf.constant([a, b], dtype=tf.int64)


@pytest.mark.parametrize(("rank", "fn"), [(2, augment.augment_2d), (3, augment.augment_3d)])
def test_shape_range_and_determinism(rank, fn):
    x = np.random.default_rng(0).random((4, *(16,) * rank, 1), dtype=np.float32)
    a = fn(tf.constant(x), _seed(1)).numpy()
    assert a.shape == x.shape and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 1.0
    np.testing.assert_array_equal(a, fn(tf.constant(x), _seed(1)).numpy())
    assert not np.allclose(a, fn(tf.constant(x), _seed(2)).numpy())
    assert not np.allclose(a, x)


@pytest.mark.parametrize(("rank", "fn"), [(2, augment.augment_2d), (3, augment.augment_3d)])
def test_transforms_are_centred(rank, fn):
    """Rotation/scaling about the centre keeps a centred disk where it was (no shift/garbage)."""
    x = _disk(8, rank=rank)
    for s in range(3):
        a = fn(tf.constant(x), _seed(s)).numpy()
        for i in range(len(x)):
            corr = np.corrcoef(a[i].ravel(), x[i].ravel())[0, 1]
            assert corr > 0.85, f"seed {s} sample {i}: correlation {corr:.3f}"


def test_2d_flip_happens_for_some_samples():
    # left half bright: a horizontal flip moves the brightness to the right half
    x = np.zeros((32, 16, 16, 1), np.float32)
    x[:, :, :8] = 1.0
    a = augment.augment_2d(tf.constant(x), _seed(3)).numpy()
    flipped = a[:, :, 8:].mean(axis=(1, 2, 3)) > a[:, :, :8].mean(axis=(1, 2, 3))
    assert 0 < flipped.sum() < len(x)


def test_rgb_and_non_square_2d():
    x = np.random.default_rng(0).random((2, 12, 20, 3), dtype=np.float32)
    a = augment.augment_2d(tf.constant(x), _seed(0)).numpy()
    assert a.shape == x.shape


def test_augment_batch_dispatch():
    x2 = tf.zeros((2, 8, 8, 1))
    x3 = tf.zeros((2, 8, 8, 8, 1))
    assert augment.augment_batch(x2, _seed(0)).shape == x2.shape
    assert augment.augment_batch(x3, _seed(0)).shape == x3.shape
    with pytest.raises(ValueError, match="4-D or 5-D"):
        augment.augment_batch(tf.zeros((2, 8, 8)), _seed(0))
