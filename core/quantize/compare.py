"""Deployment quantization: TFLite conversion per mode, and the size/accuracy/latency table.

Modes (one validated set, :data:`MODES`):
    dynamic  post-training dynamic range: int8 weights, float activations
    int8     post-training full integer: int8 weights and activations, int8 input and output;
             needs a representative dataset from the training split
    float16  float16 weights (half the size, float compute)
    qat      tfmot quantization-aware fine-tuning, then full-integer conversion

3D models: TFLite has no integer ``CONV_3D`` kernel, so int8/qat models keep those ops in float32
between QUANTIZE/DEQUANTIZE ops. ``TFLiteModel.op_summary()`` reports which ops stay float and
the results JSON carries that note; nothing crashes. tfmot has no QAT config for ``Conv3D``, the
builtin-op 3D pooling layer, ``Resizing`` or BatchNorm not preceded by a Conv2D/Dense, so they get
the custom configs below.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import json  # noqa: E402
import math  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

from core.tflite_runner import TFLiteModel  # noqa: E402

MODES = ("dynamic", "int8", "float16", "qat")
MULTI_LABEL = "multi-label, binary-class"

# quantize_run writes a mode's .tflite only below this size, so shipped runs stay lean (VGG16
# float16 is ~29 MB); every number is recorded in results.json either way.
DEFAULT_MAX_FILE_BYTES = 16 * 1024 * 1024


def validate_mode(mode: str) -> str:
    """Return ``mode`` if it is one of :data:`MODES`, else raise ``ValueError`` listing them."""
    if mode not in MODES:
        raise ValueError(
            f"quantization mode {mode!r} is not supported; choose one of {', '.join(MODES)}"
        )
    return mode


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------
def _representative(data: Any, limit: int) -> Callable[[], Any]:
    arr = np.asarray(data, np.float32)
    if arr.ndim < 2 or len(arr) == 0:
        raise ValueError(f"representative_data must be a non-empty batch, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("representative_data contains NaN or infinite values")
    arr = arr[:limit]

    def gen():
        for i in range(len(arr)):
            yield [arr[i : i + 1]]

    return gen


def _converter(model: keras.Model) -> tf.lite.TFLiteConverter:
    # A concrete function with a free batch axis gives the interpreter a resizable batch
    # (shape_signature[0] == -1), so predict() can run whole batches.
    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
    fn = tf.function(lambda t: model(t, training=False)).get_concrete_function(spec)
    return tf.lite.TFLiteConverter.from_concrete_functions([fn], model)


def _convert(
    model: keras.Model,
    mode: str | None,
    representative_data: Any = None,
    num_calibration: int = 200,
) -> bytes:
    converter = _converter(model)
    if mode is None:  # plain float32 TFLite, the baseline for sizes
        return converter.convert()
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif mode in ("int8", "qat"):
        if representative_data is not None:
            converter.representative_dataset = _representative(representative_data, num_calibration)
        # Builtin int8 kernels only; ops without one (CONV_3D) stay float32 between
        # QUANTIZE/DEQUANTIZE, which the converter does by itself and op_summary reports.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


# --------------------------------------------------------------------------------------------
# Quantization-friendly rewrite: fold a head BatchNorm back into the last convolution
# --------------------------------------------------------------------------------------------
# Layers through which a positive per-channel scale passes unchanged: relu(s·x) = s·relu(x),
# max(s·x) = s·max(x) and mean(s·x) = s·mean(x) for s > 0.
_SCALE_EQUIVARIANT = (
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling3D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalAveragePooling3D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.GlobalMaxPooling3D,
)


def _is_chain(model: keras.Model) -> bool:
    layers = model.layers
    return all(
        [x.name for x in _inbound_layers(layer)] == [layers[i].name]
        for i, layer in enumerate(layers[1:])
    )


def _head_bn_fold_plan(model: keras.Model) -> tuple[int, int, int] | None:
    """Indices (conv, bn, dense) of a conv → pooling → BatchNorm → Dense head, else None."""
    from core.models.layers import MaxPool3DBuiltin

    layers = model.layers
    for b, layer in enumerate(layers):
        if not isinstance(layer, keras.layers.BatchNormalization) or b + 1 >= len(layers):
            continue
        if not isinstance(layers[b + 1], keras.layers.Dense):
            continue
        c = b - 1
        while c > 0 and isinstance(layers[c], (*_SCALE_EQUIVARIANT, MaxPool3DBuiltin)):
            c -= 1
        conv = layers[c]
        if (
            c < b - 1
            and isinstance(conv, keras.layers.Conv2D | keras.layers.Conv3D)
            and getattr(conv.activation, "__name__", "") in ("relu", "linear")
        ):
            return c, b, b + 1
    return None


def fold_head_batchnorm(model: keras.Model) -> tuple[keras.Model, str | None]:
    """An equivalent model without the BatchNorm between pooling and the first Dense layer.

    The fine-tuned VGG16 head normalises GAP channels whose variances span 0.0008 to 7400. A
    full-integer model gives that pooled tensor one int8 scale, and the converter multiplies the
    BatchNorm into the Dense kernel, whose rows then span the same ~3000× range: either way the
    small channels round to zero and every image gets the same output. BatchNorm is a per-channel
    ``s·x + t``; with every ``s > 0`` the scale moves through pooling and ReLU into the last
    convolution (``kernel[..., c] *= s_c``) and the shift into the Dense bias (``b += t @ W``).
    The conv then emits channels on comparable scales, which per-tensor int8 keeps.

    Returns:
        ``(model, note)``: the rewritten model and a one-line note, or the original model and
        None when there is no such BatchNorm, the graph is not a plain chain, or some ``s <= 0``
        (a negative scale would turn max pooling into min pooling).
    """
    plan = _head_bn_fold_plan(model)
    if plan is None or not _is_chain(model):
        return model, None
    c, b, d = plan
    layers = model.layers
    conv, bn, dense = layers[c], layers[b], layers[d]
    names = [w.name.split("/")[-1].split(":")[0] for w in bn.weights]
    weights = dict(zip(names, bn.get_weights(), strict=True))
    ones = np.ones_like(weights["moving_mean"])
    scale = weights.get("gamma", ones) / np.sqrt(weights["moving_variance"] + bn.epsilon)
    shift = weights.get("beta", 0.0 * ones) - weights["moving_mean"] * scale
    if not np.all(scale > 0):
        return model, None
    kernel, *bias = conv.get_weights()
    conv_weights = [kernel * scale, bias[0] * scale] if bias else [kernel * scale]
    dense_kernel, dense_bias = dense.get_weights()
    dense_weights = [dense_kernel, dense_bias + shift @ dense_kernel]

    inputs = keras.Input(batch_shape=model.input_shape, name=layers[0].name)
    x = inputs
    for i, layer in enumerate(layers[1:], 1):
        if i == b:
            continue
        new = layer.__class__.from_config(layer.get_config())
        x = new(x)
        new.set_weights(
            conv_weights if i == c else dense_weights if i == d else layer.get_weights()
        )
        new.trainable = layer.trainable
    folded = keras.Model(inputs, x, name=model.name)
    note = (
        f"{bn.name} folded into {conv.name} and {dense.name} before conversion (an exact "
        f"rewrite; BatchNorm scales spanned {scale.min():.3g}..{scale.max():.3g})"
    )
    return folded, note


def quantize(
    model: keras.Model,
    mode: str,
    representative_data: Any = None,
    *,
    train_data: tuple[np.ndarray, np.ndarray] | None = None,
    epochs: int = 1,
    batch_size: int = 32,
    learning_rate: float = 1e-5,
    task: str | None = None,
    num_calibration: int = 200,
    seed: int = 0,
) -> bytes:
    """Convert a Keras model to a TFLite flatbuffer in one of :data:`MODES`.

    Args:
        model: A flat tf-keras model (the trained float model; it is not modified).
        mode: One of :data:`MODES`.
        representative_data: Model-ready training inputs ``(N, ...)`` for calibration; required
            for ``int8`` and ``qat``. Up to ``num_calibration`` samples are used.
        train_data: ``(x, y)`` for the QAT fine-tune; without it QAT only calibrates its
            ranges on ``representative_data``.
        epochs: QAT fine-tune epochs.
        batch_size: QAT fine-tune batch size.
        learning_rate: QAT fine-tune learning rate. Small (1% of training's 1e-3): the float
            weights are already good and the fine-tune only adapts them to the quantization
            grid; at 1e-4 the RetinaMNIST VGG16 lost 0.004 test AUC, at 1e-5 none.
        task: medmnist task string for the QAT loss (default: inferred from the output layer).
        num_calibration: Samples used for calibration.
        seed: Seeds the QAT fine-tune.

    A BatchNorm between pooling and the first Dense layer is folded away first
    (:func:`fold_head_batchnorm`), an exact rewrite without which the fine-tuned VGG16 collapses
    to one constant output in every integer mode.

    Returns:
        The ``.tflite`` flatbuffer bytes.

    Raises:
        ValueError: Unknown mode, or missing/invalid representative data.
    """
    validate_mode(mode)
    model, _ = fold_head_batchnorm(model)
    if mode in ("int8", "qat") and representative_data is None:
        raise ValueError(
            f"mode {mode!r} needs representative_data: pass ~100-500 model-ready samples from "
            "the training split (e.g. x_train[:200]) so activation ranges can be calibrated"
        )
    if mode == "qat":
        qat_model = quantization_aware_model(
            model,
            representative_data,
            train_data=train_data,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            task=task,
            num_calibration=num_calibration,
            seed=seed,
        )
        return _convert(qat_model, "qat", representative_data, num_calibration)
    return _convert(model, mode, representative_data, num_calibration)


# --------------------------------------------------------------------------------------------
# Quantization-aware training (tfmot)
# --------------------------------------------------------------------------------------------
def _qat_configs() -> dict[str, type]:
    """QuantizeConfigs for layers tfmot's default 8-bit registry does not know."""
    import tensorflow_model_optimization as tfmot

    quantizers = tfmot.quantization.keras.quantizers
    base = tfmot.quantization.keras.QuantizeConfig

    class KernelQuantizeConfig(base):
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

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            layer.kernel = quantize_weights[0]

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

    return {
        "KernelQuantizeConfig": KernelQuantizeConfig,
        "OutputQuantizeConfig": OutputQuantizeConfig,
    }


_CONFIGS: dict[str, type] = {}


def _configs() -> dict[str, type]:
    if not _CONFIGS:
        _CONFIGS.update(_qat_configs())
    return _CONFIGS


def _inbound_layers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    nodes = getattr(layer, "_inbound_nodes", [])
    if not nodes:
        return []
    inbound = nodes[0].inbound_layers
    return list(inbound) if isinstance(inbound, list | tuple) else [inbound]


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
        if isinstance(layer, keras.layers.BatchNormalization):
            inbound = _inbound_layers(layer)
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


# --------------------------------------------------------------------------------------------
# Comparison table
# --------------------------------------------------------------------------------------------
def keras_latency_ms(model: keras.Model, x: np.ndarray, runs: int = 50, warmup: int = 5) -> float:
    """Median batch-1 latency of the float Keras model under ``tf.function``, in ms."""
    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
    call = tf.function(lambda t: model(t, training=False), input_signature=[spec])
    sample = tf.constant(np.asarray(x, np.float32)[:1])
    times = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        call(sample).numpy()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)


