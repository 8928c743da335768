"""What a run or a dataset is called on screen: its dataset, size, variant, picker label.

Plain functions of the registry's run dicts and ``core.info`` (no Streamlit, no caching), shared
by the pickers (``app.widgets``), the loaders (``app.cache``) and the pages' captions.
"""

from __future__ import annotations

from core import catalog, info


def run_dataset(run: dict) -> str:
    return str(run["config"].get("dataset", ""))


def run_size(run: dict) -> int:
    return int(run["config"].get("size", 28))


def run_variant(run: dict) -> str:
    """Short description of what distinguishes a run inside its family."""
    cfg = run["config"]
    parts = []
    if cfg.get("model") == "vgg16":
        blocks = int(cfg.get("fine_tune_blocks") or 0)
        parts.append("frozen" if blocks == 0 else f"fine-tuned last {blocks} block(s)")
    parts.append("augmented" if cfg.get("augment") else "no augmentation")
    if run_size(run) != 28:
        parts.append(f"{run_size(run)} px")
    return ", ".join(parts)


def run_label(run: dict) -> str:
    """One-line description of a run for pickers."""
    test = (run["metrics"].get("test") or {}) if run.get("metrics") else {}
    auc = test.get("auc")
    score = f" · test AUC {auc:.3f}" if isinstance(auc, int | float) else ""
    # a run a researcher has not promoted must never pass for a reference model; the mark
    # leads, because a narrow sidebar picker cuts the end of the label off
    status = run.get("status") or catalog.status(run)
    mark = "experimental · " if status == catalog.EXPERIMENTAL else ""
    return f"{mark}{run['name']} ({run_dataset(run)}, {run['config'].get('model', '?')}){score}"


def dataset_title(flag: str) -> str:
    try:
        return f"{info.python_class(flag)} ({flag})"
    except (ValueError, KeyError):
        return flag


def size_title(flag: str, size: int) -> str:
    return f"{size}³ voxels" if is_3d_safe(flag) else f"{size}×{size} px"


def is_3d_safe(flag: str) -> bool:
    try:
        return info.is_3d(flag)
    except ValueError:
        return False
