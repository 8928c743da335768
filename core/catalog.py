"""Which runs are reference runs, which run a page opens on, and what tells cards apart.

The registry holds two kinds of run:

* **reference** runs: the ones ``python -m core.experiments promote`` copies into
  ``trained_models/<arm>`` (their ``config.json`` names the ``arm`` and their ``metrics.json``
  carries the ``summary`` over seeds), and runs a researcher promoted by hand, which hold a
  ``promoted.json`` marker written atomically by :func:`promote`;
* **experimental** runs: everything else, e.g. a 2-epoch job queued on the Retrain page.

Pages open on the *reference* run with the best **validation** AUC (the test split never
chooses anything); experimental runs follow, newest first, and are labelled as such. No
TensorFlow, no Streamlit: the Home page uses this module.

    python -m core.catalog list
    python -m core.catalog promote RUN [--note TEXT]
"""

from __future__ import annotations

import getpass
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core import cli, registry

MARKER_FILE = "promoted.json"
REFERENCE = "reference"
EXPERIMENTAL = "experimental"


def is_reference(run: dict[str, Any]) -> bool:
    """True for a run promoted by ``core.experiments`` or by :func:`promote`.

    Args:
        run: a run dict of ``registry.list_runs`` (``path``, ``config``, ``metrics``).
    """
    cfg = run.get("config") or {}
    metrics = run.get("metrics") or {}
    if cfg.get("arm") and isinstance(metrics.get("summary"), dict):
        return True
    path = run.get("path")
    return bool(path) and (Path(path) / MARKER_FILE).is_file()


def status(run: dict[str, Any]) -> str:
    """``"reference"`` or ``"experimental"``."""
    return REFERENCE if is_reference(run) else EXPERIMENTAL


