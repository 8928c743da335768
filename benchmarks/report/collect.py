"""Registry → experiment arms: what ran, with its seeds, and which arm each family ships.

>>> arms, others = collect("trained_models")      # doctest: +SKIP
>>> best_per_family(arms.values())["vgg16"].name  # doctest: +SKIP
'vgg16_ft2'
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import info, registry
from core.experiments import ARMS
from core.results import Stat, stat

# Fixed section order; an experiment name found in ARMS but not here is appended after them.
EXPERIMENT_ORDER = ("3D CNN", "augmentation", "transfer", "resnet vs cnn")


@dataclass
class Arm:
    """One experiment arm: its definition and, once promoted, its reference run."""

    name: str
    label: str
    experiment: str
    dataset: str
    model: str
    augment: bool
    run: registry.Run | None = None
    seeds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ran(self) -> bool:
        return self.run is not None

    @property
    def path(self) -> Path | None:
        return self.run.path if self.run else None

    @property
    def metrics(self) -> dict[str, Any]:
        return self.run.metrics if self.run else {}

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


def _arm_from_run(run: registry.Run) -> Arm:
    cfg = run.config
    name = cfg.get("arm") or run.name
    spec = ARMS.get(name, {})
    spec_cfg = spec.get("config", {})
    seeds = run.metrics.get("seeds") or []
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
    # registry.runs skips damaged runs and reads a damaged optional file (quantization,
    # explanation results) as None, so one bad file never stops the report
    for run in registry.runs(root):
        if run.config.get("arm") or run.name in ARMS:
            arm = _arm_from_run(run)
            arms[arm.name] = arm
        else:
            others.append(run.name)
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
