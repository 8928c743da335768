"""Benchmark suite: Grad-CAM speed vs tf-keras-vis, Keras vs TFLite per mode, training speed.

Usage::

    python -m benchmarks.run                    # all sections, random-weight models
    python -m benchmarks.run --quick            # smoke test: few repeats, small subsets
    python -m benchmarks.run --registry trained_models   # trained runs: real test AUC per mode

Prints one table per section and writes ``benchmarks/results/latest.json``. Method and caveats
are in docs/benchmarks.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"

# name -> (family, dataset whose shape and data it uses, builder kwargs)
FAMILIES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "cnn2d": ("cnn2d", "retinamnist", {}),
    "resnet": ("resnet", "retinamnist", {}),
    "vgg16": ("vgg16", "retinamnist", {"weights": None}),
    "cnn3d": ("cnn3d", "adrenalmnist3d", {}),
}


def _median_ms(fn: Callable[[], Any], runs: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    """Mean over samples of the per-sample Pearson correlation (batch axis first).

    Per sample, because the two libraries normalise each map differently (we divide by the
    maximum, tf-keras-vis min-max scales): a pooled correlation would mix in that offset.
    """
    values = []
    for ai, bi in zip(np.asarray(a, np.float64), np.asarray(b, np.float64), strict=True):
        ai, bi = ai.ravel(), bi.ravel()
        if ai.std() > 0 and bi.std() > 0:
            values.append(float(np.corrcoef(ai, bi)[0, 1]))
    return float(np.mean(values)) if values else None


def _build(name: str, seed: int = 0):
    import tf_keras as keras

    from core import info
    from core.models import build_model, input_shape_for

    family, flag, kwargs = FAMILIES[name]
    keras.utils.set_random_seed(seed)
    shape = input_shape_for(family, flag, 28)
    return build_model(family, shape, info.num_classes(flag), info.task(flag), **kwargs)


def _registry_models(registry_dir: str) -> list[dict[str, Any]]:
    from core import registry

    runs = []
    for run in registry.list_runs(registry_dir):
        runs.append({"name": run["name"], "path": Path(run["path"]), "config": run["config"]})
    return runs


def _trained_inputs(run: dict[str, Any], n: int) -> tuple[Any, np.ndarray]:
    """A registered run's model and its first ``n`` real test inputs, model-ready."""
    from core import data, registry
    from core.models import prepare_input

    cfg = run["config"]
    model = registry.load_model(run["path"], allow_outside=True)
    x, _ = data.load_split(cfg["dataset"], "test", int(cfg.get("size", 28)))
    return model, prepare_input(cfg["model"], x[:n])


