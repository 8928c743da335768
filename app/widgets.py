"""Shared Streamlit pieces: cached loaders, ``*_ui`` pickers that return plain values, viewers.

Pages stay thin: they call a ``*_ui`` helper for each choice, hand the plain values to one
loader or ``core`` function, and draw the result with a viewer from here. Nothing in this
module imports TensorFlow at import time (the Home page imports it and must stay fast); the
loaders that need a model import ``core.registry``/``core.evaluation`` lazily.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from app import state
from core import config, info
from core.results import (  # noqa: F401 - pages read these through widgets
    GROUP_FIELDS,
    RECIPE_FIELDS,
    acc_standard_error,
    alignment_rows,
    group_label,
    group_runs,
    mean_std_text,
    outcome_table,
    quantized_rows,
    seed_scores,
)

log = logging.getLogger("medmnist_review.app")

# --------------------------------------------------------------------------------------------
# Errors: never a raw traceback in front of a user.
# --------------------------------------------------------------------------------------------


def _as_markdown(message: str) -> str:
    """Keep numbered steps on their own lines (st.error renders Markdown)."""
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    return "  \n".join(lines)


def show_error(exc: BaseException, doing: str) -> None:
    """Show an exception as a message a user can act on; the traceback goes to the server log.

    Args:
        exc: The exception that ended the current step.
        doing: What the page was doing, e.g. "loading the model" (used in the message).
    """
    log.error("error while %s", doing, exc_info=exc)
    from core.uploads import UploadError

    try:
        from core.data import DataError
    except Exception:  # pragma: no cover - core.data missing would already fail elsewhere
        DataError = RuntimeError  # noqa: N806
    if isinstance(exc, UploadError):
        st.error(_as_markdown(str(exc)), icon=":material/image_not_supported:")
    elif isinstance(exc, DataError):
        st.error(_as_markdown(str(exc)), icon=":material/cloud_off:")
    elif isinstance(exc, FileNotFoundError | ValueError | KeyError):
        st.error(_as_markdown(f"Could not finish {doing}: {exc}"), icon=":material/error:")
    else:
        st.error(
            _as_markdown(
                f"Something went wrong while {doing} ({type(exc).__name__}: {exc}).\n"
                "1. Reload the page or pick another model/sample.\n"
                "2. If it keeps happening, the full traceback is in the server log."
            ),
            icon=":material/error:",
        )


class guard:  # noqa: N801 - used like a keyword: `with guard("loading the model"):`
    """Context manager: an exception inside is shown with ``show_error`` and swallowed.

    Streamlit's own control flow (``st.rerun``, ``st.stop``, ``st.switch_page``) raises
    ``BaseException`` subclasses and passes through untouched.
    """

    def __init__(self, doing: str) -> None:
        self.doing = doing
        self.failed = False

    def __enter__(self) -> guard:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        self.failed = True
        show_error(exc, self.doing)
        return True


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


def read_json(path: str | Path) -> Any:
    """A JSON file's content, or None when it is missing or unreadable (logged)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        log.warning("unreadable %s: %s", path, exc)
        return None


# Cache bounds (issue 16: a server up all day must not grow): every cache below has
# max_entries, and the ones holding arrays also a ttl so an idle server drops them. The numbers
# are sized for this app's use (a handful of registries/models, 8-12 concurrent reviewers).
@st.cache_data(ttl=5, max_entries=4, show_spinner=False)  # one registry root in practice
def runs(root: str | None = None) -> list[dict[str, Any]]:
    """Every run in the registry, the default first (cheap: JSON only, no TensorFlow).

    Order (``core.catalog.order_runs``): reference runs by validation AUC, then experimental
    runs newest first, so a fresh job never becomes a page's default. Each run gets its
    ``status`` ("reference"/"experimental"). A short TTL lets a run finished by a background
    job appear without a server restart.
    """
    from core import catalog, registry

    out = []
    for run in registry.list_runs(root):
        run = dict(run)
        run["path"] = str(run["path"])
        run.setdefault("config", {})
        run.setdefault("metrics", {})
        run["status"] = catalog.status(run)
        out.append(run)
    return catalog.order_runs(out)


