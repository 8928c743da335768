"""Quantization-aware training (tfmot), including the custom QuantizeConfigs for 3D layers.

tfmot has no QAT config for ``Conv3D``, the builtin-op 3D pooling layer, ``Resizing`` or
BatchNorm not preceded by a Conv2D/Dense, so they get the custom configs below. 3D models
reach here already rewritten by :func:`core.quantize.conv3d_rewrite.rewrite_conv3d` (QAT runs on
the rewritten graph, whose Conv2D layers get tfmot's own per-channel config); the rewrite's
reshape layers get no quantizers of their own.

Usage::

    # What core.quantize.quantize(model, "qat", ...) does before full-integer conversion:
    qat = quantization_aware_model(model, x_train[:200], train_data=(x_train, y_train))
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from core.info import MULTI_LABEL
from core.quantize.fold import inbound_layers


def _qat_configs() -> dict[str, type]:
    """QuantizeConfigs for layers tfmot's default 8-bit registry does not know."""
    import tensorflow_model_optimization as tfmot

    quantizers = tfmot.quantization.keras.quantizers
    base = tfmot.quantization.keras.QuantizeConfig

    class OutputQuantizeConfig(base):
        """No weights; quantize the output (pooling, resizing, stray BatchNorm)."""

        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return [
                quantizers.MovingAverageQuantizer(
                    num_bits=8, per_axis=False, symmetric=False, narrow_range=False
                )
            ]

        def get_config(self):
            return {}

    class KernelQuantizeConfig(OutputQuantizeConfig):
        """Per-tensor symmetric int8 kernel + quantized output (Conv3D and other kernels).

        Per-tensor, because tfmot's per-channel weight quantizer only handles 2D kernels.
        """

        def get_weights_and_quantizers(self, layer):
            return [
                (
                    layer.kernel,
                    quantizers.LastValueQuantizer(
                        num_bits=8, per_axis=False, symmetric=True, narrow_range=True
                    ),
                )
            ]

        def set_quantize_weights(self, layer, quantize_weights):
            layer.kernel = quantize_weights[0]

    class PassthroughQuantizeConfig(OutputQuantizeConfig):
        """No quantizers at all: pure data movement (pad/slice/concat/reshape) keeps the
        range of its input, as TFLite's int8 kernels for those ops require."""

        def get_output_quantizers(self, layer):
            return []

    return {
        "KernelQuantizeConfig": KernelQuantizeConfig,
        "OutputQuantizeConfig": OutputQuantizeConfig,
        "PassthroughQuantizeConfig": PassthroughQuantizeConfig,
    }


_CONFIGS: dict[str, type] = {}


def _configs() -> dict[str, type]:
    if not _CONFIGS:
        _CONFIGS.update(_qat_configs())
    return _CONFIGS


def _annotate(model: keras.Model) -> keras.Model:
    """Annotate every layer for QAT, with custom configs where tfmot has none."""
    import tensorflow_model_optimization as tfmot
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as registry_mod,
    )

    registry = registry_mod.Default8BitQuantizeRegistry()
    configs = _configs()
    annotate = tfmot.quantization.keras.quantize_annotate_layer
    nested = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
    if nested:
        raise ValueError(
            f"QAT needs a flat model; {model.name!r} contains nested model(s) {nested}. Build it "
            "flat (e.g. VGG16(include_top=False, input_tensor=x))."
        )
    # tfmot's layout transforms fold BatchNorm into a preceding Conv2D/Dense; any other BatchNorm
    # (after Conv3D, or after pooling in a head) needs its own config.
    foldable = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    plan: dict[str, Any] = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if getattr(layer, "quantize_passthrough", False):  # conv3d_rewrite's reshapes
            plan[layer.name] = configs["PassthroughQuantizeConfig"]()
        elif isinstance(layer, keras.layers.BatchNormalization):
            inbound = inbound_layers(layer)
            folds = len(inbound) == 1 and isinstance(inbound[0], foldable)
            plan[layer.name] = None if folds else configs["OutputQuantizeConfig"]()
        elif registry.supports(layer):
            plan[layer.name] = None
        elif hasattr(layer, "kernel"):
            plan[layer.name] = configs["KernelQuantizeConfig"]()
        else:
            plan[layer.name] = configs["OutputQuantizeConfig"]()

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        new = layer.__class__.from_config(layer.get_config())
        if layer.name not in plan:
            return new
        return annotate(new, quantize_config=plan[layer.name])

    annotated = keras.models.clone_model(model, clone_function=clone)
    annotated.set_weights(model.get_weights())
    return annotated


def _custom_objects(model: keras.Model) -> dict[str, Any]:
    objects = dict(_configs())
    for layer in model.layers:
        cls = type(layer)
        if not cls.__module__.startswith(("tf_keras", "keras", "tensorflow")):
            objects[cls.__name__] = cls
    return objects


def _infer_task(model: keras.Model) -> str:
    activation = getattr(model.layers[-1], "activation", None)
    name = getattr(activation, "__name__", "")
    return MULTI_LABEL if name == "sigmoid" else "multi-class"


def _set_dropout(model: keras.Model, rates: dict[str, float] | None) -> dict[str, float]:
    old = {}
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, keras.layers.Dropout):
            old[layer.name] = inner.rate
            inner.rate = 0.0 if rates is None else rates[layer.name]
    return old


