"""TFLite conversion per mode: :data:`MODES`, :func:`quantize` and the converter settings.

Modes (one validated set, :data:`MODES`):
    dynamic  post-training dynamic range: int8 weights, float activations
    int8     post-training full integer: int8 weights and activations, int8 input and output;
             needs a representative dataset from the training split
    float16  float16 weights (half the size, float compute)
    qat      tfmot quantization-aware fine-tuning (:mod:`core.quantize.qat`), then
             full-integer conversion

3D models: TFLite has no integer ``CONV_3D`` kernel, so for the integer modes (dynamic, int8,
qat) :func:`~core.quantize.conv3d_rewrite.rewrite_conv3d` first turns every Conv3D into an exact
Conv2D over depth-shifted views (BatchNorm folded in); the int8 file then has no float conv.
``TFLiteModel.op_summary()`` reports any op that still computes in float, and the results JSON
carries that note; nothing crashes. float16 keeps the original graph (float compute either way).

Usage (2D and 3D alike; ``x_train`` is model-ready, see ``core.models.prepare_input``)::

    flat = quantize(model, "int8", representative_data=x_train[:200])
    TFLiteModel(flat).predict(x_test)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from core.quantize.conv3d_rewrite import rewrite_conv3d
from core.quantize.fold import fold_head_batchnorm
from core.quantize.qat import quantization_aware_model

MODES = ("dynamic", "int8", "float16", "qat")
# Modes whose weights (and for int8/qat activations) become integers: the ones the Conv3D
# rewrite helps. Dynamic range has no integer CONV_3D either (its Conv3D weights stayed float32).
REWRITE_MODES = ("dynamic", "int8", "qat")


def validate_mode(mode: str) -> str:
    """Return ``mode`` if it is one of :data:`MODES`, else raise ``ValueError`` listing them."""
    if mode not in MODES:
        raise ValueError(
            f"quantization mode {mode!r} is not supported; choose one of {', '.join(MODES)}"
        )
    return mode


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


def _converter(model: keras.Model, new_quantizer: bool = True) -> tf.lite.TFLiteConverter:
    # A concrete function with a free batch axis gives the interpreter a resizable batch
    # (shape_signature[0] == -1), so predict() can run whole batches.
    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
    fn = tf.function(lambda t: model(t, training=False)).get_concrete_function(spec)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], model)
    converter.experimental_new_quantizer = new_quantizer
    return converter


def _float_compute_ops(flat: bytes) -> dict[str, int]:
    from core.tflite_runner import TFLiteModel

    return TFLiteModel(flat, num_threads=1).op_summary()["float_ops"]


def _convert(
    model: keras.Model,
    mode: str | None,
    representative_data: Any = None,
    num_calibration: int = 200,
    new_quantizer: bool = True,
) -> bytes:
    converter = _converter(model, new_quantizer)
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
    to one constant output in every integer mode. For ``dynamic``, ``int8`` and ``qat`` every
    Conv3D is then rewritten into Conv2D over depth-shifted views (:func:`rewrite_conv3d`, also
    exact in float), so a 3D model quantizes fully; QAT fine-tunes the rewritten graph.
    An int8 conversion that leaves float compute ops is retried with TFLite's older quantizer,
    kept only if that one quantizes every op.

    Returns:
        The ``.tflite`` flatbuffer bytes.

    Raises:
        ValueError: Unknown mode, or missing/invalid representative data.
    """
    validate_mode(mode)
    model, _ = fold_head_batchnorm(model)
    if mode in REWRITE_MODES:
        # (model, None) for models without Conv3D. No depth grouping for dynamic range: it only
        # pays for int8 kernels, and the grouped first conv's kernel (> 1024 weights) would be
        # quantized to a dynamic-range conv that ran slower than the float one it replaces
        # (cnn3d: 0.80 → 1.01 ms per volume).
        model, _ = rewrite_conv3d(model, group_width=0 if mode == "dynamic" else 64)
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
    flat = _convert(model, mode, representative_data, num_calibration)
    if mode == "int8" and _float_compute_ops(flat):
        # Measured on the rewritten 3D ResNet: the MLIR calibration quantizer left the stride-2
        # projection CONV_2D in float32 between DEQUANTIZE/QUANTIZE (its calibrated range was
        # dropped), while the older quantizer made every op int8 with the same outputs.
        legacy = _convert(model, mode, representative_data, num_calibration, new_quantizer=False)
        if not _float_compute_ops(legacy):
            return legacy
    return flat
