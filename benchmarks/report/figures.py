"""The report's PNG figures: training curves, ROC curves, quantization trade-off, Grad-CAM.

Each ``plot_*`` returns False (and writes nothing) when there is nothing to draw. Only
``plot_gradcam`` needs TensorFlow, the models and the test data; it imports them lazily so the
other figures (and the tables) need nothing but the registry's JSON files.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from benchmarks.report.collect import Arm, best_per_family
from benchmarks.report.markdown import NOT_RUN
from benchmarks.report.sections_shipped import quant_results
from core import info, registry

FIGURE_DPI = 100
FIGURES = {
    "curves": "training_curves.png",
    "roc": "roc_curves.png",
    "quant": "quantization.png",
    "gradcam": "gradcam_examples.png",
}


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
            size = int(arm.run.config.get("size", 28))
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