def val_auc(run: dict[str, Any]) -> float:
    """The run's own validation AUC (the model a page loads), or -inf when it has none."""
    val = (run.get("metrics") or {}).get("val")
    value = val.get("auc") if isinstance(val, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return -math.inf


def order_runs(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs in the order pickers and cards list them; the first one is the default.

    Reference runs come first, grouped by dataset (the dataset with the most reference runs
    first, then by name) and, inside a dataset, by validation AUC, best first. Experimental
    runs follow, newest first: a fresh job never becomes a page's default.
    """
    refs = [r for r in runs if is_reference(r)]
    others = [r for r in runs if not is_reference(r)]
    counts = Counter(_dataset(r) for r in refs)
    refs.sort(key=lambda r: (-counts[_dataset(r)], _dataset(r), -val_auc(r), r.get("name", "")))
    others.sort(key=lambda r: str((r.get("metrics") or {}).get("created") or ""), reverse=True)
    return refs + others


def default_run(
    runs: Sequence[dict[str, Any]], dataset: str | None = None
) -> dict[str, Any] | None:
    """The run a page opens on: the best reference run (by validation AUC) of ``dataset``.

    Falls back to the newest experimental run only when the dataset has no reference run.
    """
    ordered = [r for r in order_runs(runs) if dataset is None or _dataset(r) == dataset]
    return ordered[0] if ordered else None


def ensembles(root: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """The registry's fitted ensembles as ``{"name", "path", "dataset", "metrics", "kind",
    "members"}``.

    Ensemble folders (``core.trust``) hold ``ensemble.json`` and no ``config.json``, so
    ``registry.runs`` skips them; one without ``metrics.json`` (not fitted yet) is left out.
    """
    out = []
    for path in registry.ensemble_dirs(root):
        try:
            spec = registry.read_json(path, registry.ENSEMBLE_FILE) or {}
            metrics = registry.read_json(path, "metrics.json") or {}
        except registry.RunFileError:
            continue
        if isinstance(spec, dict) and metrics and spec.get("dataset"):
            out.append(
                {
                    "name": path.name,
                    "path": str(path),
                    "dataset": spec["dataset"],
                    "metrics": metrics,
                    "kind": "ensemble",
                    "members": [str(m) for m in spec.get("members") or []],
                }
            )
    return out


def member_of(fitted_ensembles: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """Run name -> the fitted ensembles that use it (runs in no ensemble are left out).

    A non-reference run that ships only as an ensemble member (e.g. seed 1 of a reference
    arm) is then labelled as such instead of as an unreviewed experiment.

    Example:
        >>> member_of([{"name": "ens", "members": ["a", "b"]}])
        {'a': ['ens'], 'b': ['ens']}
    """
    out: dict[str, list[str]] = {}
    for ens in fitted_ensembles:
        for member in ens.get("members") or []:
            out.setdefault(member, []).append(ens["name"])
    return out


def best_on_val(
    runs: Sequence[dict[str, Any]], fitted_ensembles: Sequence[dict[str, Any]], dataset: str
) -> dict[str, Any] | None:
    """The reference run or ensemble of ``dataset`` with the best **validation** AUC.

    Returns:
        The run dict (``kind`` "run") or ensemble dict (``kind`` "ensemble"), or None. Ties go
        to the single run (cheaper to run and explainable with Grad-CAM).
    """
    candidates = [{**r, "kind": "run"} for r in runs if is_reference(r) and _dataset(r) == dataset]
    candidates += [e for e in fitted_ensembles if e.get("dataset") == dataset]
    scored = [c for c in candidates if val_auc(c) > -math.inf]
    if not scored:
        return None
    return max(scored, key=lambda c: (val_auc(c), c["kind"] == "run"))


def _dataset(run: dict[str, Any]) -> str:
    return str((run.get("config") or {}).get("dataset", ""))


# --------------------------------------------------------------------------------------------
# Card text: the score over seeds, and what distinguishes a run from its siblings
# --------------------------------------------------------------------------------------------


def seed_summary(metrics: dict[str, Any], metric: str) -> dict[str, Any] | None:
    """Test ``metric`` over the seeds recorded in a run's metrics.

    Returns:
        ``{"mean", "std", "n"}`` (std 0.0 for one seed; the promoted ``summary`` is used when
        it has the figures, else the ``seeds`` list, else the run's own test score), or None
        when the run has no test score at all.
    """
    summary = metrics.get("summary") if isinstance(metrics.get("summary"), dict) else {}
    seeds = [s for s in metrics.get("seeds") or [] if isinstance(s, dict)]
    values = [
        float(s["test"][metric])
        for s in seeds
        if isinstance(s.get("test"), dict) and isinstance(s["test"].get(metric), int | float)
    ]
    mean_key, std_key = f"test_{metric}_mean", f"test_{metric}_std"
    if isinstance(summary.get(mean_key), int | float) and len(values) > 1:
        return {
            "mean": float(summary[mean_key]),
            "std": float(summary.get(std_key) or 0.0),
            "n": len(values),
        }
    if len(values) > 1:
        mean = sum(values) / len(values)
        var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)  # as summarize(): ddof=1
        return {"mean": mean, "std": math.sqrt(var), "n": len(values)}
    test = metrics.get("test") if isinstance(metrics.get("test"), dict) else {}
    value = test.get(metric)
    if isinstance(value, int | float):
        return {"mean": float(value), "std": 0.0, "n": 1}
    return None


# Recipe fields in the order of how much they tell a reader; the second tier is named only when
# no first-tier field tells two runs apart.
_SALIENT = ("learning_rate", "lr_schedule", "weight_ema", "label_smoothing", "class_weights")
_MINOR = ("epochs", "patience", "min_epochs", "batch_size")
_LAST = ("seed",)  # every run differs in seed; named only when nothing else tells them apart
_DEFAULTS = {
    "learning_rate": 1e-3,
    "lr_schedule": "plateau",
    "weight_ema": 0.0,
    "label_smoothing": 0.0,
    "class_weights": False,
}


def _field_text(field: str, value: Any) -> str:
    if field == "weight_ema":
        return f"weight EMA {value:g}" if value else "no weight EMA"
    if field == "label_smoothing":
        return f"label smoothing {value:g}" if value else "no label smoothing"
    if field == "class_weights":
        return "class-weighted loss" if value else "unweighted loss"
    if field == "lr_schedule":
        return f"{value} LR schedule"
    if field == "learning_rate":
        return f"lr {value:g}"
    if field == "epochs":
        return f"at most {value} epochs"
    return f"{field.replace('_', ' ')} {value}"


def input_side(cfg: dict[str, Any]) -> int:
    """The side in pixels the model sees (VGG16 resizes in the graph; others take the data)."""
    size = int(cfg.get("size") or 28)
    if cfg.get("model") == "vgg16":
        return int(cfg.get("input_size") or max(32, size))
    return size


def base_description(cfg: dict[str, Any]) -> str:
    """Family, fine-tuned blocks, augmentation and (when resized) the model's input size."""
    parts = []
    if cfg.get("model") == "vgg16":
        blocks = int(cfg.get("fine_tune_blocks") or 0)
        parts.append(
            "frozen ImageNet features" if blocks == 0 else f"last {blocks} block(s) fine-tuned"
        )
    parts.append("augmented" if cfg.get("augment") else "no augmentation")
    side, size = input_side(cfg), int(cfg.get("size") or 28)
    if side != size:
        parts.append(f"input resized to {side}×{side} px")
    return ", ".join(parts)


def describe_runs(runs: Sequence[dict[str, Any]]) -> dict[str, str]:
    """One description per run name that tells it apart from runs of the same dataset and family.

    Runs whose base description (:func:`base_description`) is the same get the recipe fields
    in which they differ from each other (learning rate, schedule, weight EMA, ...).
    """
    by_base: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for run in runs:
        cfg = run.get("config") or {}
        key = (_dataset(run), str(cfg.get("model")), base_description(cfg))
        by_base.setdefault(key, []).append(run)
    out = {}
    for (_, _, base), group in by_base.items():
        for run in group:
            extra = _differences(run, group) if len(group) > 1 else []
            out[run["name"]] = ", ".join([base, *extra])
    return out


def _differences(run: dict[str, Any], group: list[dict[str, Any]]) -> list[str]:
    def value(r: dict[str, Any], field: str) -> Any:
        cfg = r.get("config") or {}
        return cfg.get(field, _DEFAULTS.get(field))

    for tier in (_SALIENT, _MINOR, _LAST):
        fields = [f for f in tier if len({repr(value(r, f)) for r in group}) > 1]
        if fields:
            return [_field_text(f, value(run, f)) for f in fields]
    return []


# --------------------------------------------------------------------------------------------
# Promotion
# --------------------------------------------------------------------------------------------


def promote(
    name_or_path: str | os.PathLike,
    root: str | os.PathLike | None = None,
    by: str | None = None,
    note: str = "",
) -> Path:
    """Mark a run as a reference run: write ``<run>/promoted.json`` atomically.

    Args:
        name_or_path: a run name or a path inside the registry.
        root: the registry (default ``TRAINED_MODELS_DIR``).
        by: who promoted it (default: the login name).
        note: why, for the record.

    Returns:
        The marker file's path.

    Raises:
        registry.RegistryError: no such run, or a path outside the registry.
        ValueError: the run records no validation AUC, so it could not be ranked.
    """
    path = registry.resolve_run(name_or_path, root)
    metrics = registry.read_json(path, "metrics.json", {})
    if val_auc({"metrics": metrics}) == -math.inf:
        raise ValueError(
            f"{path / 'metrics.json'} has no val.auc, so the run cannot be ranked against the "
            "reference runs.\n  1. Re-evaluate it: `python -m core.evaluate "
            f"{path}`.\n  2. Then promote it again."
        )
    marker = path / MARKER_FILE
    registry.write_json_atomic(
        marker,
        {
            "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "promoted_by": by or _login(),
            "note": note,
            "val_auc": val_auc({"metrics": metrics}),
        },
    )
    return marker


def _login() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no passwd entry in some containers
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.ArgumentParser(prog="python -m core.catalog", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every run with its status, default run first")
    p = sub.add_parser("promote", help="mark a run as a reference run")
    p.add_argument("run", help="run name (or a path inside the registry)")
    p.add_argument("--note", default="", help="why it is promoted")
    p.add_argument("--root", default=None, help="registry (default TRAINED_MODELS_DIR)")
    sub.choices["list"].add_argument("--root", default=None)
    args = parser.parse_args(argv)
    if args.command == "promote":
        marker = promote(args.run, args.root, note=args.note)
        print(f"{marker.parent.name} is now a reference run ({marker})")
        return 0
    for run in order_runs(registry.list_runs(args.root)):
        print(f"{status(run):12} {val_auc(run):.4f}  {_dataset(run):16} {run['name']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
