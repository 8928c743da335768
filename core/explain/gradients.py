"""Pixel- and voxel-level attributions from input gradients: Integrated Gradients and
SmoothGrad, one rank-agnostic code path for images and volumes.

Both read the class score before softmax (the ``logits`` layer, like the CAMs) and need no
layer choice.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from core.explain.base import Attribution, compile_fn, pick_target, register
from core.explain.layers import _score_tensor


def _score_model(model: keras.Model) -> keras.Model:
    return keras.Model(model.inputs, _score_tensor(model))


def _input_gradients(score_model, inputs: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """d score[target] / d inputs for a batch whose rows each have their own target."""
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        score = tf.gather(score_model(inputs, training=False), target, batch_dims=1)
    return tape.gradient(score, inputs)


def _expand(x: tf.Tensor, copies: int) -> tf.Tensor:
    """``(n, ...) -> (n * copies, ...)``, each sample repeated ``copies`` times in a row."""
    return tf.repeat(x, copies, axis=0)


@register
class IntegratedGradients(Attribution):
    """Integrated Gradients (Sundararajan et al. 2017), midpoint Riemann sum.

    ``(x - baseline) * mean_k grad(baseline + (k + 0.5) / steps * (x - baseline))``, summed over
    the channels; the positive part is the evidence for the class. All steps of a sample run
    in one batch.
    """

    name = "integrated_gradients"
    title = "Integrated Gradients"
    help = (
        "Fades the image in from black and adds up, pixel by pixel, how much each pixel raised "
        "the class score along the way (Sundararajan et al. 2017). Pixel-level detail."
    )
    layers = "none"
    batch_size = 4
    defaults = {"steps": 32, "baseline": 0.0}

    def build(self, model: keras.Model, layers: tuple[str, ...], options: dict[str, Any]):
        steps, baseline = int(options["steps"]), float(options["baseline"])
        if steps < 1:
            raise ValueError(f"integrated_gradients: steps must be >= 1, got {steps}")
        score_model = _score_model(model)
        rank = len(model.input_shape)
        alphas = (np.arange(steps, dtype=np.float32) + 0.5) / steps
        # (n * steps, 1, ..., 1): one path position per row of the expanded batch
        alpha_col = tf.constant(alphas.reshape((steps,) + (1,) * (rank - 1)))

        def fn(x: tf.Tensor, classes: tf.Tensor):
            target = pick_target(score_model(x, training=False), classes)
            n = tf.shape(x)[0]
            diff = x - baseline
            # rows: sample 0 at every step, then sample 1, ... (the order of _expand)
            alpha_rows = tf.tile(alpha_col, tf.concat([[n], tf.ones([rank - 1], tf.int32)], 0))
            path = baseline + _expand(diff, steps) * alpha_rows
            grads = _input_gradients(score_model, path, _expand(target, steps))
            mean_grad = tf.reduce_mean(
                tf.reshape(grads, tf.concat([[n, steps], tf.shape(x)[1:]], 0)), axis=1
            )
            return tf.nn.relu(tf.reduce_sum(diff * mean_grad, axis=-1)), target

        return compile_fn(fn, model)


@register
class SmoothGrad(Attribution):
    """SmoothGrad (Smilkov et al. 2017) as tf-keras-vis' ``Saliency(smooth_samples=...)``.

    The mean absolute input gradient over ``samples`` noisy copies (noise standard deviation
    ``noise`` times the sample's value range), maximum over channels. The noise is drawn from
    a fixed ``seed``, so the same input always gets the same map.
    """

    name = "smoothgrad"
    title = "SmoothGrad"
    help = (
        "How strongly each pixel changes the class score, averaged over slightly noisy copies "
        "of the image so the map is not speckled (Smilkov et al. 2017). Pixel-level detail."
    )
    layers = "none"
    batch_size = 4
    defaults = {"samples": 16, "noise": 0.2, "seed": 0}

    def extra_inputs(self, x: np.ndarray, options: dict[str, Any]) -> tuple:
        """Unit normal noise ``(n, samples, *x.shape[1:])``, the same for every sample."""
        rng = np.random.default_rng(int(options["seed"]))
        eps = rng.standard_normal((int(options["samples"]), *x.shape[1:]), dtype=np.float32)
        return (np.broadcast_to(eps, (x.shape[0], *eps.shape)),)

    def build(self, model: keras.Model, layers: tuple[str, ...], options: dict[str, Any]):
        samples, noise = int(options["samples"]), float(options["noise"])
        if samples < 1:
            raise ValueError(f"smoothgrad: samples must be >= 1, got {samples}")
        score_model = _score_model(model)
        axes = list(range(1, len(model.input_shape)))

        def fn(x: tf.Tensor, classes: tf.Tensor, eps: tf.Tensor):
            target = pick_target(score_model(x, training=False), classes)
            n = tf.shape(x)[0]
            sigma = noise * (
                tf.reduce_max(x, axis=axes, keepdims=True)
                - tf.reduce_min(x, axis=axes, keepdims=True)
            )
            noisy = _expand(x, samples) + _expand(sigma, samples) * tf.reshape(
                eps, tf.concat([[n * samples], tf.shape(x)[1:]], 0)
            )
            grads = tf.abs(_input_gradients(score_model, noisy, _expand(target, samples)))
            mean = tf.reduce_mean(
                tf.reshape(grads, tf.concat([[n, samples], tf.shape(x)[1:]], 0)), axis=1
            )
            return tf.reduce_max(mean, axis=-1), target

        spec = tf.TensorSpec((None, samples, *model.input_shape[1:]), tf.float32)
        return compile_fn(fn, model, (spec,))
