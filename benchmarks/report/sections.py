"""Generate docs/RESULTS.md (and its PNG figures) from the model registry.

Every number in the report is read from the registry's JSON files (``metrics.json`` with its
``seeds`` list, ``history.json``, ``evaluation.json``, ``quantized/results.json``,
``explain.json``) or from ``core.info.PUBLISHED``; nothing is typed by hand. Arms that have not
been trained, and quantization or alignment results that do not exist yet, render as
"not run yet" instead of failing, so the report can be regenerated at any stage.

    python -m benchmarks.report [--registry DIR] [--out docs/RESULTS.md] [--no-overlays]

Only the Grad-CAM example figure needs TensorFlow, the models and the real test data; the
tables and the other figures need nothing but the JSON files.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core import info, registry
from core.config import REPO_ROOT, trained_models_dir
from core.experiments import ARMS

DEFAULT_OUT = REPO_ROOT / "docs" / "RESULTS.md"
FIGURE_DPI = 100
NOT_RUN = "not run yet"

# A difference of means is called "beyond noise" when it exceeds this many combined standard
# errors (roughly a 95% two-sided bound; with 3 seeds per arm the t-quantile is larger still,
# so this is, if anything, generous to the effect).
NOISE_Z = 2.0

# Issue #5 targets. The 3D target and stretch come from the published table; the VGG16 target is
# the issue's own bar, set just above every published 28 px RetinaMNIST result
# (Google AutoML Vision 0.750 / 0.531, MedMNIST+ VGG16 0.7535 / 0.5417).
TARGET_3D_METHOD = "ResNet-50 + 3D"
VGG16_TARGET = {"auc": 0.755, "acc": 0.545}

# Quantization modes the reproduction runs on every family's best model; float16 is optional.
EXPECTED_QUANT_MODES = ("dynamic", "int8", "qat")

FIGURES = {
    "curves": "training_curves.png",
    "roc": "roc_curves.png",
    "quant": "quantization.png",
    "gradcam": "gradcam_examples.png",
}

# Fixed section order; an experiment name found in ARMS but not here is appended after them.
EXPERIMENT_ORDER = ("3D CNN", "augmentation", "transfer", "resnet vs cnn")


# --------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------
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
    """Mean ± sample std (ddof=1, as ``core.experiments.summarize``) of the finite values."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if arr.size == 0:
        return None
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return Stat(float(arr.mean()), std, int(arr.size))


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


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return NOT_RUN
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h} h {m:02d} min"
    if m:
        return f"{m} min {s:02d} s"
    return f"{s} s"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.2f} MB"
    return f"{n / 1024:.1f} KB"


