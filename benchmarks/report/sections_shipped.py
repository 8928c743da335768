"""Sections about the shipped models: quantization, Grad-CAM alignment, training wall time.

All read the JSON files next to each reference run (``quantized/results.json``,
``explain.json``, ``metrics.json``); a file that does not exist yet renders as "not run yet".
"""

from __future__ import annotations

from typing import Any

from benchmarks.report.collect import Arm, best_per_family
from benchmarks.report.markdown import NOT_RUN, _f, fmt_bytes, fmt_duration, md_table
from core.results import stat

# Quantization modes the reproduction runs on every family's best model; float16 is optional.
EXPECTED_QUANT_MODES = ("dynamic", "int8", "qat")


def quant_results(arms: dict[str, Arm]) -> list[tuple[Arm, dict[str, Any]]]:
    out = []
    for arm in arms.values():
        res = arm.json("quantized/results.json") if arm.ran else None
        if isinstance(res, dict) and "modes" in res:
            out.append((arm, res))
    return out


def _rewrite_note(entry: dict[str, Any]) -> str | None:
    """The ``core.quantize.conv3d_rewrite`` note of a mode, if its model was rewritten."""
    return next((n for n in entry.get("notes") or [] if "Conv3D layer(s) rewritten" in n), None)


def _short_notes(mode: str, entry: dict[str, Any]) -> str:
    """One-line summary of what a mode computes in float (from the interpreter's op list)."""
    if any("collapsed" in n for n in entry.get("notes") or []):
        return "**collapsed to a constant output** (see below)"
    ops = entry.get("ops") or {}
    conv3d = (ops.get("float_ops") or {}).get("CONV_3D")
    rewritten = " (Conv3D rewritten as Conv2D)" if _rewrite_note(entry) else ""
    if mode == "dynamic":
        return f"int8 weights, float activations{rewritten}"
    if mode == "float16":
        return "float16 weights, float32 compute"
    if conv3d:
        return f"{conv3d} Conv3D op(s) stay float32 (TFLite has no int8 Conv3D kernel)"
    if ops.get("fully_integer"):
        return f"fully integer{rewritten}"
    other = ", ".join(sorted((ops.get("float_ops") or {}).keys()))
    return f"float ops: {other}" if other else ""


