"""Pure calculations behind the app's tables: per-sample outcomes, runs grouped over seeds,
quantization and alignment rows, and the mean ± std text.

A placeholder for ``core.results`` (issue 10): the report branch moves these same functions
there, so this module holds them with their bodies unchanged and the pages import them by name;
the merge replaces ``app.calc`` with ``core.results`` in those import lines. No Streamlit here.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from core import config, info


def outcome_table(y_true: np.ndarray, probs: np.ndarray, task: str) -> dict[str, np.ndarray]:
    """Per-sample prediction, correctness and confidence (the sample browser's sort keys).

    Args:
        y_true: int labels ``(N, L)``.
        probs: model probabilities ``(N, K)``.
        task: ``info.task(flag)``.

    Returns:
        ``pred`` (N,) predicted class (multi-label: number of positive labels), ``correct``
        (N,) bool, ``p_true`` (N,) probability the model gives the true answer (multi-label:
        mean over labels), ``confidence`` (N,) probability of what it predicted.
    """
    if task.startswith("multi-label"):
        positive = probs >= 0.5
        truth = y_true.astype(bool)
        p_true = np.where(truth, probs, 1.0 - probs).mean(axis=1)
        return {
            "pred": positive.sum(axis=1),
            "correct": (positive == truth).all(axis=1),
            "p_true": p_true,
            "confidence": np.where(positive, probs, 1.0 - probs).mean(axis=1),
        }
    label = y_true[:, 0]
    pred = probs.argmax(axis=1)
    return {
        "pred": pred,
        "correct": pred == label,
        "p_true": probs[np.arange(len(label)), label],
        "confidence": probs.max(axis=1),
    }


GROUP_FIELDS = ("model", "augment", "fine_tune_blocks", "size")
# Runs that share GROUP_FIELDS but differ in one of these are different configurations too; the
# label names such a field only where it tells two otherwise equal labels apart.
RECIPE_FIELDS = (
    "input_size",
    "learning_rate",
    "lr_schedule",
    "weight_ema",
    "label_smoothing",
    "class_weights",
    "epochs",
    "patience",
    "min_epochs",
    "batch_size",
)


def group_label(key: dict[str, Any]) -> str:
    """Readable name of a configuration group, e.g. "vgg16 · fine-tune 2 · aug on"."""
    parts = [str(key["model"])]
    if key["model"] == "vgg16":
        blocks = int(key.get("fine_tune_blocks") or 0)
        parts.append("frozen" if blocks == 0 else f"fine-tune {blocks}")
    parts.append("aug on" if key.get("augment") else "aug off")
    if int(key.get("size") or 28) != 28:
        parts.append(f"{key['size']} px")
    return " · ".join(parts)


def _recipe(cfg: dict[str, Any]) -> dict[str, Any]:
    """The RECIPE_FIELDS of a run's config, a missing field read as TrainConfig's default."""
    defaults = {f.name: f.default for f in dataclasses.fields(config.TrainConfig)}
    recipe = {f: cfg.get(f, defaults[f]) for f in RECIPE_FIELDS}
    if cfg.get("model") == "vgg16" and recipe["input_size"] is None:
        recipe["input_size"] = max(32, int(cfg.get("size") or 28))  # the effective input side
    return recipe


def _recipe_text(field: str, value: Any) -> str:
    if field == "input_size":
        return f"input {value} px"
    name = field.replace("_", " ")
    if isinstance(value, bool):
        return f"{name} {'on' if value else 'off'}"
    return f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}"


def seed_scores(run: dict) -> list[dict[str, Any]]:
    """Test scores of every seed recorded in a run's metrics (at least the run's own)."""
    metrics = run.get("metrics") or {}
    seeds = [s for s in metrics.get("seeds") or [] if isinstance(s.get("test"), dict)]
    if not seeds and isinstance(metrics.get("test"), dict):
        seeds = [{"seed": metrics.get("seed"), "test": metrics["test"], "run": run["name"]}]
    return seeds


def group_runs(all_runs: Sequence[dict], dataset: str) -> list[dict[str, Any]]:
    """Runs of one dataset grouped by ``GROUP_FIELDS`` + ``RECIPE_FIELDS``, test AUC/ACC mean ± std.

    Seeds are deduplicated by (seed, run) so a run that also appears inside another run's
    ``seeds`` list is counted once.

    Returns:
        One dict per group: ``key``, ``label``, ``runs`` (names), ``n`` (seeds), and
        ``auc_mean``, ``auc_std``, ``acc_mean``, ``acc_std`` (std is 0 for a single seed).
    """
    groups: dict[tuple, dict[str, Any]] = {}
    for run in all_runs:
        cfg = run.get("config") or {}
        if cfg.get("dataset") != dataset:
            continue
        key = {f: cfg.get(f) for f in GROUP_FIELDS}
        key["augment"] = bool(key["augment"])
        key["fine_tune_blocks"] = int(key["fine_tune_blocks"] or 0)
        key["size"] = int(key["size"] or 28)
        key.update(_recipe(cfg))
        entry = groups.setdefault(
            json.dumps(key, sort_keys=True), {"key": key, "runs": [], "scores": {}}
        )
        entry["runs"].append(run["name"])
        for s in seed_scores(run):
            entry["scores"][(s.get("seed"), s.get("run") or run["name"])] = s["test"]
    out = []
    for entry in groups.values():
        scores = list(entry["scores"].values())
        row = {
            "key": entry["key"],
            "label": group_label(entry["key"]),
            "runs": entry["runs"],
            "n": len(scores),
        }
        for metric in ("auc", "acc"):
            values = np.array([float(s[metric]) for s in scores if metric in s], dtype=float)
            row[f"{metric}_mean"] = float(values.mean()) if values.size else float("nan")
            row[f"{metric}_std"] = float(values.std(ddof=1)) if values.size > 1 else 0.0
        out.append(row)
    by_label: dict[str, list[dict[str, Any]]] = {}
    for row in out:
        by_label.setdefault(row["label"], []).append(row)
    for rows in by_label.values():
        # Same base label: each row names the recipe fields where it differs from the most common
        # value among them, so the usual recipe keeps the short label.
        usual = {
            f: Counter(json.dumps(r["key"][f]) for r in rows).most_common(1)[0][0]
            for f in RECIPE_FIELDS
        }
        for row in rows:
            extra = ", ".join(
                _recipe_text(f, row["key"][f])
                for f in RECIPE_FIELDS
                if json.dumps(row["key"][f]) != usual[f]
            )
            row["label"] += f" · {extra}" if extra else ""
    out.sort(key=lambda r: r["label"])
    return out


def quantized_rows(data: Any) -> list[dict[str, Any]]:
    """Rows of a run's ``quantized/results.json`` for display: the float model, then each mode.

    ``results.json`` (written by ``core.quantize.quantize_run``) holds ``{"float": {...},
    "modes": {mode: {...}}}``; each row here is flattened to ``mode, size_bytes, auc, acc,
    latency_ms, float_latency_ms, agreement, occlusion_corr, op_summary, notes``. A mode that
    failed to convert keeps its row with the error in ``notes``.

    Args:
        data: The parsed ``results.json`` (anything else, e.g. None, gives no rows).
    """
    if not isinstance(data, dict):
        return []
    base = data.get("float") or {}
    float_latency = base.get("latency_ms")
    rows: list[dict[str, Any]] = []
    if base:
        rows.append(
            {
                "mode": "float",
                "size_bytes": base.get("size_bytes"),
                **_scores(base),
                # the float baseline is timed as the Keras model, at batch 1 like the modes
                "latency_ms": float_latency,
                "float_latency_ms": float_latency,
                "agreement": 1.0,
                "occlusion_corr": 1.0,
                "op_summary": None,
                "notes": f"Keras file {base['keras_size_bytes'] / 1e6:.2f} MB"
                if isinstance(base.get("keras_size_bytes"), int | float)
                else "",
            }
        )
    modes = data.get("modes") or {}
    for mode, entry in modes.items() if isinstance(modes, dict) else []:
        if not isinstance(entry, dict):
            continue
        notes = entry.get("notes") or []
        if isinstance(notes, list):
            notes = "; ".join(map(str, notes))
        if entry.get("error"):
            notes = f"failed: {entry['error']}" + (f"; {notes}" if notes else "")
        corr = entry.get("occlusion_corr_mean", entry.get("occlusion_corr"))
        rows.append(
            {
                "mode": mode,
                "size_bytes": entry.get("size_bytes"),
                **_scores(entry),
                "latency_ms": entry.get("latency_ms"),
                "float_latency_ms": entry.get("float_latency_ms", float_latency),
                "agreement": entry.get("agreement"),
                "occlusion_corr": corr if isinstance(corr, int | float) else None,
                "op_summary": entry.get("op_summary", entry.get("ops")),
                "notes": notes,
            }
        )
    return rows


def _scores(entry: dict) -> dict[str, float | None]:
    test = entry.get("test") if isinstance(entry.get("test"), dict) else entry
    return {"auc": test.get("auc"), "acc": test.get("acc")}


def mean_std_text(group: dict, metric: str) -> str:
    """ "0.712 ± 0.010" over several seeds; "0.712 (1 seed)" when there is no spread to show."""
    mean = group[f"{metric}_mean"]
    if group["n"] < 2:
        return f"{mean:.3f} (1 seed)"
    return f"{mean:.3f} ± {group[f'{metric}_std']:.3f}"


def acc_standard_error(flag: str) -> float:
    """Worst-case binomial standard error of a test accuracy (p = 0.5) on this dataset."""
    n = max(1, int(info.n_samples(flag)["test"]))
    return float(np.sqrt(0.25 / n))


def alignment_rows(stored: dict) -> list[dict]:
    """Rows of the test-split alignment table from a run's ``explain.json`` (one per method)."""
    rows = []
    for method in ("gradcam", "gradcam++"):
        s = stored.get(method)
        if not isinstance(s, dict):
            continue
        rows.append(
            {
                "method": "Grad-CAM" if method == "gradcam" else "Grad-CAM++",
                "samples": s.get("n"),
                "heat on anatomy": s.get("energy_in_mask_mean"),
                "anatomy area (uniform map)": s.get("mask_area_mean"),
                "ratio": s.get("energy_over_area"),
                "deletion AUC, salient first": s.get("deletion_auc_salient_mean"),
                "deletion AUC, random order": s.get("deletion_auc_random_mean"),
                "all-zero maps": s.get("zero_maps"),
            }
        )
    return rows
