"""The base class of every attribution method and the registry :func:`core.explain.attribution`
dispatches on.

The design follows pytorch-grad-cam's ``BaseCAM``: the shared work (checking the input, class
and layers, batching, caching the compiled function per model, scaling to [0, 1]) lives here
and in :mod:`core.explain.attribution`; a method overrides :meth:`Attribution.build` (or, for a
gradient CAM, only :meth:`core.explain.cams.GradientCam.weights`).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any, ClassVar

import tensorflow as tf
import tf_keras as keras

# model -> {(method, layers, options): compiled fn}; weak keys, so the functions go with the
# model.
_FN_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()

REGISTRY: dict[str, Attribution] = {}


class Attribution:
    """One attribution method. Subclasses set the class attributes and override :meth:`build`.

    Attributes:
        name: Key in :data:`REGISTRY` and ``core.explain.METHODS`` (e.g. ``"gradcam"``).
        title: Short name for people (e.g. ``"Grad-CAM"``).
        help: One or two plain-language sentences for a clinician.
        layers: ``"one"`` (a CAM of one feature layer), ``"many"`` (fused over several layers),
            or ``"none"`` (works on the input pixels/voxels).
        batch_size: Samples per compiled call (memory: Score-CAM runs a forward pass per
            channel, Integrated Gradients one per step).
        defaults: Method options and their default values (see :meth:`options`).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    help: ClassVar[str] = ""
    layers: ClassVar[str] = "one"
    batch_size: ClassVar[int] = 64
    defaults: ClassVar[dict[str, Any]] = {}

    def options(self, given: dict[str, Any]) -> dict[str, Any]:
        """Merge the caller's options over :attr:`defaults`.

        Raises:
            ValueError: For an option this method does not have.
        """
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"method {self.name!r} has no option(s) {unknown}; its options are "
                f"{dict(self.defaults)}"
            )
        return {**self.defaults, **given}

    def extra_inputs(self, x: Any, options: dict[str, Any]) -> tuple:
        """Per-sample arrays the compiled function takes after ``(x, classes)``, batch first
        (e.g. SmoothGrad's noise). Default: none."""
        return ()

    def build(
        self, model: keras.Model, layers: tuple[str, ...], options: dict[str, Any]
    ) -> Callable[..., tuple[tf.Tensor, tf.Tensor]]:
        """Build the function ``(x, classes, *extra) -> (maps, targets)``.

        ``x`` is a float32 batch ``(n, *spatial, channels)``; ``classes`` int32 ``(n,)`` with -1
        meaning the predicted class. ``maps`` are ``(n, *spatial)`` and non-negative (scaled to
        [0, 1] by the caller); ``targets`` the class each map explains. The result is cached per
        (model, method, layers, options), so compile it here (``tf.function``).

        Args:
            model: The flat tf-keras model.
            layers: Resolved layer names (empty for pixel methods).
            options: Method options, merged with :attr:`defaults` (hashable values).

        Returns:
            The function.
        """
        raise NotImplementedError

    def function(
        self, model: keras.Model, layers: tuple[str, ...], options: dict[str, Any]
    ) -> Callable[..., tuple[tf.Tensor, tf.Tensor]]:
        """:meth:`build`, cached per (model, method, layers, options)."""
        key = (self.name, layers, tuple(sorted(options.items())))
        with _CACHE_LOCK:
            per_model = _FN_CACHE.setdefault(model, {})
            if key not in per_model:
                per_model[key] = self.build(model, layers, options)
            return per_model[key]


def register(cls: type[Attribution]) -> type[Attribution]:
    """Class decorator: add one instance of ``cls`` to :data:`REGISTRY` under ``cls.name``."""
    REGISTRY[cls.name] = cls()
    return cls


def compile_fn(fn: Callable, model: keras.Model, extra: tuple[tf.TensorSpec, ...] = ()):
    """``tf.function`` with a fixed signature ``(x, classes, *extra)``, as a concrete function.

    The concrete function skips tf.function's per-call signature matching (~1 ms here).
    """
    signature = [
        tf.TensorSpec((None, *model.input_shape[1:]), tf.float32),
        tf.TensorSpec((None,), tf.int32),
        *extra,
    ]
    return tf.function(fn, input_signature=signature).get_concrete_function()


def pick_target(scores: tf.Tensor, classes: tf.Tensor) -> tf.Tensor:
    """The class each sample explains: ``classes``, or the top score where it is -1."""
    predicted = tf.argmax(scores, axis=-1, output_type=tf.int32)
    return tf.where(classes < 0, predicted, classes)