def section_quantization(
    arms: dict[str, Arm], figure: str | None, bench3d: list[dict[str, Any]] | None = None
) -> list[str]:
    """The quantization section: per shipped run, every mode vs float; then the 3D benchmark.

    Args:
        arms: The collected runs.
        figure: Relative path of the trade-off figure, or None.
        bench3d: ``benchmarks.quantize_3d`` results (``docs/results/quantize_3d*.json``), each
            rendered as its own tables.
    """
    lines = [
        "The best model of each family (highest mean validation AUC) is converted to TFLite in "
        "each mode and scored on the full test split with the official metrics. Size ratio is "
        "float32 TFLite size / quantized size; agreement is the share of test predictions equal "
        "to the float model's; latency is the median of batch-1 calls on this CPU.",
        "",
    ]
    results = quant_results(arms)
    families = best_per_family(arms.values())
    done = {arm.name for arm, _ in results}
    fold_explained = rewrite_explained = False
    for family, arm in families.items():
        if arm.name not in done:
            lines += [f"- `{arm.name}` (best {family}): quantization {NOT_RUN}."]
    if families and len(done) < len(families):
        lines += [""]
    if not families:
        lines += [f"Quantization: {NOT_RUN} (no reference runs yet).", ""]
        return lines
    for arm, res in results:
        fl = res.get("float") or {}
        ftest = fl.get("test") or {}
        rows = [
            [
                "float (Keras)",
                fmt_bytes(fl.get("size_bytes")),
                "1.00",
                _f(ftest.get("auc")),
                _f(ftest.get("acc")),
                "–",
                _f(fl.get("latency_ms"), 2),
                "1.000",
                f"float32 TFLite size; .keras file {fmt_bytes(fl.get('keras_size_bytes'))}",
            ]
        ]
        modes = res.get("modes") or {}
        for mode in list(EXPECTED_QUANT_MODES) + [
            m for m in modes if m not in EXPECTED_QUANT_MODES
        ]:
            entry = modes.get(mode)
            if entry is None:
                rows.append([mode, NOT_RUN, "", "", "", "", "", "", ""])
                continue
            if not entry.get("ok"):
                err = str(entry.get("error", "unknown error"))[:120]
                rows.append([mode, "failed", "", "", "", "", "", "", err])
                continue
            test = entry.get("test") or {}
            shipped = "" if entry.get("file") else " (file not shipped, to keep the registry small)"
            rows.append(
                [
                    mode,
                    fmt_bytes(entry.get("size_bytes")),
                    _f(entry.get("size_ratio"), 2),
                    _f(test.get("auc")),
                    _f(test.get("acc")),
                    _f(entry.get("auc_delta"), signed=True),
                    _f(entry.get("latency_ms"), 2),
                    _f(entry.get("agreement"), 3),
                    _short_notes(mode, entry) + shipped,
                ]
            )
        lines += [f"#### `{arm.name}` ({arm.model}, {arm.dataset}, seed {arm.reference_seed})", ""]
        lines += md_table(
            [
                "Mode",
                "Size",
                "Ratio",
                "Test AUC",
                "Test ACC",
                "ΔAUC vs float",
                "ms / image",
                "Agreement",
                "Notes",
            ],
            rows,
        )
        collapsed = [
            m
            for m, e in (res.get("modes") or {}).items()
            if any("collapsed" in n for n in (e or {}).get("notes") or [])
        ]
        folded = sorted(
            {
                n
                for e in (res.get("modes") or {}).values()
                for n in (e or {}).get("notes") or []
                if "folded into" in n
            }
        )
        if folded:
            lines += [f"`{arm.name}`: {folded[0]}.", ""]
            fold_explained = True
        rewrite = next(filter(None, map(_rewrite_note, modes.values())), None)
        if rewrite:
            lines += [f"`{arm.name}`: {rewrite}.", ""]
            rewrite_explained = True
        if collapsed:
            lines += [
                f"The {', '.join(collapsed)} variant(s) of `{arm.name}` give the same output for "
                "every test image: int8 activation scales erase features the float model relies "
                "on. Deploy another variant of this model.",
                "",
            ]
    if fold_explained:
        lines += [
            "Why the fold: these heads normalise the global-average-pooled block-5 features with "
            "a BatchNorm whose per-channel scales can span three orders of magnitude after "
            "fine-tuning. Converted as trained, one int8 scale for the pooled vector (and the "
            "BatchNorm multiplied into the next Dense kernel) rounds the small channels to zero, "
            "and such a model gives every image the same output. Moving the positive BatchNorm "
            "scales through max pooling and ReLU into the last convolution, and the shift into "
            "the Dense bias, gives the same float model with channels on comparable scales "
            "(`core.quantize.fold_head_batchnorm`).",
            "",
        ]
    if rewrite_explained:
        lines += [
            "Why the Conv3D rewrite: TFLite has no integer CONV_3D kernel, so converted as "
            "trained a 3D model keeps its Conv3D layers (and their float32 weights) in float "
            "between QUANTIZE/DEQUANTIZE ops. Each Conv3D with a kd×kh×kw kernel is rewritten "
            "into one Conv2D over (H, W) whose input channels are the kd depth-shifted views "
            "of its input (PAD, STRIDED_SLICE, CONCATENATION, RESHAPE of depth into the batch), "
            "with the following BatchNorm and ReLU merged into it: the same float model "
            "(equal to 1e-5, tested) made of ops TFLite runs in int8 "
            "(`core.quantize.rewrite_conv3d`). QAT fine-tunes the rewritten graph.",
            "",
        ]
    for bench in bench3d or []:
        lines += section_quantization_3d(bench)
    if figure:
        lines += [f"![Quantization trade-off]({figure})", ""]
    return lines


def _bench_rows(rows: list[dict[str, Any]], with_auc: bool) -> list[list[str]]:
    out = []
    for r in rows:
        ops = r.get("float_ops")
        ops_text = "–" if ops is None else (", ".join(f"{k}×{v}" for k, v in ops.items()) or "none")
        out.append(
            [
                r["variant"],
                fmt_bytes(r.get("size_bytes")) if r.get("size_bytes") else "–",
                _f(r.get("smaller_than_float_tflite"), 2) if r.get("size_bytes") else "–",
                _f(r.get("latency_ms"), 2),
                _f(r.get("faster_than_keras"), 2),
                _f(r.get("faster_than_float_tflite"), 2),
                *([_f(r.get("test_auc")), _f(r.get("auc_delta"), signed=True)] if with_auc else []),
                _f(r.get("agreement"), 3),
                ops_text,
            ]
        )
    return out


def section_quantization_3d(bench: dict[str, Any]) -> list[str]:
    """Before/after table of the Conv3D rewrite (``python -m benchmarks.quantize_3d``)."""
    head = ["Variant", "Size", "× smaller", "ms / volume", "× vs Keras", "× vs TFLite float"]
    threads = bench.get("threads", bench.get("cpus", "?"))
    flag = "" if threads == bench.get("cpus") else f" --threads {threads}"
    lines = [
        f"#### 3D models before and after the Conv3D rewrite ({threads} thread(s) per runtime)",
        "",
        f"`python -m benchmarks.quantize_3d{flag}` ({bench.get('cpus', '?')} CPUs; the "
        "machine was shared, so latencies are noisy; within a table every variant was timed in "
        "the same interleaved rounds). Batch 1, median; "
        '"× smaller" is against the float32 TFLite file; agreement is against float Keras.',
        "",
    ]
    run = bench.get("run28")
    if run:
        lines += [
            f"`{run['run']}` ({run['dataset']}, {'×'.join(map(str, run['input_shape'][:3]))}, "
            f"full test split n={run['n_test']}; {run.get('created', '?')}, "
            f"{run.get('load', 'load not recorded')}):",
            "",
        ]
        lines += md_table(
            [*head, "Test AUC", "ΔAUC", "Agreement", "Float ops"],
            _bench_rows(run["rows"], with_auc=True),
        )
        onnx = run.get("onnx") or {}
        if onnx.get("ok"):
            lines += [
                f"ONNX Runtime rows: tf2onnx {onnx.get('tf2onnx')} (opset {onnx.get('opset')}), "
                f"onnxruntime {onnx.get('onnxruntime')}; static int8 is QDQ, per-channel, "
                "calibrated on the same training volumes.",
                "",
            ]
        elif onnx.get("error"):
            lines += [f"ONNX Runtime not measured: {onnx['error']}", ""]
    big = bench.get("cnn3d_64")
    if big:
        lines += [
            f"cnn3d at 64³ ({big.get('weights')}; {big.get('params', 0):,} parameters; "
            f"agreement on {big.get('n_compared')} real AdrenalMNIST3D 64 test volumes; "
            f"{big.get('created', '?')}, {big.get('load', 'load not recorded')}):",
            "",
        ]
        lines += md_table([*head, "Agreement", "Float ops"], _bench_rows(big["rows"], False))
    return lines


