"""Class activation maps: Grad-CAM, Grad-CAM++, HiResCAM, LayerCAM (one layer or fused over
several) and Score-CAM, one rank-agnostic code path for images and volumes.

A feature map is ``(N, *grid, C)`` and every reduction runs over the grid axes
``range(1, ndim - 1)``, so the same code serves 2D and 3D models (the MONAI way). The gradient
CAMs differ only in :meth:`GradientCam.weights`, the function pytorch-grad-cam calls
``get_cam_weights``: a new gradient CAM is a subclass overriding that one method.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tf_keras as keras

from core.explain.base import Attribution, compile_fn, pick_target, register
from core.explain.gradcam import (
    _normalise,
    _upsample,
    _upsample_align_corners,
    gradcam_plus_plus_weights,
    gradcam_weights,
)
from core.explain.layers import _score_tensor

# "bilinear": half-pixel centres (each grid cell stays over the pixels it pools); the default.
# "align_corners": scipy.ndimage.zoom(order=1), tf-keras-vis' convention (for comparing with it).
# False: no resize, the map on the layer's grid.
UPSAMPLE = ("bilinear", "align_corners", False)


def resize(maps: tf.Tensor, size: tf.Tensor, mode: str | bool) -> tf.Tensor:
    """Resize ``(N, *grid)`` maps to ``size`` with one of :data:`UPSAMPLE`.

    Raises:
        ValueError: For another mode.
    """
    if mode == "bilinear":
        return _upsample(maps, size)
    if mode == "align_corners":
        return _upsample_align_corners(maps, size)
    if mode is False or mode is None:
        return maps
    raise ValueError(f"upsample={mode!r} is not supported; use one of {UPSAMPLE}")


class GradientCam(Attribution):
    """A CAM from one backward pass: ``ReLU(sum_c weights_c * A_c)`` on each layer's grid.

    Subclasses override :meth:`weights` only. With several layers (``layers = "many"``) each
    layer's map is resized to the input, divided by its maximum, and the maps are averaged
    (pytorch-grad-cam's ``aggregate_multi_layers``).
    """

    defaults = {"upsample": "bilinear"}

    def weights(self, grads: tf.Tensor, acts: tf.Tensor, axes: list[int]) -> tf.Tensor:
        """Per-channel (or per-position) weights of the activations.

        Args:
            grads: d score / d activations, ``(N, *grid, C)``.
            acts: The activations, ``(N, *grid, C)``.
            axes: The grid axes.

        Returns:
            A tensor broadcastable to ``acts``: ``(N, 1, ..., 1, C)`` for channel weights or
            ``(N, *grid, C)`` for per-position weights.
        """
        raise NotImplementedError

    def build(self, model: keras.Model, layers: tuple[str, ...], options: dict[str, Any]):
        mode = options["upsample"]
        if len(layers) > 1 and mode is False:
            raise ValueError(
                f"{self.name}: maps of several layers ({layers}) have different grids; they "
                "can only be fused at input resolution (upsample='bilinear')"
            )
        outputs = [model.get_layer(name).output for name in layers]
        grad_model = keras.Model(model.inputs, [*outputs, _score_tensor(model)])
        axes = list(range(1, len(model.input_shape) - 1))

        def fn(x: tf.Tensor, classes: tf.Tensor):
            with tf.GradientTape() as tape:
                *acts, logits = grad_model(x, training=False)
                target = pick_target(logits, classes)
                # the summed score: samples are independent in inference mode, so one backward
                # pass gives every sample its own gradient
                score = tf.gather(logits, target, batch_dims=1)
            grads = tape.gradient(score, acts, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            size = tf.shape(x)[1:-1]
            maps = []
            for act, grad in zip(acts, grads, strict=True):
                cam = tf.nn.relu(tf.reduce_sum(self.weights(grad, act, axes) * act, axis=-1))
                maps.append(_normalise(resize(cam, size, mode)))
            return tf.add_n(maps) / float(len(maps)), target

        return compile_fn(fn, model)


@register
class GradCam(GradientCam):
    name = "gradcam"
    title = "Grad-CAM"
    help = (
        "Weights each feature map of one network layer by how much the class score rises "
        "with it on average (Selvaraju et al. 2017). Coarse: one value per cell of the layer's "
        "grid."
    )

    def weights(self, grads, acts, axes):
        return gradcam_weights(grads, acts, axes)


@register
class GradCamPlusPlus(GradientCam):
    name = "gradcam++"
    title = "Grad-CAM++"
    help = (
        "Grad-CAM with the positive evidence of each position weighted separately, so several "
        "separate regions can all light up (Chattopadhyay et al. 2018)."
    )

    def weights(self, grads, acts, axes):
        return gradcam_plus_plus_weights(grads, acts, axes)


@register
class HiResCam(GradientCam):
    name = "hirescam"
    title = "HiResCAM"
    help = (
        "Multiplies every feature value by its own gradient instead of an average one, so the "
        "map shows exactly which grid cells raised the score (Draelos & Carin 2020)."
    )

    def weights(self, grads, acts, axes):
        # element-wise, not pooled: for a global-average-pooling head this equals Grad-CAM
        return grads


@register
class LayerCam(GradientCam):
    name = "layercam"
    title = "LayerCAM"
    help = (
        "Keeps only the positions where a feature raises the class score (positive gradient "
        "times feature value); works on early, finer layers too (Jiang et al. 2021)."
    )

    def weights(self, grads, acts, axes):
        return tf.nn.relu(grads)


@register
class FusedLayerCam(LayerCam):
    name = "layercam_fused"
    title = "LayerCAM (fused layers)"
    help = (
        "LayerCAM of one layer per resolution stage, averaged: the deep layer says what, the "
        "earlier ones add where, at a finer grid than the deepest layer alone."
    )
    layers = "many"


@register
class ScoreCam(Attribution):
    """Score-CAM (Wang et al. 2020): gradient-free channel weights.

    Each channel of the layer, resized to the input and scaled to [0, 1], masks the input; the
    channel's weight is the model's probability for the class on that masked input (as in
    tf-keras-vis' ``Scorecam``). One forward pass per channel that fired, all in one batch.
    """

    name = "scorecam"
    title = "Score-CAM"
    help = (
        "Shows the model only the part of the image each feature map covers and weights the "
        "map by how confident the model stays; needs no gradients (Wang et al. 2020)."
    )
    batch_size = 1
    # mask_upsample: how channels are resized into masks ("align_corners" as tf-keras-vis)
    defaults = {"upsample": "bilinear", "mask_upsample": "bilinear"}

    def build(self, model: keras.Model, layers: tuple[str, ...], options: dict[str, Any]):
        act_model = keras.Model(model.inputs, [model.get_layer(layers[0]).output, model.output])
        rank = len(model.input_shape)
        grid_axes = list(range(1, rank - 1))
        channels = int(act_model.outputs[0].shape[-1])
        # (N, *grid, C) -> (N, C, *grid): channels next to the batch axis
        to_front = [0, rank - 1, *grid_axes]
        mode, mask_mode = options["upsample"], options["mask_upsample"]

        def fn(x: tf.Tensor, classes: tf.Tensor):
            acts, probs = act_model(x, training=False)
            target = pick_target(probs, classes)
            n, size = tf.shape(x)[0], tf.shape(x)[1:-1]
            per_channel = tf.reshape(
                tf.transpose(acts, to_front), tf.concat([[n * channels], tf.shape(acts)[1:-1]], 0)
            )
            masks = resize(per_channel, size, mask_mode)
            lo = tf.reduce_min(masks, axis=grid_axes, keepdims=True)
            hi = tf.reduce_max(masks, axis=grid_axes, keepdims=True)
            masks = (masks - lo) / (hi - lo + keras.backend.epsilon())
            # An all-zero channel (a ReLU that never fired) adds weight * 0 to the map whatever
            # its weight, so its forward pass is skipped: the map is unchanged, and VGG16's
            # block4_conv3 has 261 of 512 such channels on a RetinaMNIST test image.
            live = tf.cast(
                tf.where(tf.reduce_max(per_channel, axis=grid_axes) > 0.0)[:, 0], tf.int32
            )

            def live_channel_weights() -> tf.Tensor:
                masked = (
                    tf.gather(tf.repeat(x, channels, axis=0), live)
                    * tf.gather(masks, live)[..., None]
                )
                scores = model(masked, training=False)
                return tf.gather(scores, tf.gather(tf.repeat(target, channels), live), batch_dims=1)

            # No channel fired at all (a dead layer on this input): the map is all zero, and
            # the model must not be called on an empty batch, which a 3D model's fused
            # BatchNorm rejects ("scale must have the same number of elements as the channels")
            live_weights = tf.cond(
                tf.size(live) > 0, live_channel_weights, lambda: tf.zeros([0], probs.dtype)
            )
            weights = tf.scatter_nd(live[:, None], live_weights, tf.reshape(n * channels, [1]))
            weights = tf.reshape(weights, tf.stack([n, *([1] * len(grid_axes)), channels]))
            cam = tf.nn.relu(tf.reduce_sum(acts * weights, axis=-1))
            return _normalise(resize(cam, size, mode)), target

        return compile_fn(fn, model)
