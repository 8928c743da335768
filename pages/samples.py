"""Sample browser: filter a split, page through a montage, inspect one sample's prediction."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import cache, describe, figures, state, trust_ui
from app import widgets as w
from core import info
from core.results import outcome_table

PAGE_SIZE = 24
COLUMNS = 8
# Every montage thumbnail is drawn at this width in CSS pixels: left to itself st.image sizes an
# image to its caption, so "#5 · hyperplasia" drew the same 64 px volume wider than "#4 · normal".
THUMB_PX = 112

st.title("Sample browser")

# a link sets these once, through Session State (the widgets below carry no defaults)
w.seed_from_query(
    {
        "samples_dataset_flag": ("dataset", str),
        "samples_dataset_size": ("size", int),
        "samples_split": ("split", str),
        "samples_selected": ("index", int),
    }
)
side = st.sidebar
picked = w.dataset_picker_ui(key="samples_dataset", container=side)
if picked is None:
    st.stop()
flag, size = picked
split = w.split_ui(key="samples_split", container=side)
labels = info.label_names(flag)
task = info.task(flag)
multilabel = info.is_multilabel(flag)

with w.guard("loading the images") as g:
    images, y = cache.raw_split(flag, split, size)
if g.failed:
    st.stop()

st.caption(
    f"{describe.dataset_title(flag)} · {split} split · {len(images)} samples · {task} · "
    f"{info.modality_note(flag)}"
)

# class k of one dataset is another finding on the next: a new dataset starts at "all"
state.follow("samples_label", ["all", *range(len(labels))], "all", parent=flag, keep_valid=False)
label_choice = side.selectbox(
    "Label" if not multilabel else "Has finding",
    ["all", *range(len(labels))],
    key="samples_label",
    format_func=lambda v: "All labels" if v == "all" else f"{v}: {labels[v]}",
)
if info.is_3d(flag):
    thumb_mode = side.radio(
        "3D thumbnail",
        ["mid-slice", "max-intensity projection"],
        key="samples_thumb",
        help="Mid-slice shows the central axial slice; the projection shows the brightest "
        "voxel along each ray through the volume.",
    )
else:
    thumb_mode = "mid-slice"

# Model predictions are optional: the browser works without any trained model.
run = w.run_picker_ui(
    cache.runs(),
    key="samples_run",
    optional=True,
    label="Model (optional)",
    dataset=flag,
    container=side,
)
if run is not None and describe.run_size(run) != size:
    side.caption(
        f"This model was trained at size {describe.run_size(run)}; pick that size to use it."
    )
    run = None
outcome = None
if run is not None:
    with w.guard("predicting with the model"):
        probs = cache.predictions(run["path"], split)
        outcome = outcome_table(y, probs, task)

mask = np.ones(len(images), dtype=bool)
if label_choice != "all":
    mask &= (y[:, label_choice] == 1) if multilabel else (y[:, 0] == label_choice)

order_choices = ["index"]
if outcome is not None:
    verdict = side.radio(
        "Prediction", ["all", "correct", "incorrect"], key="samples_verdict", horizontal=True
    )
    if verdict != "all":
        mask &= outcome["correct"] == (verdict == "correct")
    order_choices += ["hardest first", "most confident first"]
else:
    side.caption("Pick a model to filter by correct/incorrect and sort by confidence.")
order = side.selectbox(
    "Sort",
    order_choices,
    key="samples_sort",
    help="Hardest first: lowest probability given to the true label.",
)

indices = np.flatnonzero(mask)
if outcome is not None and order == "hardest first":
    indices = indices[np.argsort(outcome["p_true"][indices], kind="stable")]
elif outcome is not None and order == "most confident first":
    indices = indices[np.argsort(-outcome["confidence"][indices], kind="stable")]

if len(indices) == 0:
    st.info("No sample matches these filters. Widen the label or prediction filter.")
    st.stop()

n_pages = max(1, int(np.ceil(len(indices) / PAGE_SIZE)))
st.markdown(f"**{len(indices)} matching samples** · {n_pages} page(s)")
page = st.pagination(n_pages, key="samples_page", max_visible_pages=9)
page_indices = indices[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]


def _thumb(i: int) -> np.ndarray:
    """Thumbnail enlarged by a whole factor to at least THUMB_PX (the browser only shrinks it)."""
    arr = figures.thumbnail(images[i], thumb_mode)
    side = max(arr.shape[:2])
    return figures.upscale(arr, -(-THUMB_PX // side) * side)


def _caption(i: int) -> str:
    if multilabel:
        truth = ", ".join(labels[k] for k in np.flatnonzero(y[i])) or "no finding"
        text = f"#{i} · {truth}"
    else:
        text = f"#{i} · {labels[int(y[i, 0])]}"
    if outcome is not None:
        text += " ✓" if outcome["correct"][i] else " ✗"
    return text


for slot, i in enumerate(page_indices):
    if slot % COLUMNS == 0:  # one row of columns per montage row: a two-line caption
        cols = st.columns(COLUMNS)  # then pushes down only its own row, not one column
    with cols[slot % COLUMNS]:
        st.image(
            _thumb(int(i)),
            caption=_caption(int(i)),
            width=THUMB_PX,
            output_format="PNG",
        )

st.divider()
st.subheader("Inspect one sample")
# the captions (labels, ✓/✗) belong to dataset, split and model: re-set when they change
state.follow(
    "samples_selected",
    [int(i) for i in indices],
    int(indices[0]),
    parent=(flag, size, split, run["name"] if run else None),
)
current = st.selectbox(
    "Sample",
    [int(i) for i in indices],
    key="samples_selected",
    format_func=lambda i: _caption(i),
    help="All matching samples, in the sort order above.",
)
left, right = st.columns([1, 2])
with left:
    st.image(
        figures.upscale(figures.thumbnail(images[current], thumb_mode), 280),
        caption=_caption(current),
        output_format="PNG",
    )
    if info.is_3d(flag):
        st.page_link(
            "../pages/volume.py",
            label="Open in the 3D viewer",
            icon=":material/view_in_ar:",
            query_params={
                "dataset": flag,
                "size": size,
                "split": split,
                "index": current,
                **({"run": run["name"]} if run is not None else {}),
            },
        )
with right:
    true_idx = list(np.flatnonzero(y[current])) if multilabel else [int(y[current, 0])]
    st.markdown("**True label:** " + (", ".join(labels[k] for k in true_idx) or "no finding"))
    if outcome is None:
        st.info("Pick a model in the sidebar to see its predicted probabilities.")
    else:
        checked = trust_ui.checked_prediction_ui(
            trust_ui.prediction_source_ui(run, cache.best_on_val(flag), key="samples_ensemble"),
            cache.model_split(flag, split, size)[0][current],
            labels,
            flag,
            key="samples",
            true_index=true_idx,
        )
        if checked is None:  # multi-label: raw probabilities, no trust checks
            st.plotly_chart(
                figures.probability_chart(probs[current], labels, true_idx),
                key="samples_probs",
                width="stretch",
            )
        verdict_text = "correct" if outcome["correct"][current] else "incorrect"
        st.markdown(
            f"Model `{run['name']}` is **{verdict_text}** on this sample; it gives the true "
            f"label {outcome['p_true'][current]:.1%}."
        )
        st.page_link(
            "../pages/gradcam.py",
            label="Explain this decision",
            icon=":material/visibility:",
            query_params={"run": run["name"], "split": split, "index": current},
        )
