"""The size/accuracy/latency table: every mode against the float model, and the run's results.

:func:`compare_modes` measures in memory; :func:`quantize_run` does it for a registered run and
writes ``<run>/quantized/<mode>.tflite`` and ``results.json``; :func:`format_table` prints it.

Usage::

    result = quantize_run("trained_models/cnn2d_aug", modes=("dynamic", "int8"))
    print(format_table(result))
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from core import data, evaluation, info, registry
from core.explain import keras_predict_fn, occlusion_agreement, occlusion_map
from core.info import MULTI_LABEL
from core.models import prepare_input
from core.quantize.conv3d_rewrite import rewrite_conv3d
from core.quantize.convert import MODES, REWRITE_MODES, _convert, quantize, validate_mode
from core.quantize.fold import fold_head_batchnorm
from core.tflite_runner import TFLiteModel

# quantize_run writes a mode's .tflite only below this size, so shipped runs stay lean (VGG16
# float16 is ~29 MB); every number is recorded in results.json either way.
DEFAULT_MAX_FILE_BYTES = 16 * 1024 * 1024


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
    # Folded once here; quantize() folds again, which is a no-op on the folded model. The
    # Conv3D rewrite runs inside quantize(); here it only supplies its note.
    deployable, fold_note = fold_head_batchnorm(model)
    _, rewrite_note = rewrite_conv3d(deployable)
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
                + ([rewrite_note] if rewrite_note and mode in REWRITE_MODES else [])
                + _notes(ops, mode)
                + _collapse_note(float_scores, scores),
                file=on_bytes(mode, flat) if on_bytes else None,
            )
        except Exception as exc:  # one failing mode must not hide the others' numbers
            entry["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        result["modes"][mode] = entry
    return result


def _load_run(
    run: Path, data_root: str | None
) -> tuple[dict[str, Any], str, keras.Model, tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """A run's config, task, model and model-ready train and test splits.

    The run-loading sequence (config → model → splits → ``prepare_input``) that
    ``core.explain.compute_alignment_run`` repeats; both are to move into one helper in
    ``core.models.io``. The order is kept: an unknown dataset fails before the model loads, a
    broken model before minutes of data loading.

    Args:
        run: Run directory (see core.registry).
        data_root: MedMNIST folder (default: the ``MEDMNIST_ROOT`` setting).

    Returns:
        ``(config, task, model, (x_train, y_train), (x_test, y_test))``.

    Raises:
        OSError: ``config.json`` is missing (``json.JSONDecodeError`` if it is not JSON).
        ValueError: The dataset flag is unknown.
        core.registry.RegistryError: No model file; ``RunFileError`` if it is damaged.
        core.data.DataError: The dataset file is missing or corrupt.
    """
    config = json.loads((run / "config.json").read_text())
    flag, family, size = config["dataset"], config["model"], int(config.get("size", 28))
    task = info.task(flag)
    model = registry.load_model(run, allow_outside=True)
    x_train, y_train = data.load_split(flag, "train", size, root=data_root)
    x_test, y_test = data.load_split(flag, "test", size, root=data_root)
    x_train, x_test = prepare_input(family, x_train), prepare_input(family, x_test)
    return config, task, model, (x_train, y_train), (x_test, y_test)


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
    run = Path(run_dir)
    config, task, model, (x_train, y_train), (x_test, y_test) = _load_run(run, data_root)
    flag, family = config["dataset"], config["model"]
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
