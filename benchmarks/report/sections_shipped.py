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


def _short_notes(mode: str, entry: dict[str, Any]) -> str:
    """One-line summary of what a mode computes in float (from the interpreter's op list)."""
    if any("collapsed" in n for n in entry.get("notes") or []):
        return "**collapsed to a constant output** (see below)"
    ops = entry.get("ops") or {}
    conv3d = (ops.get("float_ops") or {}).get("CONV_3D")
    if mode == "dynamic":
        return "int8 weights, float activations"
    if mode == "float16":
        return "float16 weights, float32 compute"
    if conv3d:
        return f"{conv3d} Conv3D op(s) stay float32 (TFLite has no int8 Conv3D kernel)"
    if ops.get("fully_integer"):
        return "fully integer"
    other = ", ".join(sorted((ops.get("float_ops") or {}).keys()))
    return f"float ops: {other}" if other else ""


def section_quantization(arms: dict[str, Arm], figure: str | None) -> list[str]:
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
    fold_explained = False
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
    if figure:
        lines += [f"![Quantization trade-off]({figure})", ""]
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
