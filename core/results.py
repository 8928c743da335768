"""Numbers over seeds and runs, shared by the app, the report and the experiment scripts.

One definition of every statistic the project shows: mean ± *sample* standard deviation
(``ddof=1``) over seeds, the Welch standard error of a difference of two seed means, the binomial
standard error of an accuracy, and the pure table builders the app's pages and
``benchmarks.report`` read runs through (runs grouped by recipe, per-sample outcomes,
quantization rows, Grad-CAM alignment rows). Nothing here imports TensorFlow or Streamlit:
the inputs are the registry's plain dicts and numpy arrays.

    >>> mean, std = mean_std([0.70, 0.72, 0.74])
    >>> round(mean, 4), round(std, 4)
    (0.72, 0.02)
    >>> stat([0.70, 0.72, 0.74]).fmt()
    '0.7200 ± 0.0200'
    >>> difference(stat([0.80, 0.81, 0.82]), stat([0.70, 0.72, 0.74])).within_noise
    False
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core import config, info

# A difference of means is called "beyond noise" when it exceeds this many combined standard
# errors (roughly a 95% two-sided bound; with 3 seeds per arm the t-quantile is larger still,
# so this is, if anything, generous to the effect).
NOISE_Z = 2.0


# --------------------------------------------------------------------------------------------
# Mean ± std over seeds
# --------------------------------------------------------------------------------------------
def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``) of ``values``.

    The one definition used by the report, the app, ``core.experiments.summarize`` and the VGG
    sweep: a seed spread is an estimate from a few draws, hence ``ddof=1``.

    Args:
        values: Numbers (e.g. one test AUC per seed).

    Returns:
        ``(mean, std)``; std is 0.0 for a single value (no spread to measure) and the mean is
        NaN for no values.
    """
    arr = np.asarray(list(values), dtype=float)
    mean = float(arr.mean()) if arr.size else float("nan")
    return mean, float(arr.std(ddof=1)) if arr.size > 1 else 0.0


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (ddof=1) over seeds."""

    mean: float
    std: float
    n: int

    def fmt(self, digits: int = 4) -> str:
        if self.n < 2:
            return f"{self.mean:.{digits}f} (1 seed)"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def stat(values: Iterable[float | None]) -> Stat | None:
    """Mean ± sample std (ddof=1) of the finite values, or None when there is none.

    Example:
        >>> stat([0.5, None, float("nan")])
        Stat(mean=0.5, std=0.0, n=1)
    """
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None
    mean, std = mean_std(finite)
    return Stat(mean, std, len(finite))


@dataclass(frozen=True)
class Difference:
    """Difference of two seed means with its combined standard error.

    ``se`` is the Welch standard error ``sqrt(s_a²/n_a + s_b²/n_b)``; it is None when either
    side has fewer than two seeds (no spread to measure).
    """

    diff: float
    se: float | None

    @property
    def t(self) -> float | None:
        if self.se is None or self.se == 0:
            return None
        return self.diff / self.se

    @property
    def within_noise(self) -> bool | None:
        if self.se is None:
            return None
        return abs(self.diff) < NOISE_Z * self.se

    def describe(self) -> str:
        if self.se is None:
            return f"{self.diff:+.4f} (spread unknown: needs at least 2 seeds per arm)"
        t = self.t
        t_text = f", t = {t:+.2f}" if t is not None else ""
        verdict = (
            f"within noise (|Δ| < {NOISE_Z:g} SE)"
            if self.within_noise
            else f"beyond noise (|Δ| ≥ {NOISE_Z:g} SE)"
        )
        return f"{self.diff:+.4f} ± {self.se:.4f} (combined SE{t_text}): {verdict}"


def difference(a: Stat, b: Stat) -> Difference:
    """``a.mean - b.mean`` with the Welch combined standard error of the two seed means."""
    se = None
    if a.n >= 2 and b.n >= 2:
        se = math.sqrt(a.std**2 / a.n + b.std**2 / b.n)
    return Difference(a.mean - b.mean, se)


def binomial_se(p: float, n: int) -> float:
    """Standard error of an accuracy ``p`` measured on ``n`` test samples."""
    return math.sqrt(max(p * (1.0 - p), 0.0) / max(n, 1))


def acc_standard_error(flag: str) -> float:
    """Worst-case binomial standard error of a test accuracy (p = 0.5) on this dataset."""
    n = max(1, int(info.n_samples(flag)["test"]))
    return float(np.sqrt(0.25 / n))


def mean_std_text(group: dict, metric: str) -> str:
    """ "0.712 ± 0.010" over several seeds; "0.712 (1 seed)" when there is no spread to show."""
    mean = group[f"{metric}_mean"]
    if group["n"] < 2:
        return f"{mean:.3f} (1 seed)"
    return f"{mean:.3f} ± {group[f'{metric}_std']:.3f}"


# --------------------------------------------------------------------------------------------
# Per-sample outcomes
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# Runs grouped by configuration, mean ± std over seeds
# --------------------------------------------------------------------------------------------
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
            mean, std = mean_std(float(s[metric]) for s in scores if metric in s)
            row[f"{metric}_mean"] = mean
            row[f"{metric}_std"] = std
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


# --------------------------------------------------------------------------------------------
# Quantization and alignment rows
# --------------------------------------------------------------------------------------------
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