ALIGN_METHODS = ("gradcam", "gradcam++")
# Energy-in-mask / mask-area below the band: attention avoids the anatomy; above: it favours it.
ALIGN_RATIO_BAND = (0.8, 1.2)
# Salient-first deletion must beat random deletion's area by this relative margin to count.
DELETION_MARGIN = 0.10


def section_alignment(arms: dict[str, Arm], figure: str | None, overlay_note: str) -> list[str]:
    lines = [
        "For every reference run, Grad-CAM (and Grad-CAM++) maps of up to 100 test samples: the "
        "share of heatmap energy inside the anatomy mask computed from the image (fundus disk "
        "for RetinaMNIST, the dilated organ mask for AdrenalMNIST3D) beside the mask's share of "
        "the image, which is what a uniform map would score; and the deletion curve: the class "
        "probability as the most salient pixels are removed first, against a random order "
        "(lower area = more faithful map).",
        "",
    ]
    rows = []
    for arm in arms.values():
        ex = arm.json("explain.json") if arm.ran else None
        if not isinstance(ex, dict):
            rows.append([f"`{arm.name}`", "–", NOT_RUN, "", "", "", "", "", ""])
            continue
        for method in ALIGN_METHODS:
            s = ex.get(method)
            if not isinstance(s, dict):
                continue
            rows.append(
                [
                    f"`{arm.name}`",
                    method,
                    s.get("n", "–"),
                    _f(s.get("energy_in_mask_mean"), 3),
                    _f(s.get("mask_area_mean"), 3),
                    _f(s.get("energy_over_area"), 2),
                    _f(s.get("deletion_auc_salient_mean"), 3),
                    _f(s.get("deletion_auc_random_mean"), 3),
                    s.get("zero_maps", "–"),
                ]
            )
    lines += md_table(
        [
            "Run",
            "Method",
            "Samples",
            "Energy in mask",
            "Mask area",
            "Energy / area",
            "Deletion AUC (salient)",
            "Deletion AUC (random)",
            "All-zero maps",
        ],
        rows,
    )
    if figure:
        lines += [f"![Grad-CAM examples]({figure})", "", overlay_note, ""]
    else:
        lines += [f"Grad-CAM example overlays: {overlay_note}", ""]
    return lines


def section_wall_time(arms: dict[str, Arm]) -> list[str]:
    rows = []
    per_experiment: dict[str, float] = {}
    for arm in arms.values():
        if not arm.ran:
            rows.append([arm.experiment, f"`{arm.name}`", NOT_RUN, "", "", NOT_RUN])
            continue
        epochs = [str(s.get("epochs_run", "?")) for s in arm.seeds] or [
            str(arm.metrics.get("epochs_run", "?"))
        ]
        spe = stat(s.get("s_per_epoch") for s in arm.seeds) if arm.seeds else None
        wall = arm.wall_time_s
        if wall is not None:
            per_experiment[arm.experiment] = per_experiment.get(arm.experiment, 0.0) + wall
        rows.append(
            [
                arm.experiment,
                f"`{arm.name}`",
                len(arm.seeds) or 1,
                ", ".join(epochs),
                f"{spe.mean:.1f}" if spe else _f(arm.metrics.get("s_per_epoch"), 1),
                fmt_duration(wall),
            ]
        )
    lines = [
        "Training wall time summed over all seeds (early stopping ends each seed at a different "
        "epoch), as recorded by `core.training` on the machine that trained the runs.",
        "",
    ]
    lines += md_table(
        ["Experiment", "Arm", "Seeds", "Epochs per seed", "s / epoch", "Total wall time"], rows
    )
    if per_experiment:
        lines += md_table(
            ["Experiment", "Total training time"],
            [[k, fmt_duration(v)] for k, v in per_experiment.items()]
            + [["**all**", fmt_duration(sum(per_experiment.values()))]],
        )
    versions = next((a.metrics.get("versions") for a in arms.values() if a.ran), None)
    if versions:
        lines += ["Software: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())), ""]
    return lines
