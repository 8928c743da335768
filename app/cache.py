"""Cached loaders: every ``st.cache_data``/``st.cache_resource`` wrapper around a ``core`` call.

Runs and their JSON files, the local dataset list, image splits, models, predictions, Grad-CAM
and occlusion maps, TFLite interpreters, 3D scene files and the training worker's start. Each
cache keeps the bound and reason it was given (issue 16). Nothing here imports TensorFlow at
import time (the Home page imports this module and must stay fast): loaders that need a model
import ``core.registry``/``core.evaluation``/``core.explain`` inside the function.
"""

from __future__ import annotations

import gc
import importlib
import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from app.describe import run_dataset, run_size
from core import config
from core.results import quantized_rows

log = logging.getLogger("medmnist_review.app")


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


@st.cache_data(ttl=5, max_entries=16, show_spinner=False)  # JSON only, like runs()
def best_on_val(flag: str) -> dict[str, Any] | None:
    """The reference run or fitted ensemble of ``flag`` with the best validation AUC
    (``core.catalog.best_on_val``): what Home recommends and prediction panels default to."""
    from core import catalog

    return catalog.best_on_val(runs(), catalog.ensembles(), flag)


@st.cache_data(ttl=5, max_entries=1, show_spinner=False)  # JSON only, like runs()
def ensemble_membership() -> dict[str, list[str]]:
    """Run name -> fitted ensembles that use it (``core.catalog.member_of``)."""
    from core import catalog

    return catalog.member_of(catalog.ensembles())


@st.cache_data(ttl=30, show_spinner=False, max_entries=64)  # small JSON files
def run_file(run_path: str, name: str) -> Any:
    """``history.json``, ``evaluation.json``, ``quantized/results.json`` ... of a run, or None."""
    return read_json(Path(run_path) / name)


def quantized_results(run: dict) -> list[dict[str, Any]]:
    """Rows of ``<run>/quantized/results.json`` for display (``core.results.quantized_rows``)."""
    data = run.get("quantized")
    if data is None:
        data = run_file(run["path"], "quantized/results.json")
    return quantized_rows(data)


@st.cache_data(ttl=10, max_entries=1, show_spinner=False)  # no arguments: one entry
def local_status() -> list[dict[str, Any]]:
    from core import data

    return data.local_status()


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


_freeze_lock = threading.Lock()
_frozen = False

# Libraries the pages import lazily (inside functions), imported by ``freeze_libraries`` so
# their modules, classes and functions are frozen too. Left to the first page that needs them
# they were imported after the freeze: ~90,000 objects (scipy, sklearn, matplotlib, plotly,
# joblib, pyparsing, PIL's plugins) that every post-run GC walked again, ~0.05 CPU-s per run
# and most of an opacity move (issue 16). ``tests/test_app_memory.py`` checks the list still
# covers the Grad-CAM and 3D pages.
LAZY_LIBRARIES = (
    "PIL.Image",
    "PIL.ImageDraw",
    "PIL.ImageFont",
    "PIL.PngImagePlugin",
    "PIL.JpegImagePlugin",
    "matplotlib",
    "matplotlib.colors",
    "plotly.graph_objects",
    "plotly.io",
    "plotly.tools",
    "plotly.offline",
    "scipy.ndimage",
    "scipy.optimize",
    "scipy.sparse.linalg",
    "scipy.special",
    "scipy.stats",
    "sklearn.metrics",
    "core.trust.calibration",  # sklearn.calibration, scipy.optimize at import
    "core.trust.ood",  # sklearn.covariance
    "streamlit_image_coordinates",  # the 3D viewer's clickable slices
)


def freeze_libraries() -> None:
    """Take what is alive once TensorFlow and Keras are imported out of the cyclic GC; once.

    Streamlit runs ``gc.collect(2)`` after every script run (``runner.postScriptGC``), a
    fragment's too. With TensorFlow imported that walks ~385,000 objects, ~0.2 CPU-s: most of
    a Grad-CAM rerun's server CPU (issue 16; 0.004 s once frozen). They are modules, classes
    and functions that live as long as the server, so ``gc.freeze`` moves them to the
    permanent generation right after the imports and before any model is loaded: models,
    traced functions, arrays and sessions' objects made later stay collectable (an evicted
    model is still freed). What is alive at that moment and later dies in a reference cycle
    is never freed: a one-off, bounded amount.
    """
    global _frozen
    with _freeze_lock:
        if _frozen:
            return
        from core import evaluation, explain  # noqa: F401 - imported to be frozen
        from core.models import io  # noqa: F401

        for name in LAZY_LIBRARIES:
            importlib.import_module(name)
        _warm_figures()
        gc.collect()
        gc.freeze()
        _frozen = True
        log.info("froze %d objects out of the cyclic GC", gc.get_freeze_count())