@st.cache_data(ttl=30, show_spinner=False, max_entries=64)  # small JSON files
def run_file(run_path: str, name: str) -> Any:
    """``history.json``, ``evaluation.json``, ``quantized/results.json`` ... of a run, or None."""
    return read_json(Path(run_path) / name)


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
    from core import catalog

    status = run.get("status") or catalog.status(run)
    mark = "experimental · " if status == catalog.EXPERIMENTAL else ""
    return f"{mark}{run['name']} ({run_dataset(run)}, {run['config'].get('model', '?')}){score}"


def run_picker_ui(
    all_runs: Sequence[dict],
    *,
    key: str,
    label: str = "Model",
    dataset: str | None = None,
    three_d: bool | None = None,
    container: Any = st,
    optional: bool = False,
) -> dict | None:
    """Pick a run; the ``?run=`` query parameter preselects one when it is in the list.

    Args:
        all_runs: Runs from ``runs()``.
        key: Widget key.
        label: Widget label.
        dataset: Only runs trained on this dataset.
        three_d: Only 3D (True) or 2D (False) runs; None for both.
        container: Where to draw (``st`` or ``st.sidebar``).
        optional: Offer "No model" as the last choice (the first run stays the default).

    Returns:
        The chosen run dict, or None when no run matches or "No model" is chosen.
    """
    choices = [
        r
        for r in all_runs
        if (dataset is None or run_dataset(r) == dataset)
        and (three_d is None or _is_3d_safe(run_dataset(r)) == three_d)
    ]
    if not choices:
        return None
    names: list[str | None] = [r["name"] for r in choices]
    if optional:
        names.append(None)
    wanted = st.query_params.get("run")
    if key not in st.session_state and wanted is not None and wanted in names:
        st.session_state[key] = wanted
    # the list depends on the dataset filter: a new filter re-sets the choice (app.state)
    state.follow(key, names, names[0], parent=(dataset, three_d))
    by_name = {r["name"]: r for r in choices}
    name = container.selectbox(
        label,
        names,
        key=key,
        format_func=lambda n: "No model" if n is None else run_label(by_name[n]),
    )
    if name is not None and _is_experimental(by_name[name]):
        container.caption(
            ":orange-badge[experimental] Not promoted by a researcher: compare it with the "
            "reference runs before relying on it."
        )
    return None if name is None else by_name[name]


def _is_experimental(run: dict) -> bool:
    from core import catalog

    return (run.get("status") or catalog.status(run)) == catalog.EXPERIMENTAL


def _is_3d_safe(flag: str) -> bool:
    try:
        return info.is_3d(flag)
    except ValueError:
        return False


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


@st.cache_data(ttl=10, max_entries=1, show_spinner=False)  # no arguments: one entry
def local_status() -> list[dict[str, Any]]:
    from core import data

    return data.local_status()


def present_datasets(three_d: bool | None = None) -> list[tuple[str, int]]:
    """(flag, size) pairs whose files are on disk, optionally only 2D or only 3D."""
    return [
        (row["flag"], int(row["size"]))
        for row in local_status()
        if row["present"] and (three_d is None or bool(row["is_3d"]) == three_d)
    ]


def dataset_picker_ui(
    *, key: str, three_d: bool | None = None, container: Any = st
) -> tuple[str, int] | None:
    """Pick a locally present dataset and size; None (with guidance shown) when there is none."""
    options = present_datasets(three_d)
    if not options:
        kind = {True: "3D ", False: "2D ", None: ""}[three_d]
        container.info(
            f"No {kind}MedMNIST file is on this machine yet.\n\n"
            "1. Open **Home** and use *Download a dataset*, or\n"
            f"2. copy the `.npz` files into `{config.medmnist_root()}` "
            "(or set `MEDMNIST_ROOT` to their folder) and reload.",
            icon=":material/dataset:",
        )
        return None
    flags = sorted({flag for flag, _ in options})
    flag = container.selectbox("Dataset", flags, key=f"{key}_flag", format_func=dataset_title)
    sizes = sorted(size for f, size in options if f == flag)
    # the same size has another label on another dataset ("28³ voxels" vs "28×28 px")
    state.follow(f"{key}_size", sizes, sizes[0], parent=flag)
    size = container.selectbox(
        "Image size", sizes, key=f"{key}_size", format_func=lambda s: size_title(flag, s)
    )
    return flag, int(size)