def _keep_frozen(qat: keras.Model, model: keras.Model) -> None:
    """Keep layers frozen in ``model`` frozen in its QAT copy.

    tfmot's QuantizeWrapperV2 appends the wrapped layer's kernel to its own trainable weights
    whatever the layer's ``trainable`` flag, so without this a frozen VGG16 backbone would be
    fine-tuned by QAT (it cost the RetinaMNIST VGG16 0.035 test AUC).
    """
    frozen = {layer.name for layer in model.layers if not layer.trainable}
    for wrapper in qat.layers:
        inner = getattr(wrapper, "layer", None)
        if inner is None or inner.name not in frozen or not hasattr(wrapper, "_trainable_weights"):
            continue
        inner.trainable = False
        # The wrapper's own trainable list only holds the wrapped layer's weights (quantizer
        # ranges are non-trainable); the quantized kernel is no longer tracked by the inner
        # layer, so move the list to the non-trainable side instead of dropping it.
        # Lists are changed in place: assigning a list of variables to a Keras layer attribute
        # re-tracks trainable variables as trainable.
        moved = list(wrapper._trainable_weights)
        del wrapper._trainable_weights[:]
        wrapper._non_trainable_weights.extend(moved)


def _calibrate(qat: keras.Model, data: np.ndarray, batch_size: int) -> None:
    """Set every activation range of a fresh QAT model from representative data.

    tfmot starts each range at [-6, 6]: the input quantizer only ever widens it (a [0, 1] image
    would be quantized in steps of 12/255), and the moving-average quantizers follow the data
    with decay 0.999, i.e. only after thousands of steps. A [-6, 6] range clips VGG16's caffe
    preprocessing output (about -124..152) and wrecked the model (RetinaMNIST test AUC 0.48).
    So the ranges are zeroed, and the moving-average decay is set to give the running mean of
    the per-batch extremes (0 on the first batch, k/(k+1) after k batches) for this pass only.
    """
    from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

    for layer in qat.layers:
        for weight in layer.non_trainable_weights:
            if weight.name.split(":")[0].endswith(("_min", "_max")):
                weight.assign(tf.zeros_like(weight))
    decay = [0.0]
    original = quant_ops.MovingAvgQuantize

    def running_mean(*args: Any, **kwargs: Any) -> Any:
        kwargs["ema_decay"] = decay[0]
        return original(*args, **kwargs)

    rates = _set_dropout(qat, None)  # ranges must describe inference, without dropout
    quant_ops.MovingAvgQuantize = running_mean
    try:
        for k, start in enumerate(range(0, len(data), batch_size)):
            decay[0] = k / (k + 1)
            qat(tf.constant(data[start : start + batch_size]), training=True)
    finally:
        quant_ops.MovingAvgQuantize = original
        _set_dropout(qat, rates)


def quantization_aware_model(
    model: keras.Model,
    representative_data: Any,
    *,
    train_data: tuple[np.ndarray, np.ndarray] | None = None,
    epochs: int = 1,
    batch_size: int = 32,
    learning_rate: float = 1e-5,
    task: str | None = None,
    num_calibration: int = 200,
    seed: int = 0,
) -> keras.Model:
    """The tfmot fake-quantized copy of ``model``, calibrated and optionally fine-tuned.

    BatchNorm statistics are frozen throughout: with live batch statistics a short fine-tune
    shifted them away from the float model's (RetinaMNIST cnn2d lost 0.047 AUC; frozen, 0.004).

    Args:
        model: The trained float model (not modified).
        representative_data: Model-ready inputs used to calibrate activation ranges.
        train_data: ``(x, y)`` for a short fine-tune; ``None`` skips it.
        epochs: Fine-tune epochs.
        batch_size: Fine-tune and calibration batch size.
        learning_rate: Fine-tune learning rate.
        task: medmnist task string (default: inferred from the output activation).
        num_calibration: Samples used for calibration.
        seed: Seeds the fine-tune's shuffling and dropout, so a rerun gives the same model.

    Returns:
        The QAT Keras model (convert it with full-integer TFLite conversion).
    """
    import tensorflow_model_optimization as tfmot

    annotated = _annotate(model)
    with tfmot.quantization.keras.quantize_scope(_custom_objects(model)):
        qat = tfmot.quantization.keras.quantize_apply(annotated)
    _keep_frozen(qat, model)
    for layer in qat.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, keras.layers.BatchNormalization):
            # trainable=False makes tf-keras BatchNorm run in inference mode even when training.
            inner.trainable = False

    _calibrate(qat, np.asarray(representative_data, np.float32)[:num_calibration], batch_size)

    if train_data is not None and epochs > 0:
        x, y = train_data
        task = task or _infer_task(model)
        loss = (
            keras.losses.BinaryCrossentropy()
            if task == MULTI_LABEL
            else keras.losses.SparseCategoricalCrossentropy()
        )
        keras.utils.set_random_seed(seed)
        qat.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
        qat.fit(
            np.asarray(x, np.float32),
            np.asarray(y),
            epochs=epochs,
            batch_size=batch_size,
            shuffle=True,
            verbose=0,
        )
    return qat