def _sample_inputs(model, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((n, *model.input_shape[1:]), dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Grad-CAM: ours (eager / compiled) vs tf-keras-vis
# --------------------------------------------------------------------------------------------
def bench_gradcam(model, x: np.ndarray, runs: int) -> dict[str, Any]:
    """Per-input Grad-CAM latency and agreement with tf-keras-vis on the same model and layer."""
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    from core import explain

    layer = explain.default_layer(model)
    one = x[:1]
    compiled = _median_ms(lambda: explain.grad_cam(model, one, layer), runs)
    eager_runs = max(3, runs // 3)
    eager = _median_ms(lambda: explain.grad_cam(model, one, layer, compiled=False), eager_runs)
    plus = _median_ms(lambda: explain.grad_cam_plus_plus(model, one, layer), runs)
    # ReplaceToLinear swaps the softmax for identity, so tf-keras-vis scores the logits as we do.
    vis = Gradcam(model, model_modifier=ReplaceToLinear(), clone=True)
    cls = int(np.argmax(model(one, training=False)[0]))

    def run_vis(batch: np.ndarray, classes: list[int], expand: bool = True) -> np.ndarray:
        return np.asarray(
            vis(
                CategoricalScore(classes),
                batch,
                penultimate_layer=layer,
                seek_penultimate_conv_layer=False,
                expand_cam=expand,
            )
        )

    vis_ms = _median_ms(lambda: run_vis(one, [cls]), eager_runs)
    ours, classes = explain.grad_cam(model, x, layer, return_classes=True)
    theirs = run_vis(x, classes.tolist())
    aligned = explain.grad_cam(model, x, layer, classes, upsample="align_corners")
    grid = explain.grad_cam(model, x, layer, classes, upsample=False)
    theirs_grid = run_vis(x, classes.tolist(), expand=False)
    return {
        "layer": layer,
        "compiled_ms": compiled,
        "eager_ms": eager,
        "gradcam_pp_ms": plus,
        "tf_keras_vis_ms": vis_ms,
        "speedup_vs_tf_keras_vis": vis_ms / compiled,
        # ours (half-pixel resize, the default) vs tf-keras-vis (scipy zoom, corner-aligned)
        "corr_upsampled": _pearson(ours, theirs),
        # the same resize convention on both sides: what differs is only the Grad-CAM itself
        "corr_aligned": _pearson(aligned, theirs),
        "corr_grid": _pearson(grid, theirs_grid),
        "n_corr_samples": len(x),
    }


# --------------------------------------------------------------------------------------------
# Quantization: Keras vs TFLite per mode
# --------------------------------------------------------------------------------------------
def bench_quantize(model, x: np.ndarray, modes: Sequence[str], runs: int) -> dict[str, Any]:
    """Sizes, batch-1 latency and agreement with the float model per mode (no labels needed)."""
    from core import quantize as q
    from core.explain import keras_predict_fn
    from core.tflite_runner import TFLiteModel

    float_size = len(q._convert(model, None))
    keras_ms = q.keras_latency_ms(model, x, runs=runs)
    ref = keras_predict_fn(model)(x)
    out: dict[str, Any] = {
        "float": {"size_bytes": float_size, "keras_ms": keras_ms},
        "modes": {},
    }
    for mode in modes:
        try:
            start = time.perf_counter()
            flat = q.quantize(model, mode, x)
            convert_s = time.perf_counter() - start
            runner = TFLiteModel(flat)
            ms = runner.latency_ms(x, runs=runs)
            pred = runner.predict(x)
            ops = runner.op_summary()
            out["modes"][mode] = {
                "size_bytes": len(flat),
                "size_ratio": float_size / len(flat),
                "tflite_ms": ms,
                "speedup_vs_keras": keras_ms / ms,
                "agreement": float(np.mean(pred.argmax(-1) == ref.argmax(-1))),
                "max_abs_diff": float(np.abs(pred - ref).max()),
                "float_ops": ops["float_ops"],
                "convert_s": convert_s,
            }
        except Exception as exc:  # report and go on with the other modes
            out["modes"][mode] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    return out


def registry_quantize(run: dict[str, Any], modes: Sequence[str], runs: int) -> dict[str, Any]:
    """Trained run: reuse ``quantized/results.json`` if present, else measure in memory."""
    from core import data, info, registry
    from core import quantize as q
    from core.models import prepare_input

    path = run["path"] / "quantized" / "results.json"
    if path.is_file():
        return {"source": str(path), **json.loads(path.read_text())}
    cfg = run["config"]
    flag, family, size = cfg["dataset"], cfg["model"], int(cfg.get("size", 28))
    model = registry.load_model(run["path"], allow_outside=True)
    x_train, y_train = data.load_split(flag, "train", size)
    x_test, y_test = data.load_split(flag, "test", size)
    x_train, x_test = prepare_input(family, x_train), prepare_input(family, x_test)
    rng = np.random.default_rng(0)
    rep = x_train[rng.choice(len(x_train), min(200, len(x_train)), replace=False)]
    result = q.compare_modes(
        model,
        x_test,
        y_test,
        info.task(flag),
        rep,
        modes,
        train_data=(x_train, y_train),
        latency_runs=runs,
    )
    return {"source": "measured (not written to the run)", **result}


# --------------------------------------------------------------------------------------------
# Training speed on real data
# --------------------------------------------------------------------------------------------
def bench_training(name: str, subset: int, epochs: int) -> dict[str, Any]:
    """Seconds per epoch on a real-data subset (first epoch, which traces, is not timed)."""
    from core import data, info
    from core.models import build_model, compile_model, input_shape_for, prepare_input

    family, flag, kwargs = FAMILIES[name]
    try:
        x, y = data.load_split(flag, "train", 28)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    n_train = len(x)
    x, y = prepare_input(family, x[:subset]), y[:subset]
    if family == "vgg16":
        # ImageNet weights when configured (the real transfer setup); speed does not depend on it.
        from core import config

        weights = config.vgg16_weights()
        kwargs = {**kwargs, "weights": weights if Path(weights).is_file() else None}
    model = build_model(
        family, input_shape_for(family, flag, 28), info.num_classes(flag), info.task(flag), **kwargs
    )
    compile_model(model, info.task(flag))
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)  # warm-up: graph tracing
    start = time.perf_counter()
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    per_epoch_subset = (time.perf_counter() - start) / epochs
    per_1000 = per_epoch_subset / len(x) * 1000.0
    return {
        "dataset": flag,
        "subset": len(x),
        "epochs_timed": epochs,
        "s_per_1000": per_1000,
        "n_train": n_train,
        "s_per_epoch_full": per_1000 * n_train / 1000.0,
        "trainable_params": int(sum(np.prod(w.shape) for w in model.trainable_weights)),
    }


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------
def _fmt(value: Any, spec: str = ".2f") -> str:
    if value is None:
        return "-"
    if isinstance(value, int | float):
        return format(value, spec)
    return str(value)


def _float_ops(mode: str, ops: dict[str, int]) -> str:
    if mode in ("dynamic", "float16"):
        return "activations float (by design)"
    return ", ".join(f"{k}x{v}" for k, v in ops.items()) or "none (fully integer)"


def format_tables(results: dict[str, Any]) -> str:
    """Plain-text tables of a results dict (markdown-compatible)."""
    lines = []
    titles = {
        "gradcam": "Grad-CAM, ms per input (batch 1, median), random-weight models",
        "gradcam_trained": "Grad-CAM on the trained runs (real test images), ms per input",
    }
    for section, title in titles.items():
        if not results.get(section):
            continue
        lines += [
            f"\n## {title}",
            "| model | layer | compiled | eager | Grad-CAM++ | tf-keras-vis | speed-up | "
            "r (same resize) | r (grid) | r (our half-pixel resize) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in results[section].items():
            if "error" in r:
                lines.append(f"| {name} | error: {r['error'][:60]} |")
                continue
            lines.append(
                f"| {name} | {r['layer']} | {_fmt(r['compiled_ms'])} | {_fmt(r['eager_ms'])} | "
                f"{_fmt(r['gradcam_pp_ms'])} | {_fmt(r['tf_keras_vis_ms'])} | "
                f"{_fmt(r['speedup_vs_tf_keras_vis'], '.1f')}x | "
                f"{_fmt(r.get('corr_aligned'), '.4f')} | {_fmt(r['corr_grid'], '.4f')} | "
                f"{_fmt(r['corr_upsampled'], '.4f')} |"
            )
    if results.get("quantize"):
        lines += [
            "\n## Keras vs TFLite (batch-1 latency median; sizes; agreement with float argmax)",
            "| model | mode | size (bytes) | size ratio | ms/input | speed-up vs Keras | "
            "agreement | float ops |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, r in results["quantize"].items():
            fl = r["float"]
            lines.append(
                f"| {name} | keras float | {fl['size_bytes']:,} (tflite f32) | 1.00 | "
                f"{_fmt(fl['keras_ms'])} | 1.00 | 1.000 | - |"
            )
            for mode, m in r["modes"].items():
                if "error" in m:
                    lines.append(f"| {name} | {mode} | error: {m['error'][:70]} |")
                    continue
                lines.append(
                    f"| {name} | {mode} | {m['size_bytes']:,} | {_fmt(m['size_ratio'])} | "
                    f"{_fmt(m['tflite_ms'])} | {_fmt(m['speedup_vs_keras'])} | "
                    f"{_fmt(m['agreement'], '.3f')} | {_float_ops(mode, m['float_ops'])} |"
                )
    if results.get("registry"):
        lines += [
            "\n## Trained runs: test AUC/ACC per mode (official metrics, full test split)",
            "| run | mode | size (bytes) | AUC | ACC | ΔAUC | ms/input | speed-up | agreement |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for run, r in results["registry"].items():
            if "error" in r:
                lines.append(f"| {run} | error: {r['error'][:80]} |")
                continue
            fl = r["float"]
            lines.append(
                f"| {run} | float | {fl['size_bytes']:,} | {_fmt(fl['test']['auc'], '.4f')} | "
                f"{_fmt(fl['test']['acc'], '.4f')} | - | {_fmt(fl['latency_ms'])} | 1.00 | 1.000 |"
            )
            for mode, m in r["modes"].items():
                if not m.get("ok"):
                    lines.append(f"| {run} | {mode} | error: {m.get('error', '')[:70]} |")
                    continue
                lines.append(
                    f"| {run} | {mode} | {m['size_bytes']:,} | {_fmt(m['test']['auc'], '.4f')} | "
                    f"{_fmt(m['test']['acc'], '.4f')} | {_fmt(m['auc_delta'], '+.4f')} | "
                    f"{_fmt(m['latency_ms'])} | {_fmt(m['speedup'])} | "
                    f"{_fmt(m['agreement'], '.3f')} |"
                )
    if results.get("training"):
        lines += [
            "\n## Training speed on real data (batch 32, subset; full-epoch estimate)",
            "| model | dataset | subset | s / 1000 samples | est. s / full epoch | "
            "trainable params |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in results["training"].items():
            if "error" in r:
                lines.append(f"| {name} | error: {r['error'][:80]} |")
                continue
            lines.append(
                f"| {name} | {r['dataset']} | {r['subset']} | {_fmt(r['s_per_1000'])} | "
                f"{_fmt(r['s_per_epoch_full'], '.1f')} | {r['trainable_params']:,} |"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected benchmark sections, print the tables and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: few repeats, subsets")
    parser.add_argument("--runs", type=int, default=None, help="timed repeats (default 30)")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs timed")
    parser.add_argument("--subset", type=int, default=None, help="training samples (def. 512)")
    parser.add_argument("--registry", default=None, help="benchmark the trained runs in DIR")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument(
        "--sections",
        nargs="+",
        default=["gradcam", "quantize", "training"],
        choices=["gradcam", "quantize", "training"],
    )
    parser.add_argument("--modes", nargs="+", default=None, help="quantization modes")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)

    from core import quantize as q

    runs = args.runs or (5 if args.quick else 30)
    subset = args.subset or (128 if args.quick else 512)
    modes = args.modes or list(q.MODES)
    for mode in modes:
        q.validate_mode(mode)
    n_inputs = 4 if args.quick else 16

    import tensorflow as tf

    results: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "quick": args.quick,
        "runs": runs,
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_start": list(os.getloadavg()),
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
        },
    }

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    models = {}
    if "gradcam" in args.sections or "quantize" in args.sections:
        for name in args.families:
            models[name] = _build(name)

    if "gradcam" in args.sections:
        results["gradcam"] = {}
        for name, model in models.items():
            log(f"grad-cam: {name}")
            try:
                x = _sample_inputs(model, n_inputs)
                results["gradcam"][name] = bench_gradcam(model, x, runs)
            except Exception as exc:
                results["gradcam"][name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}

    if "quantize" in args.sections:
        results["quantize"] = {}
        for name, model in models.items():
            log(f"quantize: {name}")
            x = _sample_inputs(model, 32 if args.quick else 100, seed=1)
            results["quantize"][name] = bench_quantize(model, x, modes, runs)

    if args.registry and "gradcam" in args.sections:
        results["gradcam_trained"] = {}
        for run in _registry_models(args.registry):
            log(f"grad-cam (trained): {run['name']}")
            try:
                model, x = _trained_inputs(run, n_inputs)
                results["gradcam_trained"][run["name"]] = bench_gradcam(model, x, runs)
            except Exception as exc:
                results["gradcam_trained"][run["name"]] = {
                    "error": f"{type(exc).__name__}: {exc}"[:300]
                }

    if args.registry:
        results["registry"] = {}
        for run in _registry_models(args.registry):
            log(f"registry: {run['name']}")
            try:
                results["registry"][run["name"]] = registry_quantize(run, modes, runs)
            except Exception as exc:
                results["registry"][run["name"]] = {"error": f"{type(exc).__name__}: {exc}"}

    if "training" in args.sections:
        results["training"] = {}
        for name in args.families:
            log(f"training: {name}")
            results["training"][name] = bench_training(name, subset, args.epochs)

    results["machine"]["load_avg_end"] = list(os.getloadavg())
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True, default=str))
    os.replace(tmp, out)
    print(format_tables(results))
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
