"""Shared Streamlit pieces: ``*_ui`` pickers that return plain values, guards, error display.

Pages stay thin: they call a ``*_ui`` helper for each choice, hand the plain values to a cached
loader (``app.cache``) or a ``core`` function, and draw the result built by ``app.figures``.
Nothing in this module imports TensorFlow (the Home page imports it and must stay fast).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import streamlit as st

from app import cache, state
from app.describe import dataset_title, is_3d_safe, run_dataset, run_label, size_title
from core import config, info

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


def worker_status_ui() -> None:
    """Start the training worker once per server; a sidebar warning when it does not start."""
    try:
        cache.start_worker()
    except Exception as exc:  # noqa: BLE001 - Home must render whatever the worker does
        log.error("training worker did not start", exc_info=exc)
        st.sidebar.warning(
            "The background training worker did not start, so queued retraining jobs wait.\n\n"
            f"Reason: {exc}\n\n"
            "1. Check the server log.\n2. Restart the app; viewing pages is unaffected.",
            icon=":material/engineering:",
        )


# --------------------------------------------------------------------------------------------
# Pickers
# --------------------------------------------------------------------------------------------


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
        and (three_d is None or is_3d_safe(run_dataset(r)) == three_d)
    ]
    if not choices:
        return None
    names: list[str | None] = [r["name"] for r in choices]
    if optional:
        names.append(None)
    wanted = st.query_params.get("run")
    if key not in st.session_state and wanted is not None:
        if wanted in names:
            st.session_state[key] = wanted
        else:  # a link to an ensemble or an unknown run: say so instead of switching silently
            container.info(_link_not_here(wanted, names))
    # the list depends on the dataset filter: a new filter re-sets the choice (app.state)
    state.follow(key, names, names[0], parent=(dataset, three_d))
    by_name = {r["name"]: r for r in choices}
    name = container.selectbox(
        label,
        names,
        key=key,
        format_func=lambda n: "No model" if n is None else run_label(by_name[n]),
    )
    member_of = cache.ensemble_membership().get(name) if name is not None else None
    if name is not None and _is_experimental(by_name[name]) and member_of:
        container.caption(
            f":blue-badge[ensemble member] Used inside {', '.join(member_of)}; on its own it "
            "is not a reference model."
        )
    elif name is not None and _is_experimental(by_name[name]):
        container.caption(
            ":orange-badge[experimental] Not promoted by a researcher: compare it with the "
            "reference runs before relying on it."
        )
    return None if name is None else by_name[name]


def _link_not_here(wanted: str, names: Sequence[str | None]) -> str:
    """Why a ``?run=`` link's model is not the one shown, and what to do."""
    members: dict[str, list[str]] = {}
    for member, ensembles in cache.ensemble_membership().items():
        for ensemble in ensembles:
            members.setdefault(ensemble, []).append(member)
    shown = names[0] or "no model"
    if wanted in members:
        here = [m for m in members[wanted] if m in names]
        text = (
            f"**{wanted}** is an ensemble (the average of {', '.join(members[wanted])}). This "
            f"page looks at one model at a time, so it opened **{shown}**."
        )
        if here:
            text += f" To see a member, pick {' or '.join(here)} under the model choice."
        return text
    return (
        f"The link asked for the model **{wanted}**, which is not among the models this page "
        f"can show (another dataset, or not in the registry), so it opened **{shown}**."
        "\n\n1. Check the link.\n2. Pick a model under the model choice."
    )


def _is_experimental(run: dict) -> bool:
    from core import catalog

    return (run.get("status") or catalog.status(run)) == catalog.EXPERIMENTAL


def present_datasets(three_d: bool | None = None) -> list[tuple[str, int]]:
    """(flag, size) pairs whose files are on disk, optionally only 2D or only 3D."""
    return [
        (row["flag"], int(row["size"]))
        for row in cache.local_status()
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


def split_ui(*, key: str, container: Any = st, default: str = "test") -> str:
    # the default goes through Session State like a link's ?split= does: one way only
    state.follow(key, info.SPLITS, default)
    return container.radio("Split", list(info.SPLITS), key=key, horizontal=True)


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


COLORMAPS = ("jet", "turbo", "inferno", "magma", "viridis", "hot")

# --------------------------------------------------------------------------------------------
# Scores and timing
# --------------------------------------------------------------------------------------------


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