def dataset_title(flag: str) -> str:
    try:
        return f"{info.python_class(flag)} ({flag})"
    except (ValueError, KeyError):
        return flag


def size_title(flag: str, size: int) -> str:
    return f"{size}³ voxels" if _is_3d_safe(flag) else f"{size}×{size} px"


def split_ui(*, key: str, container: Any = st, default: str = "test") -> str:
    # the default goes through Session State like a link's ?split= does: one way only
    state.follow(key, info.SPLITS, default)
    return container.radio("Split", list(info.SPLITS), key=key, horizontal=True)


# 6 splits: the test splits of the datasets in use; ~7 MB each at 28 px (3D), ~80 MB for 64³
@st.cache_data(max_entries=6, ttl=3600, show_spinner="Loading images…")
def raw_split(flag: str, split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images as stored and int64 labels ``(N, L)``."""
    from core import data

    return data.load_raw_split(flag, split, size)


@st.cache_data(max_entries=6, ttl=3600, show_spinner="Loading images…")  # float32: 4x raw
def model_split(flag: str, split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 channels-last images in [0, 1] and labels, as the models take them."""
    from core import data

    return data.load_split(flag, split, size)


# --------------------------------------------------------------------------------------------
# Models, predictions
# --------------------------------------------------------------------------------------------


# 4 models (~1-60 MB each); no ttl: reloading a VGG16 costs seconds of a user's time
@st.cache_resource(max_entries=4, show_spinner="Loading the model…")
def load_model(run_path: str):
    """The run's Keras model, shared by every session (inference only, so thread-safe)."""
    from core import registry

    return registry.load_model(run_path)


def prepare(run: dict, x: np.ndarray) -> np.ndarray:
    """Convert ``load_split``-style images to what this run's model takes (VGG16: RGB)."""
    from core import models

    return models.prepare_input(run["config"].get("model"), x)


@st.cache_data(max_entries=16, ttl=3600, show_spinner="Predicting…")  # (N, classes) floats
def predictions(run_path: str, split: str) -> np.ndarray:
    """Probabilities of a run's model on a whole split, cached per (run, split)."""
    from core import evaluation

    run = _run_by_path(run_path)
    x, _ = model_split(run_dataset(run), split, run_size(run))
    return evaluation.predict(load_model(run_path), prepare(run, x))


def _run_by_path(run_path: str) -> dict:
    for run in runs():
        if run["path"] == run_path:
            return run
    raise FileNotFoundError(f"no run at {run_path} in the registry {config.trained_models_dir()}")


# --------------------------------------------------------------------------------------------
# Viewers
# --------------------------------------------------------------------------------------------


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float [0, 1] or uint8 image -> uint8, channel axis dropped when single."""
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(arr * 255.0), 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return arr


def upscale(img: np.ndarray, side: int = 168) -> np.ndarray:
    """Nearest-neighbour enlargement so 28 px images show crisp pixels, not browser blur."""
    arr = to_uint8(img)
    factor = max(1, side // max(arr.shape[:2]))
    return np.repeat(np.repeat(arr, factor, axis=0), factor, axis=1)


def thumbnail(image: np.ndarray, mode: str = "mid-slice") -> np.ndarray:
    """A 2D picture of a stored image: itself for 2D, a mid-slice or MIP for a 3D volume."""
    arr = np.asarray(image)
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] not in (1, 3):
        if mode.startswith("max"):
            return arr.max(axis=0)
        return arr[arr.shape[0] // 2]
    return arr


def png_bytes(img: np.ndarray) -> bytes:
    """Encode an image array as PNG (for download buttons)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(to_uint8(img)).save(buf, format="PNG")
    return buf.getvalue()


def probability_chart(probs: np.ndarray, labels: Sequence[str], true_index: Sequence[int]):
    """Plotly bar chart of class probabilities; the true class(es) drawn in a second colour."""
    import plotly.graph_objects as go

    colours = ["#2e7d32" if i in set(true_index) else "#90a4ae" for i in range(len(probs))]
    fig = go.Figure(
        go.Bar(
            x=[float(p) for p in probs],
            y=[f"{i}: {name}" for i, name in enumerate(labels)],
            orientation="h",
            marker_color=colours,
            text=[f"{p:.1%}" for p in probs],
            textposition="auto",
        )
    )
    fig.update_layout(
        height=100 + 28 * len(probs),
        margin=dict(l=10, r=10, t=30, b=45),
        xaxis=dict(range=[0, 1], title="predicted probability", tickformat=".0%"),
        yaxis=dict(autorange="reversed"),
        title=dict(text="Model probabilities (green = true label)", font=dict(size=14)),
    )
    return fig


def metric_vs_published(flag: str, test: dict) -> None:
    """Test AUC/ACC as st.metric with the delta to the best published MedMNIST figure."""
    best = info.best_published(flag)
    cols = st.columns(2)
    for col, metric in zip(cols, ("auc", "acc"), strict=True):
        value = test.get(metric)
        if not isinstance(value, int | float):
            col.metric(f"Test {metric.upper()}", "–")
            continue
        if best:
            ref, method = best[metric]
            col.metric(
                f"Test {metric.upper()}",
                f"{value:.3f}",
                delta=f"{value - ref:+.3f} vs {ref:.3f}",
                help=f"Best published: {ref:.3f} ({method}), MedMNIST v2 / MedMNIST+.",
            )
        else:
            col.metric(
                f"Test {metric.upper()}",
                f"{value:.3f}",
                help="MedMNIST publishes no benchmark for this dataset in our table.",
            )


class Timer:
    """Server-side time of a block, shown as a caption (for the performance budget)."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.ms = (time.perf_counter() - self.start) * 1000.0


def seed_from_query(mapping: dict[str, tuple[str, type]]) -> None:
    """Preselect widgets from query parameters (links from other pages), once per session.

    Args:
        mapping: widget key -> (query parameter name, type to cast the value to).
    """
    for key, (param, cast) in mapping.items():
        value = st.query_params.get(param)
        if value is None or key in st.session_state:
            continue
        try:
            st.session_state[key] = cast(value)
        except (TypeError, ValueError):
            log.info("ignoring query parameter %s=%r", param, value)


# --------------------------------------------------------------------------------------------
# Explanations (core.explain does the maths; these only cache and pick)
# --------------------------------------------------------------------------------------------

CAM_METHODS = {"Grad-CAM": "gradcam", "Grad-CAM++": "gradcam++"}
COLORMAPS = ("jet", "turbo", "inferno", "magma", "viridis", "hot")


# 64 maps ≈ 8 reviewers x 4 samples x 2 methods; ≤ 88 kB each at 28³ (1 MB at 64³)
@st.cache_data(max_entries=64, ttl=3600, show_spinner=False)
def heatmap(run_path: str, x: np.ndarray, method: str, class_index: int | None) -> np.ndarray:
    """Grad-CAM map of one model input ``x`` (no batch axis), spatial shape of ``x``."""
    from core import explain

    model = load_model(run_path)
    return explain.grad_cam(model, x[None], class_index=class_index, method=method)[0]


@st.cache_data(max_entries=64, ttl=3600, show_spinner=False)  # a few floats each
def probabilities(run_path: str, x: np.ndarray) -> np.ndarray:
    """Class probabilities of one model input ``x`` (no batch axis)."""
    from core import evaluation

    return evaluation.predict(load_model(run_path), x[None])[0]


def class_picker_ui(
    labels: Sequence[str], probs: np.ndarray, *, key: str, context: Any, container: Any = st
) -> int:
    """Target class for the heatmap; the predicted (most probable) class of each new input.

    Args:
        labels: Class names of the run's dataset.
        probs: The run's probabilities for this input.
        key: Widget key.
        context: What ``probs`` belong to, e.g. ``(run path, split, index)``: a new context
            starts again at its predicted class, so a class picked for one sample or model
            never carries over to the next.
        container: Where to draw.
    """
    options = list(range(len(probs)))
    names = list(labels) if len(labels) == len(probs) else [str(i) for i in options]
    predicted = int(np.argmax(probs))
    state.follow(key, options, predicted, parent=context, keep_valid=False)
    return int(
        container.selectbox(
            "Target class",
            options,
            key=key,
            format_func=lambda i: (
                f"{i}: {names[i]} ({probs[i]:.0%})" + (" · predicted" if i == predicted else "")
            ),
            help="The class whose evidence the heatmap shows. Default: the predicted class.",
        )
    )


def slice_picture(
    volume: np.ndarray,
    cam: np.ndarray | None,
    axis: int,
    index: int,
    alpha: float,
    cmap: str,
    side: int = 224,
) -> np.ndarray:
    """One slice of a volume (with its Grad-CAM overlaid when given), enlarged for display."""
    if cam is None:
        # plain indexing: keeps the page free of TensorFlow (core.explain) until a model is used
        return upscale(np.take(volume, index, axis=axis), side)
    from core import explain

    return upscale(explain.overlay_slice(volume, cam, axis, index, alpha=alpha, cmap=cmap), side)


def scene_html(volume: np.ndarray, cam: np.ndarray | None, _opts: Any, opts_key: str = "") -> Path:
    """The PyVista scene's HTML *file* (for ``st.iframe``), built by the child renderer once.

    Not ``st.cache_data``: scenes are cached as files (``app.volume.scene_file``), because an
    HTML string handed to ``st.iframe`` stays pinned in urllib's URL cache (~3.7 MB a scene).
    """
    from app import volume as v3d

    cached = v3d.cached_scene_file(volume, cam, _opts)
    if cached is not None:
        return cached
    with st.spinner("Building the 3D scene…"):
        return v3d.scene_file(volume, cam, _opts)


def _display_base(image: np.ndarray, max_side: int = 512) -> np.ndarray:
    """An image for display: channel axis dropped when single, large uploads shrunk."""
    arr = to_uint8(image)
    if max(arr.shape[:2]) > max_side:
        from PIL import Image

        pil = Image.fromarray(arr)
        pil.thumbnail((max_side, max_side))
        arr = np.asarray(pil)
    return arr


def cam_pictures(
    display: np.ndarray,
    cam: np.ndarray,
    alpha: float,
    cmap: str,
    slice_index: int | None = None,
    side: int = 280,
) -> dict[str, np.ndarray]:
    """Original, coloured heatmap and overlay, ready for ``st.image``.

    Args:
        display: The original image ``(H, W[, C])`` or, for 3D, the volume ``(D, H, W[, 1])``.
        cam: Heatmap with the model input's spatial shape, in [0, 1].
        alpha: Heatmap opacity of the overlay.
        cmap: Matplotlib colormap name.
        slice_index: Axial slice to show for 3D inputs.
        side: Display size of small images (nearest-neighbour enlargement).
    """
    from core import explain

    if slice_index is not None:
        display = explain.take_slice(np.asarray(display), 0, slice_index)
        cam = explain.take_slice(cam, 0, slice_index)
    base = _display_base(display)
    overlay = explain.overlay(base, cam, alpha=alpha, cmap=cmap)
    return {
        "original": upscale(base, side),
        "heatmap": upscale(explain.colorize(cam, cmap), side),
        "overlay": upscale(overlay, side),
        "overlay_full": upscale(overlay, side),
    }


def alignment(x: np.ndarray, cams: dict[str, np.ndarray], flag: str) -> dict | None:
    """Energy of each heatmap inside the anatomy mask, and the mask's area; None if undefined."""
    from core import explain

    if flag not in explain.MASK_FLAGS:
        return None
    mask = explain.anatomy_mask(x, flag)
    return {
        "scores": {m: explain.energy_in_mask(cam, mask) for m, cam in cams.items()},
        "area": float(np.mean(mask)),
    }


@st.cache_resource(max_entries=8, show_spinner="Loading the TFLite model…")  # ≤ 8 variants
def tflite_model(path: str):
    """A shared, thread-safe TFLite interpreter for a ``quantized/<mode>.tflite`` file."""
    from core.tflite_runner import TFLiteModel

    return TFLiteModel(path)


@st.cache_data(max_entries=32, ttl=3600, show_spinner="Computing occlusion maps…")  # 2 maps
def occlusion_pair(run_path: str, mode: str, x: np.ndarray, target: int) -> dict[str, Any]:
    """Occlusion maps of the float model and one quantized variant, and their correlation."""
    from core import explain

    model = load_model(run_path)
    tfl = tflite_model(str(Path(run_path) / "quantized" / f"{mode}.tflite"))
    patch = max(2, x.shape[0] // 7)
    float_map = explain.occlusion_map(
        explain.keras_predict_fn(model), x, class_index=target, patch=patch
    )
    quant_map = explain.occlusion_map(tfl.predict, x, class_index=target, patch=patch)
    return {
        "float": float_map,
        "quantized": quant_map,
        "correlation": explain.occlusion_agreement(float_map, quant_map),
    }


def occlusion_pictures(
    display: np.ndarray, maps: dict[str, Any], cmap: str, slice_index: int | None = None
) -> dict[str, np.ndarray]:
    """Overlays of the float and quantized occlusion maps on a common colour scale."""
    scale = max(float(np.max(maps["float"])), float(np.max(maps["quantized"])), 1e-9)
    out = {}
    for name in ("float", "quantized"):
        heat = np.clip(maps[name], 0.0, None) / scale  # evidence for the class only
        out[name] = cam_pictures(display, heat, 0.5, cmap, slice_index)["overlay"]
    return out


# --------------------------------------------------------------------------------------------
# Experiments: runs grouped by configuration, mean ± std over seeds
# --------------------------------------------------------------------------------------------


def comparison_chart(groups: Sequence[dict], dataset: str, metric: str, title: str):
    """Horizontal bars of our groups (mean ± std over seeds) beside the published figures.

    Horizontal, so a long configuration label stays on one readable line.
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_bar(
        name="ours (mean ± std over seeds)",
        orientation="h",
        y=[f"{g['label']} (n={g['n']})" for g in groups],
        x=[g[f"{metric}_mean"] for g in groups],
        # thin and grey, so the value printed past the bar's end stays readable
        error_x=dict(
            type="data",
            array=[g[f"{metric}_std"] for g in groups],
            visible=True,
            color="rgba(0, 0, 0, 0.35)",
            thickness=1,
        ),
        marker_color="#1565c0",
        text=[f"{g[f'{metric}_mean']:.3f}" for g in groups],
        textposition="outside",
    )
    published = info.PUBLISHED.get(dataset, [])
    if published:
        fig.add_bar(
            name="published (MedMNIST v2 / MedMNIST+)",
            orientation="h",
            y=[p["method"] for p in published],
            x=[p[metric] for p in published],
            marker_color="#b0bec5",
            text=[f"{p[metric]:.3f}" for p in published],
            textposition="outside",
        )
    values = [g[f"{metric}_mean"] + g[f"{metric}_std"] for g in groups] + [
        p[metric] for p in published
    ]
    low = min(
        [g[f"{metric}_mean"] - g[f"{metric}_std"] for g in groups] + [p[metric] for p in published]
    )
    fig.update_layout(
        title=title,
        xaxis=dict(
            title=f"test {metric.upper()}",
            range=[max(0.0, low - 0.1), min(1.0, max(values) + 0.08)],
        ),
        yaxis=dict(autorange="reversed"),  # first configuration on top, as in the table
        height=max(320, 60 + 34 * (len(groups) + len(published))),
        margin=dict(l=10, r=10, t=50, b=10),
        legend=dict(orientation="h", y=-0.12),
        barmode="group",
    )
    return fig


def quantized_results(run: dict) -> list[dict[str, Any]]:
    """Rows of ``<run>/quantized/results.json`` for display (``core.results.quantized_rows``)."""
    data = run.get("quantized")
    if data is None:
        data = run_file(run["path"], "quantized/results.json")
    return quantized_rows(data)