def _warm_figures() -> None:
    """Build and serialise one bar chart: Plotly imports a module per trace and layout type on
    first use, and ``st.plotly_chart`` more to serialise it (the sample browser's and the
    Experiments page's bars)."""
    import plotly.graph_objects as go
    import plotly.io

    plotly.io.to_json(go.Figure(go.Bar(x=[0.4, 0.6], y=["a", "b"], orientation="h")))


# 4 models (~1-60 MB each); no ttl: reloading a VGG16 costs seconds of a user's time
@st.cache_resource(max_entries=4, show_spinner="Loading the model…")
def load_model(run_path: str):
    """The run's Keras model, shared by every session (inference only, so thread-safe)."""
    from core import registry

    freeze_libraries()
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


# 64 maps ≈ 8 reviewers x 4 samples x 2 methods; ≤ 88 kB each at 28³ (1 MB at 64³)
@st.cache_data(max_entries=64, ttl=3600, show_spinner=False)
def heatmap(
    run_path: str,
    x: np.ndarray,
    method: str,
    class_index: int | None,
    layer: str | tuple[str, ...] | None = None,
) -> np.ndarray:
    """Explanation map (``core.explain.attribution``) of one model input ``x`` (no batch axis),
    spatial shape of ``x``; ``layer`` ``None`` = the method's automatic layer."""
    from core import explain

    model = load_model(run_path)
    return explain.attribution(model, x[None], method, class_index, layer)[0]


@st.cache_data(max_entries=64, ttl=3600, show_spinner=False)  # a few floats each
def probabilities(run_path: str, x: np.ndarray) -> np.ndarray:
    """Class probabilities of one model input ``x`` (no batch axis)."""
    from core import evaluation

    return evaluation.predict(load_model(run_path), x[None])[0]


# 4 predictors (a model, or an ensemble's members, plus their trust values); no ttl as above
@st.cache_resource(max_entries=4, show_spinner="Loading the model and its trust values…")
def predictor(run_path: str):
    """``core.registry.load_predictor`` of a run or ensemble folder, shared by every session."""
    from core import registry

    freeze_libraries()
    return registry.load_predictor(run_path)


@st.cache_data(max_entries=64, ttl=3600, show_spinner=False)  # a few floats each
def assessment(run_path: str, x: np.ndarray) -> dict[str, Any]:
    """Calibrated probabilities, uncertainty band, OOD and refer verdicts of one input ``x``
    (no batch axis): ``app.trust_assess.assess_one``."""
    from app import trust_assess

    return trust_assess.assess_one(predictor(run_path), x)


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


@st.cache_resource(max_entries=1, show_spinner=False)  # no arguments: one entry per server
def start_worker() -> str:
    """Start the local training worker once per server process (not per session)."""
    from core import jobs

    result = jobs.ensure_worker()
    return str(result) if result is not None else "started"


# 64 SVG charts of ~3 kB: the samples reviewers opened last, on any page with the trust panel
@st.cache_resource(max_entries=64, show_spinner=False)
def probability_chart(
    probs: tuple[float, ...],
    labels: tuple[str, ...],
    true_index: tuple[int, ...],
    band: tuple[tuple[float, ...], tuple[float, ...]] | None,
    title: str,
    calibrated: bool = True,
) -> str:
    """``app.trust_figures.calibrated_probability_chart`` (an SVG string), built once per
    distinct input: the same sample is drawn again by every reviewer and every rerun."""
    from app import trust_figures

    return trust_figures.calibrated_probability_chart(
        np.asarray(probs),
        list(labels),
        true_index,
        band=None if band is None else (np.asarray(band[0]), np.asarray(band[1])),
        title=title,
        calibrated=calibrated,
    )


def png(image: np.ndarray) -> bytes:
    """``image`` encoded as PNG, cached by the SHA-1 of its bytes, shape and dtype.

    A Grad-CAM rerun after an opacity move shows the same original and heatmap again, and the
    download button holds the overlay just drawn: each is encoded once. Keyed by an explicit
    digest because ``st.cache_data`` hashes only a sample of a large array's elements.
    """
    import hashlib

    arr = np.ascontiguousarray(image)
    digest = hashlib.sha1(arr.tobytes(), usedforsecurity=False).hexdigest()
    return _png(f"{digest}:{arr.shape}:{arr.dtype}", arr)


# 48 ≈ 8 reviewers x 2 methods x 3 pictures; ≤ 100 kB each (280 px RGB, mostly less)
@st.cache_data(max_entries=48, ttl=3600, show_spinner=False)
def _png(key: str, _image: np.ndarray) -> bytes:
    from app import figures

    return figures.png_bytes(_image)