def _agreement(a: np.ndarray, b: np.ndarray, task: str) -> float:
    if task == MULTI_LABEL:
        return float(np.mean((a > 0.5) == (b > 0.5)))
    return float(np.mean(np.argmax(a, axis=-1) == np.argmax(b, axis=-1)))


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _occlusion_patch(spatial: Sequence[int]) -> int:
    return max(2, min(spatial) // 7)


def _collapse_note(float_scores: np.ndarray, scores: np.ndarray) -> list[str]:
    """Flag a quantized model whose output no longer depends on its input.

    Seen on the fine-tuned VGG16 before :func:`fold_head_batchnorm`: its head normalises GAP
    channels whose ranges differ by ~3000×; one int8 scale for the whole GAP output rounds the
    small channels away, and every image then gets the same probabilities.
    """
    spread = float(np.asarray(scores).std(axis=0).max())
    float_spread = float(np.asarray(float_scores).std(axis=0).max())
    if float_spread > 0 and spread < 1e-3 * float_spread:
        return [
            "collapsed: the same output for every test image (int8 activation scales erase "
            "features the float model relies on); do not deploy this variant"
        ]
    return []


def _notes(ops: dict[str, Any], mode: str) -> list[str]:
    notes = []
    conv3d = ops["float_ops"].get("CONV_3D", 0)
    if conv3d and mode in ("int8", "qat"):
        notes.append(
            f"{conv3d} CONV_3D op(s) stay float32: TFLite has no integer Conv3D kernel, so the "
            "model quantizes/dequantizes around them (weights still stored as float32)"
        )
    other = {k: v for k, v in ops["float_ops"].items() if k not in ("CONV_3D", "DELEGATE")}
    if mode in ("int8", "qat") and other:
        notes.append(f"other float ops: {other}")
    if mode == "dynamic":
        notes.append("dynamic range: int8 weights, activations computed in float")
    if mode == "float16":
        notes.append("float16 weights, dequantized to float32 at load; compute in float32")
    return notes


def compare_modes(
    model: keras.Model,
    x_test: np.ndarray,
    y_test: np.ndarray,
    task: str,
    representative: np.ndarray,
    modes: Sequence[str] = MODES,
    *,
    train_data: tuple[np.ndarray, np.ndarray] | None = None,
    qat_epochs: int = 1,
    occlusion_samples: int = 4,
    latency_runs: int = 50,
    on_bytes: Callable[[str, bytes], str | None] | None = None,
    progress: Callable[[str], None] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Quantize ``model`` in each mode and measure it against the float model.

    Args:
        model: The trained float Keras model.
        x_test: Model-ready test inputs (the full split for reportable numbers).
        y_test: Test labels ``(N, L)``.
        task: medmnist task string (selects the official metrics).
        representative: Model-ready training inputs for calibration.
        modes: Subset of :data:`MODES`.
        train_data: ``(x, y)`` for the QAT fine-tune.
        qat_epochs: QAT fine-tune epochs.
        occlusion_samples: Test samples on which float and TFLite occlusion maps are compared.
        latency_runs: Timed batch-1 invocations per model.
        on_bytes: Called as ``on_bytes(mode, flatbuffer)``; returns where it stored the file
            (recorded as ``file``) or ``None``.
        progress: Called with a short status line before each step.
        seed: Seeds the QAT fine-tune.

    Returns:
        ``{"float": {...}, "modes": {mode: {...}}, "task", "n_test"}``; a failed mode holds
        ``{"ok": False, "error": ...}`` and the others still run.
    """
    from core import evaluation
    from core.explain import keras_predict_fn, occlusion_agreement, occlusion_map

    for mode in modes:
        validate_mode(mode)
    say = progress or (lambda _msg: None)
    x_test = np.asarray(x_test, np.float32)
    float_predict = keras_predict_fn(model)
    say("float model")
    float_scores = float_predict(x_test)
    float_size = len(_convert(model, None))
    with tempfile.TemporaryDirectory() as tmp:
        keras_path = Path(tmp) / "model.keras"
        model.save(keras_path)
        keras_size = keras_path.stat().st_size
    float_metrics = evaluation.evaluate(y_test, float_scores, task)
    # Folded once here; quantize() folds again, which is a no-op on the folded model.
    deployable, fold_note = fold_head_batchnorm(model)
    float_latency = keras_latency_ms(model, x_test, runs=latency_runs)
    rng = np.random.default_rng(0)
    occ_idx = rng.choice(len(x_test), size=min(occlusion_samples, len(x_test)), replace=False)
    patch = _occlusion_patch(x_test.shape[1:-1])
    float_maps = [occlusion_map(float_predict, x_test[i], None, patch=patch) for i in occ_idx]
    result: dict[str, Any] = {
        "task": task,
        "n_test": len(x_test),
        "float": {
            "params": int(model.count_params()),
            "keras_size_bytes": keras_size,
            "size_bytes": float_size,
            "test": float_metrics,
            "latency_ms": float_latency,
        },
        "occlusion": {"samples": occ_idx.tolist(), "patch": patch, "stride": patch},
        "modes": {},
    }
    for mode in modes:
        say(f"{mode}: converting")
        entry: dict[str, Any] = {"ok": False}
        try:
            start = time.perf_counter()
            flat = quantize(
                deployable,
                mode,
                representative,
                train_data=train_data if mode == "qat" else None,
                epochs=qat_epochs,
                task=task,
                seed=seed,
            )
            entry["convert_s"] = round(time.perf_counter() - start, 2)
            runner = TFLiteModel(flat)
            say(f"{mode}: evaluating")
            scores = runner.predict(x_test)
            metrics = evaluation.evaluate(y_test, scores, task)
            latency = runner.latency_ms(x_test, runs=latency_runs)
            ops = runner.op_summary()
            # Explaining the deployed model: occlusion through the interpreter vs the float map.
            # The class is the float model's prediction so both maps answer the same question.
            corrs = []
            for i, fmap in zip(occ_idx, float_maps, strict=True):
                cls = int(np.argmax(float_scores[i]))
                qmap = occlusion_map(runner.predict, x_test[i], cls, patch=patch)
                corrs.append(_finite(occlusion_agreement(fmap, qmap)))
            valid = [c for c in corrs if c is not None]
            entry.update(
                ok=True,
                size_bytes=len(flat),
                size_ratio=float_size / len(flat),
                test=metrics,
                auc_delta=metrics["auc"] - float_metrics["auc"],
                acc_delta=metrics["acc"] - float_metrics["acc"],
                latency_ms=latency,
                speedup=float_latency / latency if latency > 0 else None,
                agreement=_agreement(float_scores, scores, task),
                occlusion_corr=corrs,
                occlusion_corr_mean=float(np.mean(valid)) if valid else None,
                ops=ops,
                notes=[n for n in [fold_note] if n]
                + _notes(ops, mode)
                + _collapse_note(float_scores, scores),
                file=on_bytes(mode, flat) if on_bytes else None,
            )
        except Exception as exc:  # one failing mode must not hide the others' numbers
            entry["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        result["modes"][mode] = entry
    return result


def quantize_run(
    run_dir: str | Path,
    modes: Sequence[str] = MODES,
    *,
    n_representative: int = 200,
    qat_epochs: int = 1,
    qat_train_samples: int | None = None,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ship_modes: Sequence[str] | None = None,
    latency_runs: int = 50,
    occlusion_samples: int = 4,
    data_root: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Quantize a registered run; write ``<run>/quantized/<mode>.tflite`` and ``results.json``.

    Modes not in ``modes`` keep their entries from an earlier ``results.json``.

    Args:
        run_dir: Run directory (see core.registry).
        modes: Subset of :data:`MODES`.
        n_representative: Training samples used for calibration (seeded random subset).
        qat_epochs: QAT fine-tune epochs on the training split.
        qat_train_samples: Limit the QAT fine-tune to this many training samples.
        max_file_bytes: Flatbuffers larger than this are measured but not written.
        ship_modes: If given, only these modes' files are written (the rest are measured):
            a VGG16 run ships its int8 model only, keeping the registry small.
        latency_runs: Timed batch-1 invocations per model.
        occlusion_samples: Test samples for the float-vs-TFLite occlusion comparison.
        data_root: MedMNIST folder (default: the ``MEDMNIST_ROOT`` setting).
        progress: Status-line callback.

    Returns:
        The dict written to ``results.json``.
    """
    from core import data, info, registry
    from core.models import prepare_input

    run = Path(run_dir)
    config = json.loads((run / "config.json").read_text())
    flag, family, size = config["dataset"], config["model"], int(config.get("size", 28))
    task = info.task(flag)
    model = registry.load_model(run, allow_outside=True)
    x_train, y_train = data.load_split(flag, "train", size, root=data_root)
    x_test, y_test = data.load_split(flag, "test", size, root=data_root)
    x_train, x_test = prepare_input(family, x_train), prepare_input(family, x_test)
    rng = np.random.default_rng(int(config.get("seed", 0)))
    rep = x_train[rng.choice(len(x_train), min(n_representative, len(x_train)), replace=False)]
    if qat_train_samples is not None and qat_train_samples < len(x_train):
        pick = rng.choice(len(x_train), qat_train_samples, replace=False)
        x_train, y_train = x_train[pick], y_train[pick]
    out_dir = run / "quantized"
    out_dir.mkdir(exist_ok=True)

    def store(mode: str, flat: bytes) -> str | None:
        path = out_dir / f"{mode}.tflite"
        if len(flat) > max_file_bytes or (ship_modes is not None and mode not in ship_modes):
            path.unlink(missing_ok=True)  # never leave a stale file from an earlier run
            return None
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(flat)
        os.replace(tmp, path)
        return f"quantized/{path.name}"

    result = compare_modes(
        model,
        x_test,
        y_test,
        task,
        rep,
        modes,
        train_data=(x_train, y_train),
        qat_epochs=qat_epochs,
        latency_runs=latency_runs,
        occlusion_samples=occlusion_samples,
        on_bytes=store,
        progress=progress,
        seed=int(config.get("seed", 0)),
    )
    result.update(
        run=run.name,
        dataset=flag,
        model=family,
        n_representative=len(rep),
        qat_epochs=qat_epochs,
        qat_train_samples=len(x_train),
        max_file_bytes=max_file_bytes,
        created=time.strftime("%Y-%m-%dT%H:%M:%S"),
        versions={"tensorflow": tf.__version__},
    )
    # Re-running a subset of modes keeps the other modes' earlier entries.
    previous = registry.read_json(out_dir, "results.json", None)
    if isinstance(previous, dict) and isinstance(previous.get("modes"), dict):
        merged = {**previous["modes"], **result["modes"]}
        result["modes"] = {m: merged[m] for m in MODES if m in merged}
    registry.write_json_atomic(out_dir / "results.json", result)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m core.quantize RUN_DIR [--modes dynamic int8 ...]``."""
    from core import cli

    parser = cli.ArgumentParser(
        prog="python -m core.quantize", description="Quantize a trained run and compare the modes."
    )
    parser.add_argument("run_dir", help="run name in the registry, or path of a run directory")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--qat-epochs", type=cli.non_negative_int, default=1)
    parser.add_argument("--qat-train-samples", type=cli.positive_int, default=None)
    parser.add_argument("--max-file-bytes", type=cli.positive_int, default=DEFAULT_MAX_FILE_BYTES)
    args = parser.parse_args(argv)
    run = cli.check_run(args.run_dir)  # before minutes of converting
    result = quantize_run(
        run,
        args.modes,
        qat_epochs=args.qat_epochs,
        qat_train_samples=args.qat_train_samples,
        max_file_bytes=args.max_file_bytes,
        progress=lambda msg: print(msg, flush=True),
    )
    print(format_table(result))
    return 0


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of a :func:`compare_modes` result."""
    fl = result["float"]
    rows = [
        f"{'mode':<9}{'size':>12}{'ratio':>7}{'AUC':>8}{'ACC':>8}{'ms/img':>9}{'speedup':>9}"
        f"{'agree':>7}{'occ r':>7}",
        f"{'float':<9}{fl['size_bytes']:>12,}{1.0:>7.2f}{fl['test']['auc']:>8.4f}"
        f"{fl['test']['acc']:>8.4f}{fl['latency_ms']:>9.2f}{1.0:>9.2f}{1.0:>7.3f}{'':>7}",
    ]
    for mode, entry in result["modes"].items():
        if not entry.get("ok"):
            rows.append(f"{mode:<9} FAILED: {entry.get('error', '')[:80]}")
            continue
        occ = entry.get("occlusion_corr_mean")
        rows.append(
            f"{mode:<9}{entry['size_bytes']:>12,}{entry['size_ratio']:>7.2f}"
            f"{entry['test']['auc']:>8.4f}{entry['test']['acc']:>8.4f}{entry['latency_ms']:>9.2f}"
            f"{entry['speedup']:>9.2f}{entry['agreement']:>7.3f}"
            f"{(f'{occ:.3f}' if occ is not None else '-'):>7}"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    from core import cli

    raise SystemExit(cli.run(main))
