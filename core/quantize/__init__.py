"""Deployment quantization: TFLite conversion per mode, and the size/accuracy/latency table.

- :mod:`core.quantize.convert`: :data:`MODES`, :func:`quantize` (model → ``.tflite`` bytes).
- :mod:`core.quantize.fold`: :func:`fold_head_batchnorm`, the exact rewrite applied first.
- :mod:`core.quantize.conv3d_rewrite`: :func:`rewrite_conv3d`, the exact Conv3D → Conv2D
  rewrite applied next for the integer modes (:data:`REWRITE_MODES`), so 3D models quantize fully.
- :mod:`core.quantize.qat`: :func:`quantization_aware_model` (tfmot, custom 3D configs).
- :mod:`core.quantize.compare`: :func:`compare_modes`, :func:`quantize_run` (writes
  ``<run>/quantized/results.json``), :func:`format_table`.
- ``python -m core.quantize RUN_DIR`` (:mod:`core.quantize.__main__`).

Usage::

    from core.quantize import quantize, quantize_run
    flat = quantize(model, "int8", representative_data=x_train[:200])
    result = quantize_run("trained_models/cnn2d_aug", modes=("dynamic", "int8"))
"""

# _collapse_note (tests) and _convert (the float32 TFLite baseline of benchmarks/run.py) are
# private names re-exported for their existing callers.
from core.quantize.compare import (
    DEFAULT_MAX_FILE_BYTES,
    compare_modes,
    format_table,
    keras_latency_ms,
    quantize_run,
)
from core.quantize.compare import (
    _collapse_note as _collapse_note,
)
from core.quantize.conv3d_rewrite import rewrite_conv3d
from core.quantize.convert import MODES, REWRITE_MODES, quantize, validate_mode
from core.quantize.convert import _convert as _convert
from core.quantize.fold import fold_head_batchnorm
from core.quantize.qat import quantization_aware_model

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "MODES",
    "REWRITE_MODES",
    "compare_modes",
    "fold_head_batchnorm",
    "format_table",
    "keras_latency_ms",
    "quantization_aware_model",
    "quantize",
    "quantize_run",
    "rewrite_conv3d",
    "validate_mode",
]
