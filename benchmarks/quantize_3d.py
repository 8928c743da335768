"""3D quantization benchmark: the Conv3D rewrite before/after, with ONNX Runtime int8 beside it.

For the shipped 3D run (default ``trained_models/cnn3d``, AdrenalMNIST3D 28³) it measures, in one
process and on the full test split:

- float Keras, float32 TFLite (the size baseline);
- ``before``: TFLite int8 / QAT / dynamic of the graph as trained (``core.quantize._convert``
  without the rewrite: every CONV_3D stays float32 between QUANTIZE/DEQUANTIZE);
- ``after``: ``core.quantize.quantize`` in the same modes (Conv3D rewritten into Conv2D);
- ONNX Runtime: the same model through tf2onnx, then ``quantize_dynamic`` and ``quantize_static``
  (QDQ, per-channel int8, calibrated on the same training volumes), if both packages import.

Then a cnn3d at 64³ (AdrenalMNIST3D 64) with **random weights** (size and latency only; its
agreement is reported but it is not a trained model): float Keras, float32 TFLite, int8 before
and after, ONNX Runtime int8 static.

Latency is batch 1, median over ``--rounds`` rounds that visit every variant in turn (so load
from other processes hits every variant alike), ``--runs`` calls per variant per round, all
CPUs this process may use. The machine load (``os.getloadavg``) before and after is recorded.

Usage (repository root)::

    MEDMNIST_ROOT=/path/to/npz python -m benchmarks.quantize_3d [--run trained_models/cnn3d]
        [--parts run28 cnn3d_64] [--runs 20] [--rounds 5] [--qat-epochs 1] [--skip-onnx]
        [--skip-qat] [--threads N] [--output docs/results/quantize_3d.json]

Benchmark-only dependencies (tf2onnx, onnxruntime) are in ``requirements-bench.txt``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path("docs/results/quantize_3d.json")
# Threads for every runtime (None: all CPUs this process may use); set once by main(). With
# --threads 1 the comparison holds up better on an oversubscribed machine, where runtimes
# whose worker threads spin-wait lose most.
THREADS: int | None = None


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


class Variant:
    """One deployable form of the model: how to score the test split and time one call."""

    def __init__(
        self, name: str, size: int | None, predict: Callable, once: Callable, **info: Any
    ) -> None:
        self.name, self.size, self.predict, self.once, self.info = name, size, predict, once, info


def _keras_variant(model: Any, sample: np.ndarray, batch: int = 64) -> Variant:
    import tensorflow as tf

    from core.explain import keras_predict_fn

    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
    call = tf.function(lambda t: model(t, training=False), input_signature=[spec])
    const = tf.constant(sample)
    predict = keras_predict_fn(model, batch_size=batch)
    return Variant("float Keras", None, predict, lambda: call(const).numpy())


def _tflite_variant(
    name: str, flat: bytes, sample: np.ndarray, batch: int = 64, **info: Any
) -> Variant:
    from core.tflite_runner import TFLiteModel

    runner = TFLiteModel(flat, num_threads=THREADS)
    ops = runner.op_summary()
    xq = runner._quantize_input(sample)  # noqa: SLF001 - time what TFLiteModel.latency_ms times

    def once() -> None:
        with runner._lock:  # noqa: SLF001
            runner._dequantize_output(runner._run(xq))  # noqa: SLF001

    return Variant(
        name,
        len(flat),
        lambda x: runner.predict(x, batch_size=batch),
        once,
        float_ops=ops["float_ops"],
        n_ops=ops["n_ops"],
        **info,
    )


def _onnx_variants(
    model: Any, rep: np.ndarray, sample: np.ndarray, static_only: bool = False, batch: int = 64
) -> tuple[list[Variant], dict[str, Any]]:
    """ONNX Runtime float, dynamic int8 and static (QDQ) int8 of ``model`` via tf2onnx."""
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="volume")
    fn = tf.function(lambda t: model(t, training=False), input_signature=[spec])
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=[spec], opset=17)
    info = {"tf2onnx": tf2onnx.__version__, "onnxruntime": ort.__version__, "opset": 17}

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(rep[i : i + 1] for i in range(len(rep)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._it, None)
            return None if batch is None else {input_name: batch}

    variants = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "float.onnx"
        base.write_bytes(proto.SerializeToString())
        input_name = proto.graph.input[0].name
        paths = {} if static_only else {"ONNX Runtime float32": base}
        if not static_only:
            quantize_dynamic(base, Path(tmp) / "dyn.onnx", weight_type=QuantType.QInt8)
            paths["ONNX Runtime int8 dynamic"] = Path(tmp) / "dyn.onnx"
        quantize_static(
            base,
            Path(tmp) / "static.onnx",
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
        )
        paths["ONNX Runtime int8 static (QDQ)"] = Path(tmp) / "static.onnx"
        for name, path in paths.items():
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = THREADS or len(os.sched_getaffinity(0))
            opts.inter_op_num_threads = 1
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            feed_name = sess.get_inputs()[0].name

            def predict(x: np.ndarray, sess: Any = sess, feed: str = feed_name) -> np.ndarray:
                x = np.asarray(x, np.float32)
                return np.concatenate(
                    [sess.run(None, {feed: x[i : i + batch]})[0] for i in range(0, len(x), batch)]
                )

            def once(sess: Any = sess, feed: str = feed_name) -> None:
                sess.run(None, {feed: sample})

            variants.append(Variant(name, path.stat().st_size, predict, once))
    return variants, info


def _time(variants: Sequence[Variant], runs: int, rounds: int) -> dict[str, float]:
    """Median batch-1 ms per variant, rounds interleaved across variants."""
    per_round: dict[str, list[float]] = {v.name: [] for v in variants}
    for v in variants:
        for _ in range(3):  # warm-up: first calls allocate and (Keras) trace
            v.once()
    for _ in range(rounds):
        for v in variants:
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                v.once()
                times.append(time.perf_counter() - start)
            per_round[v.name].append(statistics.median(times) * 1000.0)
    return {name: statistics.median(ms) for name, ms in per_round.items()}


def _measure(
    variants: Sequence[Variant],
    x_test: np.ndarray,
    y_test: np.ndarray | None,
    task: str,
    float_tflite_size: int,
    runs: int,
    rounds: int,
) -> list[dict[str, Any]]:
    from core import evaluation
    from core.quantize.compare import _agreement

    latency = _time(variants, runs, rounds)
    keras_ms, tflite_ms = latency["float Keras"], latency.get("float32 TFLite")
    scores = {v.name: v.predict(x_test) for v in variants}
    ref = scores["float Keras"]
    ref_auc = evaluation.evaluate(y_test, ref, task)["auc"] if y_test is not None else None
    rows = []
    for v in variants:
        auc = evaluation.evaluate(y_test, scores[v.name], task)["auc"] if ref_auc else None
        rows.append(
            {
                "variant": v.name,
                "size_bytes": v.size,
                "smaller_than_float_tflite": float_tflite_size / v.size if v.size else None,
                "latency_ms": latency[v.name],
                "faster_than_keras": keras_ms / latency[v.name],
                "faster_than_float_tflite": tflite_ms / latency[v.name] if tflite_ms else None,
                "test_auc": auc,
                "auc_delta": auc - ref_auc if auc is not None else None,
                "agreement": _agreement(ref, scores[v.name], task),
                "max_abs_diff": float(np.max(np.abs(scores[v.name] - ref))),
                **v.info,
            }
        )
    return rows


def bench_run(
    run_dir: Path, runs: int, rounds: int, qat_epochs: int, onnx: bool, skip_qat: bool = False
) -> dict[str, Any]:
    """Before/after (and ONNX Runtime) for a trained 3D run on its full test split."""
    import tf_keras as keras

    from core.quantize import quantization_aware_model, quantize
    from core.quantize.compare import _load_run
    from core.quantize.convert import _convert

    config, task, model, (x_train, y_train), (x_test, y_test) = _load_run(run_dir, None)
    seed = int(config.get("seed", 0))
    rng = np.random.default_rng(seed)
    rep = x_train[rng.choice(len(x_train), min(200, len(x_train)), replace=False)]
    sample = x_test[:1].astype(np.float32)
    float_flat = _convert(model, None)
    variants = [
        _keras_variant(model, sample),
        _tflite_variant("float32 TFLite", float_flat, sample),
    ]
    timing: dict[str, float] = {}

    def add(name: str, make: Callable[[], bytes], **info: Any) -> None:
        print(f"converting {name}", flush=True)
        start = time.perf_counter()
        flat = make()
        timing[name] = round(time.perf_counter() - start, 1)
        variants.append(_tflite_variant(name, flat, sample, **info))

    train = (x_train, y_train)
    add("dynamic, before (Conv3D as is)", lambda: _convert(model, "dynamic"))
    add("dynamic, after (Conv3D rewritten)", lambda: quantize(model, "dynamic"))
    add("int8, before (Conv3D as is)", lambda: _convert(model, "int8", rep))
    add("int8, after (Conv3D rewritten)", lambda: quantize(model, "int8", rep))

    def qat_before() -> bytes:
        keras.utils.set_random_seed(seed)
        qat = quantization_aware_model(model, rep, train_data=train, epochs=qat_epochs, seed=seed)
        return _convert(qat, "qat", rep)

    if not skip_qat:
        add("qat, before (Conv3D as is)", qat_before)
        add(
            "qat, after (Conv3D rewritten)",
            lambda: quantize(
                model, "qat", rep, train_data=train, epochs=qat_epochs, task=task, seed=seed
            ),
        )
    onnx_info: dict[str, Any] = {"ok": False}
    if onnx:
        try:
            extra, info = _onnx_variants(model, rep, sample)
            variants += extra
            onnx_info = {"ok": True, **info}
        except Exception as exc:  # report why, keep the TFLite numbers
            onnx_info["error"] = f"{type(exc).__name__}: {exc}"[:500]
    print("timing and scoring", flush=True)
    rows = _measure(variants, x_test, y_test, task, len(float_flat), runs, rounds)
    return {
        "run": run_dir.name,
        "dataset": config["dataset"],
        "input_shape": list(model.input_shape[1:]),
        "n_test": len(x_test),
        "n_representative": len(rep),
        "qat_epochs": qat_epochs,
        "convert_s": timing,
        "onnx": onnx_info,
        "rows": rows,
    }


def bench_64(runs: int, rounds: int, onnx: bool) -> dict[str, Any]:
    """A random-weight cnn3d at 64³: size and latency (and int8 fidelity to its float self)."""
    import tf_keras as keras

    from core import data, info
    from core.models import build_model
    from core.quantize import quantize
    from core.quantize.convert import _convert

    flag = "adrenalmnist3d"
    keras.utils.set_random_seed(0)
    model = build_model("cnn3d", (64, 64, 64, 1), info.num_classes(flag), info.task(flag))
    x_train, _ = data.load_split(flag, "train", 64)
    x_test, _ = data.load_split(flag, "test", 64)
    rep, x_test = x_train[:64].astype(np.float32), x_test[:32].astype(np.float32)
    sample = x_test[:1]
    float_flat = _convert(model, None)
    # Scored 2 volumes per call: an interpreter keeps the buffers of its largest batch, and at
    # 64³ batches of 64 (float CONV_3D's im2col alone is ~1.8 GB) took the process past 13 GB.
    variants = [
        _keras_variant(model, sample, batch=2),
        _tflite_variant("float32 TFLite", float_flat, sample, batch=2),
        _tflite_variant(
            "int8, before (Conv3D as is)", _convert(model, "int8", rep), sample, batch=2
        ),
        _tflite_variant(
            "int8, after (Conv3D rewritten)", quantize(model, "int8", rep), sample, batch=2
        ),
    ]
    onnx_info: dict[str, Any] = {"ok": False}
    if onnx:
        try:
            # 8 calibration volumes: ONNX Runtime's calibrator keeps every intermediate tensor
            # of every sample.
            extra, meta = _onnx_variants(model, rep[:8], sample, static_only=True, batch=2)
            variants += extra
            onnx_info = {"ok": True, "n_calibration": 8, **meta}
        except Exception as exc:
            onnx_info["error"] = f"{type(exc).__name__}: {exc}"[:500]
    rows = _measure(variants, x_test, None, info.task(flag), len(float_flat), runs, rounds)
    return {
        "input_shape": [64, 64, 64, 1],
        "weights": "random (seed 0); not trained: size and latency only",
        "params": int(model.count_params()),
        "n_compared": len(x_test),
        "onnx": onnx_info,
        "rows": rows,
    }


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of :func:`bench_run` / :func:`bench_64` rows."""

    def f(value: Any, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    head = (
        f"{'variant':<34}{'size':>11}{'×smaller':>9}{'ms':>8}{'×Keras':>8}{'×TFLite':>8}"
        f"{'AUC':>8}{'ΔAUC':>8}{'agree':>7}  float ops"
    )
    lines = [head]
    for r in rows:
        ops = r.get("float_ops")
        lines.append(
            f"{r['variant']:<34}{f(r['size_bytes'], ','):>11}"
            f"{f(r['smaller_than_float_tflite'], '.2f'):>9}{r['latency_ms']:>8.2f}"
            f"{r['faster_than_keras']:>8.2f}{f(r['faster_than_float_tflite'], '.2f'):>8}"
            f"{f(r['test_auc'], '.4f'):>8}{f(r['auc_delta'], '+.4f'):>8}{r['agreement']:>7.3f}"
            f"  {'' if ops is None else (', '.join(f'{k}×{v}' for k, v in ops.items()) or 'none')}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; prints the tables and writes ``--output`` after each part.

    Parts not run this time keep their entries from an existing ``--output`` file.
    """
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", default="trained_models/cnn3d")
    parser.add_argument("--parts", nargs="+", default=["run28", "cnn3d_64"])
    parser.add_argument("--runs", type=int, default=20, help="timed calls per variant per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--qat-epochs", type=int, default=1)
    parser.add_argument("--skip-onnx", action="store_true")
    parser.add_argument("--skip-qat", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="default: every CPU")
    parser.add_argument("--output", default=str(OUT))
    args = parser.parse_args(argv)
    global THREADS
    THREADS = args.threads
    if THREADS:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(THREADS)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    from core import registry

    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = registry.read_json(out.parent, out.name, None) if out.is_file() else None
    result: dict[str, Any] = previous if isinstance(previous, dict) else {}
    result.update(
        created=time.strftime("%Y-%m-%dT%H:%M:%S"),
        cpus=len(os.sched_getaffinity(0)),
        threads=THREADS or len(os.sched_getaffinity(0)),
        runs=args.runs,
        rounds=args.rounds,
        load_before=_load(),
    )
    for part in args.parts:
        if part == "run28":
            result["run28"] = bench_run(
                Path(args.run),
                args.runs,
                args.rounds,
                args.qat_epochs,
                not args.skip_onnx,
                args.skip_qat,
            )
            run = result["run28"]
            print(f"\n{run['run']} ({run['dataset']}, full test split n={run['n_test']})")
            print(format_rows(run["rows"]))
            if not run["onnx"]["ok"] and not args.skip_onnx:
                print(f"ONNX Runtime skipped: {run['onnx'].get('error')}")
        elif part == "cnn3d_64":
            result["cnn3d_64"] = bench_64(args.runs, args.rounds, not args.skip_onnx)
            print("\ncnn3d at 64³, random weights (size/latency only; agreement vs its float self)")
            print(format_rows(result["cnn3d_64"]["rows"]))
        else:
            parser.error(f"unknown part {part!r}; choose run28 or cnn3d_64")
        result["load_after"] = _load()
        # Per part, since a later invocation may run only the other part.
        result[part]["created"] = result["created"]
        result[part]["load"] = (
            f"load average before {result['load_before']}, after {result['load_after']}"
        )
        registry.write_json_atomic(out, result)
    print(f"\nload average before: {result['load_before']}; after: {result['load_after']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