def _f(value: Any, digits: int = 4, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    value = round(float(value), digits) + 0.0  # no "-0.0000" for a tiny negative number
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


# --------------------------------------------------------------------------------------------
# Registry → arms
# --------------------------------------------------------------------------------------------
@dataclass
class Arm:
    """One experiment arm: its definition and, once promoted, its reference run."""

    name: str
    label: str
    experiment: str
    dataset: str
    model: str
    augment: bool
    run: dict[str, Any] | None = None
    seeds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ran(self) -> bool:
        return self.run is not None

    @property
    def path(self) -> Path | None:
        return Path(self.run["path"]) if self.run else None

    @property
    def metrics(self) -> dict[str, Any]:
        return self.run["metrics"] if self.run else {}

    def json(self, name: str) -> Any:
        """A JSON file of the reference run, or None."""
        if not self.run:
            return None
        try:
            return registry.read_json(self.path, name)
        except (OSError, ValueError):
            return None

    def metric(self, split: str, metric: str) -> Stat | None:
        """Mean ± std over seeds of ``split``'s ``metric`` (falls back to the run alone)."""
        if self.seeds:
            return stat(s.get(split, {}).get(metric) for s in self.seeds)
        value = self.metrics.get(split, {}).get(metric)
        return stat([value]) if value is not None else None

    def shipped(self, split: str, metric: str) -> float | None:
        return self.metrics.get(split, {}).get(metric)

    @property
    def reference_seed(self) -> Any:
        return self.metrics.get("summary", {}).get("reference_seed", self.metrics.get("seed"))

    @property
    def selection_score(self) -> float | None:
        """Mean validation AUC over seeds: the only number that picks anything."""
        s = self.metric("val", "auc")
        return s.mean if s else None

    @property
    def wall_time_s(self) -> float | None:
        """Training wall time summed over every seed."""
        times = [s.get("wall_time_s") for s in self.seeds]
        if self.seeds and all(t is not None for t in times):
            return float(sum(times))
        total = self.metrics.get("summary", {}).get("total_wall_time_s")
        if total is not None:
            return float(total)
        return self.metrics.get("wall_time_s")

    @property
    def n_test(self) -> int:
        evaluation = self.json("evaluation.json") or {}
        if evaluation.get("n"):
            return int(evaluation["n"])
        try:
            return int(info.n_samples(self.dataset)["test"])
        except (ValueError, KeyError):
            return 0


def _arm_from_run(run: dict[str, Any]) -> Arm:
    cfg = run["config"]
    name = cfg.get("arm") or run["name"]
    spec = ARMS.get(name, {})
    spec_cfg = spec.get("config", {})
    seeds = run["metrics"].get("seeds") or []
    return Arm(
        name=name,
        label=cfg.get("variant") or spec.get("label") or name,
        experiment=cfg.get("experiment") or spec.get("experiment") or "other",
        dataset=cfg.get("dataset") or spec_cfg.get("dataset", "?"),
        model=cfg.get("model") or spec_cfg.get("model", "?"),
        augment=bool(cfg.get("augment", spec_cfg.get("augment", False))),
        run=run,
        seeds=[s for s in seeds if isinstance(s, dict)],
    )


def _list_runs(root: str | os.PathLike | None) -> list[dict[str, Any]]:
    """``registry.list_runs``, or, if a run's optional JSON is corrupt, a tolerant equivalent.

    ``list_runs`` also parses ``quantized/results.json`` and ``explain.json`` and raises on a
    corrupt one; the report only needs each run's config and metrics and must still render.
    """
    try:
        return registry.list_runs(root)
    except (OSError, ValueError):
        pass
    base = registry.root_dir(root)
    runs = []
    for path in sorted(base.iterdir()):
        if path.name.startswith(".") or not path.is_dir():
            continue
        try:
            metrics = registry.read_json(path, "metrics.json")
            cfg = registry.read_json(path, "config.json")
        except (OSError, ValueError):
            continue
        if metrics and cfg:
            runs.append({"name": path.name, "path": str(path), "config": cfg, "metrics": metrics})
    return runs


def collect(root: str | os.PathLike | None = None) -> tuple[dict[str, Arm], list[str]]:
    """Every arm of ``core.experiments.ARMS`` (run or not) plus any other promoted arm.

    Returns:
        ``(arms, other_runs)``: arms by name in ARMS order, and the names of registry runs that
        belong to no experiment (ad-hoc runs from the app), which the report only counts.
    """
    arms: dict[str, Arm] = {}
    for name, spec in ARMS.items():
        cfg = spec["config"]
        arms[name] = Arm(
            name=name,
            label=spec["label"],
            experiment=spec["experiment"],
            dataset=cfg["dataset"],
            model=cfg["model"],
            augment=bool(cfg.get("augment", False)),
        )
    others = []
    for run in _list_runs(root):
        cfg = run["config"]
        if cfg.get("arm") or run["name"] in ARMS:
            arm = _arm_from_run(run)
            arms[arm.name] = arm
        else:
            others.append(run["name"])
    return arms, others


def best_by_val(candidates: Iterable[Arm]) -> Arm | None:
    """The run arm with the highest mean validation AUC (never the test split)."""
    ran = [a for a in candidates if a.ran and a.selection_score is not None]
    return max(ran, key=lambda a: a.selection_score) if ran else None


def best_per_family(arms: Iterable[Arm]) -> dict[str, Arm]:
    """For each model family (cnn3d, cnn2d, vgg16, resnet) its arm with the best mean val AUC."""
    by_family: dict[str, list[Arm]] = {}
    for arm in arms:
        by_family.setdefault(arm.model, []).append(arm)
    out = {}
    for family, members in by_family.items():
        best = best_by_val(members)
        if best is not None:
            out[family] = best
    return out


def experiments(arms: dict[str, Arm]) -> dict[str, list[Arm]]:
    """Arms grouped by experiment, in report order."""
    groups: dict[str, list[Arm]] = {name: [] for name in EXPERIMENT_ORDER}
    for arm in arms.values():
        groups.setdefault(arm.experiment, []).append(arm)
    return {k: v for k, v in groups.items() if v}


# --------------------------------------------------------------------------------------------
# Markdown pieces
# --------------------------------------------------------------------------------------------
def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _dataset_title(flag: str) -> str:
    try:
        return info.python_class(flag)
    except ValueError:
        return flag


def comparison_table(ours: Sequence[Arm], flag: str) -> list[str]:
    """Our arms (mean ± std over seeds, shipped seed) above the published baselines."""
    rows = []
    for arm in ours:
        auc, acc = arm.metric("test", "auc"), arm.metric("test", "acc")
        if not arm.ran or auc is None or acc is None:
            rows.append([f"**{arm.label}** (`{arm.name}`)", "ours", NOT_RUN, NOT_RUN, NOT_RUN, "–"])
            continue
        shipped = (
            f"seed {arm.reference_seed}: {_f(arm.shipped('test', 'auc'))} / "
            f"{_f(arm.shipped('test', 'acc'))}"
        )
        rows.append(
            [f"**{arm.label}** (`{arm.name}`)", "ours", auc.n, auc.fmt(), acc.fmt(), shipped]
        )
    for pub in info.PUBLISHED.get(flag, []):
        rows.append(
            [
                pub["method"],
                "published (MedMNIST)",
                "–",
                f"{pub['auc']:.4f}",
                f"{pub['acc']:.4f}",
                "–",
            ]
        )
    headers = ["Model", "Source", "Seeds", "Test AUC", "Test ACC", "Shipped seed (AUC / ACC)"]
    return md_table(headers, rows)


@dataclass(frozen=True)
class Verdict:
    """A target check on the mean over seeds."""

    what: str
    status: str  # "met", "not met", "partly met (AUC only)", "partly met (ACC only)", NOT_RUN
    text: str

    @property
    def met(self) -> bool:
        return self.status == "met"


def target_verdict(
    arm: Arm | None, auc_target: float, acc_target: float, what: str, strict: bool = True
) -> Verdict:
    """Compare the mean test AUC/ACC over seeds with a target pair.

    Args:
        arm: The arm under test (None or not run → "not run yet").
        auc_target: Target test AUC.
        acc_target: Target test ACC.
        what: Name of the target, e.g. "target (ResNet-50 + 3D)".
        strict: "beat" (>) when True, "reach" (≥) when False.
    """
    if arm is None or not arm.ran:
        return Verdict(what, NOT_RUN, f"**{what}: {NOT_RUN}**")
    auc, acc = arm.metric("test", "auc"), arm.metric("test", "acc")
    if auc is None or acc is None:
        return Verdict(what, NOT_RUN, f"**{what}: {NOT_RUN}**")

    def passes(value: float, target: float) -> bool:
        return value > target if strict else value >= target

    ok_auc, ok_acc = passes(auc.mean, auc_target), passes(acc.mean, acc_target)
    status = {
        (True, True): "met",
        (True, False): "partly met (AUC only)",
        (False, True): "partly met (ACC only)",
        (False, False): "not met",
    }[(ok_auc, ok_acc)]
    op = ">" if strict else "≥"
    text = (
        f"**{what}: {status}** with `{arm.name}`: mean test AUC {auc.mean:.4f} vs {op} "
        f"{auc_target:.4f} ({auc.mean - auc_target:+.4f}, seed std {auc.std:.4f}); mean test ACC "
        f"{acc.mean:.4f} vs {op} {acc_target:.4f} ({acc.mean - acc_target:+.4f}, seed std "
        f"{acc.std:.4f}); {auc.n} seed(s)."
    )
    if ok_acc and arm.n_test:
        se = binomial_se(acc.mean, arm.n_test)
        if acc.mean - acc_target < se:
            text += (
                f" The ACC margin is smaller than the test set's binomial standard error "
                f"({se:.3f} on {arm.n_test} samples): a tie within measurement noise, not a win."
            )
    s_auc, s_acc = arm.shipped("test", "auc"), arm.shipped("test", "acc")
    if (
        status != "met"
        and s_auc is not None
        and s_acc is not None
        and passes(s_auc, auc_target)
        and passes(s_acc, acc_target)
    ):
        text += (
            f" The shipped seed alone ({s_auc:.4f} / {s_acc:.4f}) would pass, but one seed "
            "is not evidence."
        )
    return Verdict(what, status, text)


def _published_row(flag: str, method: str) -> dict[str, Any] | None:
    for row in info.PUBLISHED.get(flag, []):
        if row["method"] == method:
            return row
    return None


def _noise_note(arm: Arm) -> str:
    acc = arm.metric("test", "acc")
    if acc is None or not arm.n_test:
        return ""
    return (
        f"On {arm.n_test} test samples the binomial standard error of an accuracy of "
        f"{acc.mean:.3f} is {binomial_se(acc.mean, arm.n_test):.3f}."
    )


def section_3d(group: list[Arm]) -> tuple[list[str], list[Verdict]]:
    flag = group[0].dataset
    lines = [f"Dataset: {_dataset_title(flag)} (`{flag}`), {info.modality_note(flag)}.", ""]
    lines += comparison_table(group, flag)
    chosen = best_by_val(group)
    target = _published_row(flag, TARGET_3D_METHOD)
    best = info.best_published(flag)
    verdicts = []
    if target:
        verdicts.append(
            target_verdict(
                chosen,
                target["auc"],
                target["acc"],
                f"Target (beat {TARGET_3D_METHOD}: {target['auc']:.3f} AUC / "
                f"{target['acc']:.3f} ACC)",
            )
        )
    if best:
        (b_auc, m_auc), (b_acc, m_acc) = best["auc"], best["acc"]
        verdicts.append(
            target_verdict(
                chosen,
                b_auc,
                b_acc,
                f"Stretch (beat the best published figures: {b_auc:.3f} AUC by {m_auc} / "
                f"{b_acc:.3f} ACC by {m_acc})",
            )
        )
    if len(group) > 1 and chosen:
        lines += [
            f"Arm judged: `{chosen.name}` (highest mean validation AUC of this experiment).",
            "",
        ]
    lines += [f"- {v.text}" for v in verdicts] + [""]
    if chosen:
        lines += [_noise_note(chosen), ""]
    return lines, verdicts


def _pairs(group: list[Arm]) -> list[tuple[Arm, Arm]]:
    """(augmented, not augmented) pairs with the same dataset and model family."""
    pairs = []
    for aug in (a for a in group if a.augment):
        for plain in (a for a in group if not a.augment):
            if (aug.dataset, aug.model) == (plain.dataset, plain.model):
                pairs.append((aug, plain))
                break
    return pairs


def diff_rows(a: Arm, b: Arm) -> tuple[list[list[str]], dict[str, Difference]]:
    rows, diffs = [], {}
    for metric in ("auc", "acc"):
        sa, sb = a.metric("test", metric), b.metric("test", metric)
        if sa is None or sb is None:
            rows.append([f"test {metric.upper()}", NOT_RUN])
            continue
        d = difference(sa, sb)
        diffs[metric] = d
        rows.append([f"test {metric.upper()}", d.describe()])
    return rows, diffs


def section_augmentation(group: list[Arm]) -> tuple[list[str], list[tuple[Arm, Arm, dict]]]:
    flag = group[0].dataset
    lines = [f"Dataset: {_dataset_title(flag)} (`{flag}`), same architecture and schedule.", ""]
    lines += comparison_table(group, flag)
    results = []
    for aug, plain in _pairs(group):
        rows, diffs = diff_rows(aug, plain)
        lines += [f"Difference `{aug.name}` − `{plain.name}` (mean over seeds):", ""]
        lines += md_table(["Metric", "Δ ± combined SE"], rows)
        results.append((aug, plain, diffs))
    lines += [
        "The combined standard error is √(s₁²/n₁ + s₂²/n₂) from the seed-to-seed standard "
        "deviations; both arms are scored on the same test images, so this spread is the "
        "training noise the comparison has to beat. With 3 seeds per arm it is itself uncertain.",
        "",
    ]
    return lines, results


def section_sweep(sweep: dict[str, Any], arm_val_auc: float | None = None) -> list[str]:
    """The VGG16 recipe sweep (``benchmarks/vgg_sweep.py``): val beside test, per variant.

    ``arm_val_auc`` (the ``vgg16_ft2`` arm's mean val AUC) adds a sentence saying whether any
    variant beats it on validation, and which variants reach the target on test only.
    """
    rows = []
    val_auc: dict[str, float] = {}
    on_target = []
    for variant, r in sweep.items():
        seeds = r.get("seeds") or []
        stats = {
            (split, key): stat(m[split][key] for m in seeds)
            for split in ("val", "test")
            for key in ("auc", "acc")
        }
        cells = [st.fmt() if st else "–" for st in stats.values()]
        if stats["val", "auc"]:
            val_auc[variant] = stats["val", "auc"].mean
        auc, acc = stats["test", "auc"], stats["test", "acc"]
        if auc and acc and auc.mean >= VGG16_TARGET["auc"] and acc.mean >= VGG16_TARGET["acc"]:
            on_target.append(variant)
        changes = ", ".join(f"{k}={v}" for k, v in (r.get("changes") or {}).items()) or "none"
        rows.append([f"`{variant}`", changes, len(seeds), *cells])
    lines = [
        "Recipe sweep (`python -m benchmarks.vgg_sweep`): variants of `vgg16_ft2`'s config, "
        "3 seeds each, mean ± std. A recipe is chosen on the val columns only; the test "
        "columns are shown so the reader can judge, never to choose.",
        "",
    ]
    lines += md_table(
        ["Variant", "Changes vs vgg16_ft2", "Seeds", "Val AUC", "Val ACC", "Test AUC", "Test ACC"],
        rows,
    )
    if arm_val_auc is not None and val_auc:
        top = max(val_auc, key=val_auc.__getitem__)
        beats = val_auc[top] > arm_val_auc
        lines += [
            f"Highest mean val AUC in the sweep: `{top}` ({val_auc[top]:.4f}), "
            + ("above" if beats else "not above")
            + f" the `vgg16_ft2` arm's {arm_val_auc:.4f}"
            + ("." if beats else ", so the arm's recipe stays.")
            + " Variants that reach the VGG16 target on test: "
            + (", ".join(f"`{v}`" for v in on_target) if on_target else "none")
            + ".",
            "",
        ]
    return lines


def section_transfer(
    group: list[Arm], sweep: dict[str, Any] | None = None
) -> tuple[list[str], Verdict | None, Arm | None]:
    flag = group[0].dataset
    lines = [
        f"Dataset: {_dataset_title(flag)} (`{flag}`); VGG16 with ImageNet weights, inputs "
        "upsampled in-graph to the size VGG16 needs; 0 = frozen backbone, k = last k conv blocks "
        "fine-tuned.",
        "",
    ]
    rows = []
    for arm in group:
        cfg = (arm.run or {}).get("config") or ARMS.get(arm.name, {}).get("config", {})
        val = arm.metric("val", "auc")
        rows.append(
            [
                f"`{arm.name}`",
                cfg.get("fine_tune_blocks", "–"),
                cfg.get("input_size") or "–",
                cfg.get("learning_rate", "–"),
                val.fmt() if val else NOT_RUN,
                f"{arm.metrics['trainable_params']:,}"
                if arm.ran and isinstance(arm.metrics.get("trainable_params"), int)
                else "–",
            ]
        )
    lines += md_table(
        ["Arm", "Fine-tuned blocks", "Input size", "LR", "Val AUC", "Trainable params"], rows
    )
    if sweep:
        ft2 = next((a for a in group if a.name == "vgg16_ft2" and a.ran), None)
        ft2_val = ft2.metric("val", "auc") if ft2 else None
        lines += section_sweep(sweep, ft2_val.mean if ft2_val else None)
    lines += comparison_table(group, flag)
    chosen = best_by_val(group)
    verdict = target_verdict(
        chosen,
        VGG16_TARGET["auc"],
        VGG16_TARGET["acc"],
        f"Target (best VGG16 variant ≥ {VGG16_TARGET['auc']} AUC and ≥ {VGG16_TARGET['acc']} ACC)",
        strict=False,
    )
    if chosen:
        lines += [
            f"Best variant chosen by mean validation AUC: `{chosen.name}` "
            f"({chosen.selection_score:.4f}).",
            "",
        ]
    lines += [f"- {verdict.text}", ""]
    others = [a for a in group if a.ran and a is not chosen]
    hits = [a.name for a in others if target_verdict(a, **_vgg_kw()).met]
    if hits:
        lines += [
            f"Other variants that reach the target on the test split (not selected, because "
            f"selection uses validation only): {', '.join(f'`{h}`' for h in hits)}.",
            "",
        ]
    return lines, verdict, chosen


def _vgg_kw() -> dict[str, Any]:
    return {
        "auc_target": VGG16_TARGET["auc"],
        "acc_target": VGG16_TARGET["acc"],
        "what": "VGG16 target",
        "strict": False,
    }


def counterpart(arm: Arm, arms: dict[str, Arm]) -> Arm | None:
    """The custom CNN arm trained on the same dataset with the same augmentation setting."""
    for other in arms.values():
        if (
            other.model in ("cnn2d", "cnn3d")
            and other.dataset == arm.dataset
            and other.augment == arm.augment
        ):
            return other
    return None


def section_resnet(
    group: list[Arm], arms: dict[str, Arm]
) -> tuple[list[str], list[tuple[Arm, Arm, dict]]]:
    lines: list[str] = []
    results = []
    for arm in group:
        cnn = counterpart(arm, arms)
        flag = arm.dataset
        lines += [
            f"Dataset: {_dataset_title(flag)} (`{flag}`): `{arm.name}` against the custom CNN "
            f"`{cnn.name if cnn else '–'}` (same data, same augmentation setting).",
            "",
        ]
        lines += comparison_table([arm] + ([cnn] if cnn else []), flag)
        if cnn is not None:
            rows, diffs = diff_rows(arm, cnn)
            lines += [f"Difference `{arm.name}` − `{cnn.name}`:", ""]
            lines += md_table(["Metric", "Δ ± combined SE"], rows)
            results.append((arm, cnn, diffs))
            if arm.ran and cnn.ran:
                p_res, p_cnn = arm.metrics.get("params"), cnn.metrics.get("params")
                if p_res and p_cnn:
                    lines += [f"Parameters: ResNet {p_res:,} vs custom CNN {p_cnn:,}.", ""]
    return lines, results


def section_headline(arms: dict[str, Arm]) -> list[str]:
    rows = []
    for arm in arms.values():
        auc, acc = arm.metric("test", "auc"), arm.metric("test", "acc")
        best = info.best_published(arm.dataset)
        pub = f"{best['auc'][0]:.4f} / {best['acc'][0]:.4f}" if best else "–"
        if not arm.ran or auc is None or acc is None:
            rows.append(
                [arm.experiment, f"`{arm.name}`", arm.dataset, NOT_RUN, NOT_RUN, NOT_RUN, "–", pub]
            )
            continue
        rows.append(
            [
                arm.experiment,
                f"`{arm.name}`",
                arm.dataset,
                auc.n,
                auc.fmt(),
                acc.fmt(),
                arm.reference_seed,
                pub,
            ]
        )
    return md_table(
        [
            "Experiment",
            "Arm",
            "Dataset",
            "Seeds",
            "Test AUC (mean ± std)",
            "Test ACC (mean ± std)",
            "Shipped seed",
            "Best published AUC / ACC",
        ],
        rows,
    )


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


# --------------------------------------------------------------------------------------------
# Commentary: every number comes from the same computations as the tables
# --------------------------------------------------------------------------------------------
def commentary(
    arms: dict[str, Arm],
    verdicts_3d: list[Verdict],
    aug_results: list[tuple[Arm, Arm, dict]],
    vgg_verdict: Verdict | None,
    vgg_best: Arm | None,
    resnet_results: list[tuple[Arm, Arm, dict]],
) -> list[str]:
    ran = [a for a in arms.values() if a.ran]
    if not ran:
        return [f"No reference run has been promoted yet: every experiment is {NOT_RUN}.", ""]
    parts: list[str] = []
    missing = [a.name for a in arms.values() if not a.ran]
    if missing:
        parts.append(
            f"{len(ran)} of {len(arms)} arms have results; "
            f"{', '.join(f'`{m}`' for m in missing)} {'is' if len(missing) == 1 else 'are'} "
            f"{NOT_RUN}, so the conclusions below cover only what ran."
        )
    # 3D
    if verdicts_3d and verdicts_3d[0].status != NOT_RUN:
        target, *rest = verdicts_3d
        stretch = rest[0] if rest else None
        sentence = f"The 3D CNN's target against {TARGET_3D_METHOD} is {target.status}"
        if stretch is not None:
            sentence += f", and the stretch target is {stretch.status}"
        parts.append(sentence + " (means over seeds, see the 3D section for the margins).")
    # augmentation
    for aug, _plain, diffs in aug_results:
        d = diffs.get("auc")
        if d is None:
            continue
        direction = "raised" if d.diff > 0 else "lowered"
        if d.within_noise is None:
            noise = "the spread is unknown with a single seed"
        elif d.within_noise:
            noise = (
                f"which is within noise (|Δ| < {NOISE_Z:g} × the combined standard error "
                f"{d.se:.4f}), so this experiment does not show that augmentation helps"
            )
        else:
            noise = f"which is beyond noise ({abs(d.t or 0):.1f} combined standard errors)"
        parts.append(
            f"Augmentation {direction} the {aug.model} test AUC on {aug.dataset} by "
            f"{abs(d.diff):.4f}, {noise}."
        )
    # transfer
    if vgg_verdict is not None and vgg_best is not None and vgg_verdict.status != NOT_RUN:
        auc = vgg_best.metric("test", "auc")
        acc = vgg_best.metric("test", "acc")
        parts.append(
            f"The VGG16 variant picked on validation AUC is `{vgg_best.name}` "
            f"(test AUC {auc.fmt()}, ACC {acc.fmt()}); the VGG16 target is {vgg_verdict.status}."
        )
    # resnet
    for _res, cnn, diffs in resnet_results:
        d = diffs.get("auc")
        if d is None:
            continue
        better = "above" if d.diff > 0 else "below"
        noise = (
            ""
            if d.within_noise is None
            else (" (within noise)" if d.within_noise else " (beyond noise)")
        )
        parts.append(
            f"The ResNet trained from scratch scored {abs(d.diff):.4f} test AUC {better} the "
            f"custom CNN `{cnn.name}`{noise}."
        )
    # quantization
    qres = quant_results(arms)
    for arm, res in qres:
        modes = res.get("modes") or {}
        ok = {m: e for m, e in modes.items() if e.get("ok")}
        if not ok:
            continue
        worst_mode = max(ok, key=lambda m: abs(ok[m].get("auc_delta") or 0.0))
        smallest = max(ok, key=lambda m: ok[m].get("size_ratio") or 0.0)
        text = (
            f"Quantizing `{arm.name}`: {smallest} is the smallest "
            f"({ok[smallest]['size_ratio']:.1f}× smaller than float32 TFLite); the largest test "
            f"AUC change is "
            f"{ok[worst_mode]['auc_delta']:+.4f} ({worst_mode})."
        )
        if any("CONV_3D" in (e.get("ops") or {}).get("float_ops", {}) for e in ok.values()):
            text += (
                " Its Conv3D layers stay float32 in the int8 models, so it is only partly integer."
            )
        parts.append(text)
    # alignment
    for arm in ran:
        ex = arm.json("explain.json")
        s = ex.get("gradcam") if isinstance(ex, dict) else None
        if not isinstance(s, dict):
            continue
        e, area = s.get("energy_in_mask_mean"), s.get("mask_area_mean")
        sal, rnd = s.get("deletion_auc_salient_mean"), s.get("deletion_auc_random_mean")
        bits = []
        if e is not None and area:
            ratio = e / area
            if ratio >= ALIGN_RATIO_BAND[1]:
                judged = "concentrated on the anatomy"
            elif ratio > ALIGN_RATIO_BAND[0]:
                judged = "no more on the anatomy than a uniform map would be"
            else:
                judged = "less on the anatomy than a uniform map would be"
            bits.append(
                f"{100 * e:.0f}% of its Grad-CAM energy lies on the anatomy mask, which covers "
                f"{100 * area:.0f}% of the input ({ratio:.2f}× a uniform map: {judged})"
            )
        if sal is not None and rnd:
            rel_change = (sal - rnd) / rnd
            if rel_change <= -DELETION_MARGIN:
                faithful = "faster than"
            elif rel_change >= DELETION_MARGIN:
                faithful = "slower than"
            else:
                faithful = "about as fast as"
            bits.append(
                f"deleting its most salient pixels first lowers the class probability {faithful} "
                f"random deletion (area {sal:.3f} vs {rnd:.3f})"
            )
        if bits:
            parts.append(f"For `{arm.name}`, " + "; ".join(bits) + ".")
    # noise floor
    retina = [a for a in ran if a.dataset == "retinamnist"]
    if retina:
        a = retina[0]
        acc = a.metric("test", "acc")
        if acc and a.n_test:
            parts.append(
                f"Caveat: RetinaMNIST has {a.n_test} test images, so one accuracy figure near "
                f"{acc.mean:.2f} carries a binomial standard error of "
                f"{binomial_se(acc.mean, a.n_test):.3f}; differences to the published numbers "
                f"smaller than that are not meaningful, whatever their sign."
            )
    return [" ".join(parts), ""]


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(arms: dict[str, Arm], path: Path) -> bool:
    """Validation AUC per epoch of each reference run, one panel per dataset."""
    curves: dict[str, list[tuple[Arm, list[float]]]] = {}
    for arm in arms.values():
        hist = arm.json("history.json") if arm.ran else None
        vals = (hist or {}).get("val_auc") or []
        if vals:
            curves.setdefault(arm.dataset, []).append((arm, vals))
    if not curves:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 3.6), squeeze=False)
    for ax, (flag, items) in zip(axes[0], curves.items(), strict=True):
        for arm, vals in items:
            epochs = np.arange(1, len(vals) + 1)
            (line,) = ax.plot(epochs, vals, lw=1.2, label=f"{arm.name} (seed {arm.reference_seed})")
            best = arm.metrics.get("best_epoch")
            if best and 1 <= best <= len(vals):
                ax.plot([best], [vals[best - 1]], "o", color=line.get_color(), ms=4)
        ax.set_title(f"{flag}: validation AUC per epoch (dot = kept epoch)", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("val AUC")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return True


def plot_roc(arms: dict[str, Arm], path: Path) -> bool:
    """One-vs-rest ROC curves of each reference run on the test split."""
    items = []
    for arm in arms.values():
        ev = arm.json("evaluation.json") if arm.ran else None
        if ev and ev.get("roc"):
            items.append((arm, ev))
    if not items:
        return False
    plt = _pyplot()
    cols = min(4, len(items))
    rows = math.ceil(len(items) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.0 * rows), squeeze=False)
    for ax in axes.ravel()[len(items) :]:
        ax.axis("off")
    for ax, (arm, ev) in zip(axes.ravel(), items, strict=False):
        for curve in ev["roc"]:
            ax.plot(
                curve["fpr"],
                curve["tpr"],
                lw=1.0,
                label=f"{curve['label']} ({curve.get('auc', float('nan')):.2f})",
            )
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_title(f"{arm.name}: AUC {ev.get('auc', float('nan')):.3f}", fontsize=9)
        ax.set_xlabel("false positive rate", fontsize=8)
        ax.set_ylabel("true positive rate", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return True


def plot_quantization(arms: dict[str, Arm], path: Path) -> bool:
    """Model size (log scale) against test AUC for the float model and each mode."""
    results = quant_results(arms)
    points = []
    for arm, res in results:
        fl = res.get("float") or {}
        pts = []
        if fl.get("size_bytes") and (fl.get("test") or {}).get("auc") is not None:
            pts.append(("float32", fl["size_bytes"], fl["test"]["auc"]))
        for mode, entry in (res.get("modes") or {}).items():
            if entry.get("ok") and entry.get("size_bytes"):
                pts.append((mode, entry["size_bytes"], entry["test"]["auc"]))
        if pts:
            points.append((arm, pts))
    if not points:
        return False
    plt = _pyplot()
    markers = {"float32": "o", "dynamic": "s", "int8": "^", "float16": "D", "qat": "v"}
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    for arm, pts in points:
        pts = sorted(pts, key=lambda p: p[1])
        (line,) = ax.plot(
            [p[1] / 1e6 for p in pts], [p[2] for p in pts], "-", lw=0.8, alpha=0.6, label=arm.name
        )
        for mode, size, auc in pts:
            ax.plot(size / 1e6, auc, markers.get(mode, "x"), color=line.get_color(), ms=6)
    for mode, marker in markers.items():
        ax.plot([], [], marker, color="grey", label=mode)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    # plain "0.2" instead of matplotlib's "2 × 10⁻¹" on a log axis
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("TFLite size (MB, log scale)")
    ax.set_ylabel("test AUC")
    ax.set_title("Quantization trade-off: size vs test AUC", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return True


def _example_indices(y: np.ndarray, n: int) -> list[int]:
    """The first test sample of each class, then the next ones, up to ``n`` (deterministic)."""
    labels = y.reshape(len(y), -1)[:, 0]
    picks: list[int] = []
    for cls in np.unique(labels):
        if len(picks) >= n:
            break
        picks.append(int(np.flatnonzero(labels == cls)[0]))
    for i in range(len(labels)):
        if len(picks) >= n:
            break
        if i not in picks:
            picks.append(i)
    return sorted(picks)


def plot_gradcam(
    arms: dict[str, Arm], path: Path, samples: int = 3, data_root: str | None = None
) -> tuple[bool, str]:
    """Grad-CAM overlays of a few test samples for the best model of each family.

    3D volumes show the middle axial slice of the volume and of its 3D heatmap.

    Returns:
        ``(written, note)``; the note says what is shown, or why nothing could be.
    """
    chosen = list(best_per_family(arms.values()).values())
    if not chosen:
        return False, f"{NOT_RUN} (no reference runs)."
    try:
        from core import data, explain
        from core.models import prepare_input
    except ImportError as exc:  # pragma: no cover - TensorFlow missing from the environment
        return False, f"not available: {exc}"
    rows, failures = [], []
    for arm in chosen:
        try:
            size = int(arm.run["config"].get("size", 28))
            x_raw, y = data.load_split(arm.dataset, "test", size, root=data_root)
            idx = _example_indices(y, samples)
            model = registry.load_model(arm.path, allow_outside=True)
            x = prepare_input(arm.model, x_raw[idx])
            heat, cls = explain.grad_cam(model, x, return_classes=True)
            probs = np.asarray(model.predict(x, verbose=0))
            names = info.label_names(arm.dataset)
            panels = []
            for j, i in enumerate(idx):
                img = x_raw[i]
                if img.ndim == 4:  # (D, H, W, 1) volume: middle axial slice
                    mid = img.shape[0] // 2
                    over = explain.overlay_slice(img[..., 0], heat[j], 0, mid, contour_quantile=0.9)
                    where = f", slice {mid}/{img.shape[0]}"
                else:
                    over = explain.overlay(img, heat[j], contour_quantile=0.9)
                    where = ""
                truth = names[int(y[i, 0])]
                pred = names[int(cls[j])]
                panels.append(
                    (
                        over,
                        f"#{i}{where}\ntrue {truth[:12]}, pred {pred[:12]} "
                        f"({probs[j, int(cls[j])]:.2f})",
                    )
                )
            rows.append((arm, panels))
        except Exception as exc:  # one model or dataset missing must not sink the report
            failures.append(f"`{arm.name}`: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
    if not rows:
        return False, "not available: " + "; ".join(failures)
    plt = _pyplot()
    cols = max(len(p) for _, p in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.0 * cols, 2.3 * len(rows)), squeeze=False)
    for r, (arm, panels) in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(panels):
                ax.axis("off")
                continue
            image, title = panels[c]
            ax.imshow(image, interpolation="nearest")
            ax.set_title(title, fontsize=7)
            if c == 0:
                ax.set_ylabel(arm.name, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    note = (
        "Rows: the best model of each family by validation AUC; columns: test samples (the first "
        "of each class). Grad-CAM of the predicted class on the last convolution, white outline "
        "= hottest 10%; 3D volumes show their middle axial slice."
    )
    if failures:
        note += " Not shown: " + "; ".join(failures)
    return True, note


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------
def _display_path(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def build_report(
    root: str | os.PathLike | None = None,
    out: str | os.PathLike = DEFAULT_OUT,
    figures_dir: str | os.PathLike | None = None,
    overlays: bool = True,
    samples: int = 3,
    data_root: str | None = None,
) -> str:
    """Write the results report and its figures; return the Markdown text.

    Args:
        root: The model registry (default: the ``TRAINED_MODELS_DIR`` setting).
        out: Markdown file to write.
        figures_dir: Folder for the PNG figures (default: ``<out's folder>/results``).
        overlays: Generate the Grad-CAM example figure (needs TensorFlow, the models and the
            real test data); without it the section says it was skipped.
        samples: Test samples per model in the Grad-CAM figure.
        data_root: MedMNIST folder for the Grad-CAM examples (default: ``MEDMNIST_ROOT``).
    """
    out = Path(out)
    root_path = Path(root) if root is not None else trained_models_dir()
    fig_dir = Path(figures_dir) if figures_dir is not None else out.parent / "results"
    fig_dir.mkdir(parents=True, exist_ok=True)
    arms, others = collect(root_path)

    def rel(name: str) -> str:
        return os.path.relpath(fig_dir / name, out.parent).replace(os.sep, "/")

    written: dict[str, str | None] = {}
    for key, make in (
        ("curves", plot_training_curves),
        ("roc", plot_roc),
        ("quant", plot_quantization),
    ):
        target = fig_dir / FIGURES[key]
        written[key] = rel(FIGURES[key]) if make(arms, target) else None
        if written[key] is None:
            target.unlink(missing_ok=True)  # never leave a figure the report does not describe
    gradcam_target = fig_dir / FIGURES["gradcam"]
    if overlays:
        ok, overlay_note = plot_gradcam(arms, gradcam_target, samples, data_root)
    else:
        ok, overlay_note = False, "skipped (report generated with --no-overlays)."
    written["gradcam"] = rel(FIGURES["gradcam"]) if ok else None
    if not ok:
        gradcam_target.unlink(missing_ok=True)

    groups = experiments(arms)
    ran = [a for a in arms.values() if a.ran]
    n_seeds = sorted({len(a.seeds) or 1 for a in ran})
    rules = {a.metrics.get("summary", {}).get("reference_rule") for a in ran} - {None}
    rule = " / ".join(sorted(rules)) or "median seed by validation AUC"
    lines = [
        "# Results: reference experiments",
        "",
        "<!-- Generated by `python -m benchmarks.report` from the model registry. Do not edit by "
        "hand: rerun the script (see benchmarks/reproduce.py for the whole pipeline). -->",
        "",
        f"Generated from `{_display_path(root_path)}`: {len(ran)} of {len(arms)} experiment arms "
        f"have promoted reference runs"
        + (f" ({', '.join(map(str, n_seeds))} seeds per arm)" if n_seeds else "")
        + ". Every number below is the **mean ± sample standard deviation over seeds** on the "
        "official **test** split, computed with the official MedMNIST evaluator. Each arm ships "
        f'one model, the **{rule}** ("shipped seed"); model and variant '
        "selection use the **validation** split only, never the test split. Published baselines "
        "are MedMNIST v2 (Sci Data 2023) and MedMNIST+ (VGG16), test AUC / ACC.",
        "",
    ]
    if others:
        lines += [
            f"{len(others)} other run(s) in the registry belong to no experiment and are not "
            "reported here.",
            "",
        ]
    verdicts_3d: list[Verdict] = []
    aug_results: list[tuple[Arm, Arm, dict]] = []
    resnet_results: list[tuple[Arm, Arm, dict]] = []
    vgg_verdict, vgg_best = None, None
    titles = {
        "3D CNN": "1. 3D CNN on AdrenalMNIST3D",
        "augmentation": "2. Custom 2D CNN with vs without augmentation",
        "transfer": "3. VGG16 transfer learning: frozen vs fine-tuned",
        "resnet vs cnn": "4. ResNet from scratch vs custom CNN",
    }
    sections: list[str] = []
    for name, group in groups.items():
        sections += [f"## {titles.get(name, name)}", ""]
        if name == "3D CNN":
            body, verdicts_3d = section_3d(group)
        elif name == "augmentation":
            body, aug_results = section_augmentation(group)
        elif name == "transfer":
            sweep_file = fig_dir / "vgg_sweep.json"
            sweep = json.loads(sweep_file.read_text()) if sweep_file.is_file() else None
            body, vgg_verdict, vgg_best = section_transfer(group, sweep)
        elif name == "resnet vs cnn":
            body, resnet_results = section_resnet(group, arms)
        else:
            body = comparison_table(group, group[0].dataset)
        sections += body

    lines += ["## Headline: ours vs published", ""]
    lines += section_headline(arms)
    targets = [*verdicts_3d, *([vgg_verdict] if vgg_verdict else [])]
    if targets:
        lines += ["Targets (judged on the mean over seeds; details in each section):", ""]
        lines += [f"- {v.what}: **{v.status}**" for v in targets] + [""]
    lines += sections

    lines += ["## Training curves and ROC curves", ""]
    if written["curves"]:
        lines += [
            "Validation AUC per epoch of each shipped seed (only the shipped seed's history is "
            "kept in the registry):",
            "",
            f"![Training curves]({written['curves']})",
            "",
        ]
    else:
        lines += [f"Training curves: {NOT_RUN}.", ""]
    if written["roc"]:
        lines += [
            "One-vs-rest ROC curves of each shipped model on the test split:",
            "",
            f"![ROC curves]({written['roc']})",
            "",
        ]
    else:
        lines += [f"ROC curves: {NOT_RUN}.", ""]

    lines += ["## 5. Quantization", ""]
    lines += section_quantization(arms, written["quant"])
    lines += ["## 6. Grad-CAM alignment", ""]
    lines += section_alignment(arms, written["gradcam"], overlay_note)
    lines += ["## Wall time", ""]
    lines += section_wall_time(arms)
    lines += ["## What worked and what did not", ""]
    lines += commentary(arms, verdicts_3d, aug_results, vgg_verdict, vgg_best, resnet_results)

    text = "\n".join(lines).rstrip() + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description="Generate docs/RESULTS.md and docs/results/*.png from the model registry.",
    )
    parser.add_argument(
        "--registry",
        default=None,
        help="model registry (default: TRAINED_MODELS_DIR or trained_models/)",
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="Markdown file to write")
    parser.add_argument("--figures", default=None, help="PNG folder (default: <out dir>/results)")
    parser.add_argument(
        "--no-overlays",
        action="store_true",
        help="skip the Grad-CAM example figure (needs TF, models and test data)",
    )
    parser.add_argument("--samples", type=int, default=3, help="Grad-CAM examples per model")
    args = parser.parse_args(argv)
    build_report(
        args.registry, args.out, args.figures, overlays=not args.no_overlays, samples=args.samples
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
