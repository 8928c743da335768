"""Run TFLite flatbuffers with ai-edge-litert, hiding int8 (de)quantisation from callers.

``TFLiteModel(bytes_or_path).predict(x)`` takes the same float inputs as the Keras model and
returns float probabilities, so its output goes through the same official metrics
(``core.evaluation.evaluate``) as the float model's.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

# Ops that only move data between float and integer domains; they are not "float compute".
_CONVERSION_OPS = {"QUANTIZE", "DEQUANTIZE"}


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


class TFLiteModel:
    """A thread-safe TFLite interpreter with a Keras-like ``predict``.

    One interpreter is shared by every thread (``st.cache_resource`` hands the same object to
    all sessions), so every set-invoke-get sequence holds a lock.

    Args:
        model: Flatbuffer bytes or a path to a ``.tflite`` file.
        num_threads: Interpreter threads. Default: every CPU this process may use, as
            TensorFlow uses for the Keras model; the runtime's own default here was one thread,
            which halved int8 VGG16 throughput and made the Keras-vs-TFLite comparison unfair.
    """

    def __init__(self, model: bytes | str | Path, num_threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        if isinstance(model, bytes | bytearray):
            self._content = bytes(model)
        else:
            path = Path(model)
            if not path.is_file():
                raise FileNotFoundError(f"TFLite model file not found: {path}")
            self._content = path.read_bytes()
        if num_threads is None:
            num_threads = available_cpus()
        self.num_threads = num_threads
        self._interpreter = Interpreter(model_content=self._content, num_threads=num_threads)
        self._interpreter.allocate_tensors()
        self._lock = threading.Lock()
        inp = self._interpreter.get_input_details()
        out = self._interpreter.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise ValueError(
                f"TFLiteModel supports one input and one output; got {len(inp)} and {len(out)}"
            )
        self._in, self._out = inp[0], out[0]
        signature = self._in.get("shape_signature", self._in["shape"])
        self._dynamic_batch = int(signature[0]) == -1
        self._batched_ok = self._dynamic_batch
        self._batch = int(self._in["shape"][0])

    # ----------------------------------------------------------------------------------------
    @property
    def size_bytes(self) -> int:
        """Size of the flatbuffer in bytes."""
        return len(self._content)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Input shape with ``None`` for the batch axis (as Keras' ``model.input_shape``)."""
        return (None, *(int(d) for d in self._in["shape"][1:]))

    @property
    def input_dtype(self) -> np.dtype:
        """The interpreter's input dtype (float32, or int8/uint8 for full-integer models)."""
        return np.dtype(self._in["dtype"])

    @property
    def output_dtype(self) -> np.dtype:
        """The interpreter's output dtype."""
        return np.dtype(self._out["dtype"])

    # ----------------------------------------------------------------------------------------
    def _quantize_input(self, x: np.ndarray) -> np.ndarray:
        dtype = self.input_dtype
        if dtype == np.float32:
            return x.astype(np.float32, copy=False)
        scale, zero = self._in["quantization"]
        info = np.iinfo(dtype)
        q = np.round(x / scale + zero)
        return np.clip(q, info.min, info.max).astype(dtype)

    def _dequantize_output(self, y: np.ndarray) -> np.ndarray:
        if self.output_dtype == np.float32:
            return y.astype(np.float32, copy=True)
        scale, zero = self._out["quantization"]
        return ((y.astype(np.float32) - zero) * scale).astype(np.float32)

    def _run(self, xq: np.ndarray) -> np.ndarray:
        # Caller holds the lock.
        interp = self._interpreter
        if xq.shape[0] != self._batch:
            interp.resize_tensor_input(self._in["index"], list(xq.shape), strict=False)
            interp.allocate_tensors()
            self._batch = xq.shape[0]
        interp.set_tensor(self._in["index"], xq)
        interp.invoke()
        return interp.get_tensor(self._out["index"]).copy()

    def predict(self, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Float outputs for a float input batch (quantisation handled here).

        Args:
            x: ``(N, *input_shape[1:])`` float array, the same input the Keras model takes.
            batch_size: Samples per interpreter invocation when the batch axis is resizable.

        Returns:
            ``(N, outputs)`` float32 array.
        """
        arr = np.asarray(x, np.float32)
        expected = self.input_shape[1:]
        if arr.ndim != len(expected) + 1 or tuple(arr.shape[1:]) != expected:
            raise ValueError(
                f"input has shape {arr.shape}; this TFLite model expects (N, *{expected})"
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError("input contains NaN or infinite values")
        xq = self._quantize_input(arr)
        outputs = []
        with self._lock:
            if self._batched_ok:
                try:
                    for start in range(0, len(xq), batch_size):
                        outputs.append(self._run(xq[start : start + batch_size]))
                except (RuntimeError, ValueError):
                    # Some graphs bake the batch size into reshape constants; fall back to one
                    # sample per invocation, which every converted graph supports.
                    self._batched_ok = False
                    outputs = []
            if not self._batched_ok:
                outputs = [self._run(xq[i : i + 1]) for i in range(len(xq))]
        return self._dequantize_output(np.concatenate(outputs, axis=0))

    __call__ = predict

    def latency_ms(self, x: np.ndarray, runs: int = 50, warmup: int = 5) -> float:
        """Median wall time of one batch-1 invocation, in milliseconds.

        Quantising the input and dequantising the output are included, as a caller pays them.

        Args:
            x: At least one sample; the first is used.
            runs: Timed invocations.
            warmup: Untimed invocations first.
        """
        sample = np.asarray(x, np.float32)[:1]
        with self._lock:
            times = []
            for i in range(warmup + runs):
                start = time.perf_counter()
                self._dequantize_output(self._run(self._quantize_input(sample)))
                if i >= warmup:
                    times.append(time.perf_counter() - start)
        return float(np.median(times) * 1000.0)

    def op_summary(self) -> dict[str, Any]:
        """Op counts by type, and which ops compute in float.

        Returns:
            ``{"ops": {name: count}, "float_ops": {name: count}, "n_ops": int,
            "input_dtype": str, "output_dtype": str, "fully_integer": bool}``. An op counts as
            float when any of its non-constant float32 operands or results feeds its compute
            (quantize/dequantize boundary ops are excluded).
        """
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        # A delegate-free interpreter lists the model's own ops; the default XNNPACK delegate
        # would add DELEGATE nodes that say nothing about the model's quantization.
        plain = Interpreter(
            model_content=self._content,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        plain.allocate_tensors()
        ops = plain._get_ops_details()
        counts: Counter[str] = Counter()
        floats: Counter[str] = Counter()
        for op in ops:
            name = op["op_name"]
            counts[name] += 1
            if name in _CONVERSION_OPS:
                continue
            types = list(op.get("operand_types", [])) + list(op.get("result_types", []))
            if any(np.dtype(t) == np.float32 for t in types):
                floats[name] += 1
        return {
            "ops": dict(sorted(counts.items())),
            "float_ops": dict(sorted(floats.items())),
            "n_ops": int(sum(counts.values())),
            "input_dtype": self.input_dtype.name,
            "output_dtype": self.output_dtype.name,
            "fully_integer": not floats,
        }
