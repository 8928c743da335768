"""Explanations: where a model looked, for a dataset sample or an uploaded image, by the method
measured most faithful for that model, with a plain verdict on how far to trust the map.

The url path stays ``gradcam`` (app/Home.py), so links to the former Grad-CAM explorer work.
"""

from __future__ import annotations

import functools

import numpy as np
import streamlit as st

from app import cache, describe, explain_ui, figures, state, trust_ui
from app import widgets as w
from core import info, registry
from core.results import alignment_rows

OCCLUSION_CMAP = "gradcam_occlusion_cmap"


def download_png(overlay: np.ndarray, cmap: str, lines: list[str], class_name: str) -> bytes:
    """The downloadable PNG: ``overlay`` with its caption ``lines`` and colour bar.

    Handed to ``st.download_button`` as a deferred callable, so Streamlit runs it in its own
    thread when the button is clicked: the captioned picture and its PNG encoding cost CPU on
    every load and opacity move otherwise (issue 16).
    """
    return figures.png_bytes(explain_ui.annotated_overlay(overlay, cmap, lines, class_name))


@st.fragment
def cam_views(
    box,
    display: np.ndarray,
    cams: dict[str, np.ndarray],
    slice_index: int | None,
    depth: int,
    explained: dict[str, str],
    file_stem: str,
    dimmed: bool,
) -> None:
    """Colormap and opacity controls (in the sidebar ``box``), pictures, colour bar, downloads.

    A fragment: moving these two controls reruns only this function, with the arguments of
    the last full run; anything else (run, sample, method, class, slice) reruns the page and
    calls it again with new ones. The occlusion pictures further down use the colormap too:
    when they are shown and it changes, the whole page reruns (a full run does not: it pops
    the mark before calling this).

    Args:
        explained: ``class`` (e.g. "class 3: ..."), ``class_name``, ``file_class``, ``model``,
            ``origin``; per method name its title with its layer, and under ``title:<name>``
            its title alone.
        dimmed: Wash the maps out (no method was found faithful for this model).
    """
    cmap = box.selectbox("Colormap", w.COLORMAPS, key="gradcam_cmap")
    alpha = box.slider("Heatmap opacity", 0.0, 1.0, 0.45, 0.05, key="gradcam_alpha")
    if st.session_state.get(OCCLUSION_CMAP, cmap) != cmap:
        st.rerun()  # the full run draws the occlusion pictures in the new colormap too
    with w.guard("drawing the heatmaps"):
        where = "" if slice_index is None else f" · axial slice {slice_index + 1}/{depth}"
        pictures = {
            m: figures.cam_pictures(display, cam, alpha, cmap, slice_index)
            for m, cam in cams.items()
        }
        if dimmed:
            for pics in pictures.values():
                for name in ("heatmap", "overlay"):
                    pics[name] = explain_ui.dim(pics[name])
        if len(cams) == 1:
            (method,) = cams
            cols = st.columns(3)
            for col, caption in zip(cols, ("Original", "Heatmap", "Overlay"), strict=True):
                # PNG bytes cached by content: an opacity move encodes only the new overlay.
                # output_format="PNG": with "auto" Streamlit decodes the PNG and re-encodes it
                # as JPEG (q 90) on every run, which costs server CPU, sends ~6x the bytes and
                # blurs the heatmap's edges.
                col.image(
                    cache.png(pictures[method][caption.lower()]),
                    caption=caption + where,
                    width="stretch",
                    output_format="PNG",
                )
        else:
            cols = st.columns(len(cams) + 1)
            first = next(iter(pictures.values()))
            cols[0].image(
                cache.png(first["original"]),
                caption="Original" + where,
                width="stretch",
                output_format="PNG",
            )
            for col, (method, pics) in zip(cols[1:], pictures.items(), strict=True):
                col.image(
                    cache.png(pics["overlay"]),
                    caption=explained[method],
                    width="stretch",
                    output_format="PNG",
                )
        st.image(
            cache.png(explain_ui.colour_bar_legend(cmap, explained["class_name"])),
            caption="Colour scale: how strongly each region speaks for the explained class",
            output_format="PNG",
        )
        for method, pics in pictures.items():
            title = explained["title:" + method]
            lines = [
                f"Model: {explained['model']}",
                f"Explains {explained['class']}",
                f"Method: {explained[method]}" + (" (not found faithful)" if dimmed else ""),
                explained["origin"] + where,
            ]
            st.download_button(
                f"Download the {title} overlay of {explained['class']} (PNG)",
                # drawn and encoded on click only, not on every page load and opacity move
                data=functools.partial(
                    download_png, pics["overlay_full"], cmap, lines, explained["class_name"]
                ),
                file_name=f"{file_stem}_{method}_{explained['file_class']}.png",
                mime="image/png",
                key=f"gradcam_download_{method}",
                icon=":material/download:",
            )


st.title("Explanations")
# set by the occlusion section at the end of a full run that shows its pictures (cam_views)
st.session_state.pop(OCCLUSION_CMAP, None)

w.seed_from_query({"gradcam_split": ("split", str), "gradcam_index": ("index", int)})
side = st.sidebar
run = w.run_picker_ui(cache.runs(), key="gradcam_run", container=side)
if run is None:
    st.info(
        "No trained model in the registry yet, so there is nothing to explain.\n\n"
        "1. Train one (`python -m core.train --dataset retinamnist --model cnn2d --output "
        "trained_models`) or queue one on the **Retrain** page.\n"
        "2. Come back here and pick it in the sidebar.",
        icon=":material/inventory_2:",
    )
    st.stop()

flag, size = describe.run_dataset(run), describe.run_size(run)
labels = info.label_names(flag)
three_d = info.is_3d(flag)
with w.guard("loading the model") as g:
    model = cache.load_model(run["path"])
if g.failed:
    st.stop()
in_shape = tuple(int(d) for d in model.input_shape[1:])

source = side.radio(
    "Image",
    ["Dataset sample", "Upload an image"],
    key="gradcam_source",
    help="Uploads are checked by content, converted to the model's input and kept in memory "
    "only (never written to disk).",
    disabled=three_d,
)
if three_d:
    side.caption("Uploads are for 2D models; this is a 3D model.")
    source = "Dataset sample"

x: np.ndarray | None = None  # model input without batch axis
display: np.ndarray | None = None  # what the person sees as "original"
true_text = "unknown (uploaded image)"
if source == "Dataset sample":
    split = w.split_ui(key="gradcam_split", container=side)
    with w.guard("loading the images") as g:
        xs, ys = cache.model_split(flag, split, size)
    if g.failed:
        st.stop()
    # a link's ?index= (or the last choice) stays while it is a sample of this split
    state.follow("gradcam_index", range(len(xs)), 0)
    index = int(side.number_input(f"Sample (0–{len(xs) - 1})", 0, len(xs) - 1, key="gradcam_index"))
    x = cache.prepare(run, xs[index : index + 1])[0]
    display = xs[index]
    truth = np.flatnonzero(ys[index]) if info.is_multilabel(flag) else [int(ys[index, 0])]
    true_text = ", ".join(labels[k] for k in truth) or "no finding"
    origin = f"{split} sample #{index}"
    origin_file = f"{split}{index}"
else:
    from core.uploads import MAX_BYTES, UploadError, prepare_upload

    upload = st.file_uploader(
        f"PNG or JPEG, at most {MAX_BYTES // (1024 * 1024)} MB; converted to "
        f"{in_shape[0]}×{in_shape[1]} px, {in_shape[-1]} channel(s)",
        type=["png", "jpg", "jpeg"],
        key="gradcam_upload",
    )
    if upload is None:
        st.info(
            "Upload an image to explain the model's decision on it. Files over "
            f"{MAX_BYTES // (1024 * 1024)} MB are refused by the uploader itself (the file "
            "turns red; hover it for the reason).",
            icon=":material/upload:",
        )
        st.stop()
    try:
        prepared = prepare_upload(upload.getvalue(), in_shape[:2], in_shape[-1])
    except UploadError as exc:
        st.error(
            f"**{upload.name}** was not accepted. {exc}", icon=":material/image_not_supported:"
        )
        st.stop()
    x, display = prepared.array, prepared.display
    origin_file = "upload"
    origin = (
        f"upload {upload.name} ({prepared.format}, {prepared.original_size[0]}×"
        f"{prepared.original_size[1]}, {prepared.original_mode})"
    )
    st.success(
        f"Accepted **{upload.name}**: {prepared.format} image, "
        f"{prepared.original_size[0]}×{prepared.original_size[1]} px.",
        icon=":material/check_circle:",
    )
    for note in prepared.notes:
        st.caption(f"• {note}")

stored = run.get("explain") or cache.run_file(run["path"], "explain.json")
with w.guard("reading the model's explanation settings"):
    from core import explain  # TensorFlow: loaded with the model above anyway

    default = explain_ui.explain_default(stored, explain.METHODS)
    method = explain_ui.method_picker_ui(
        default, key="gradcam_method", context=run["path"], container=side
    )
compare = side.toggle(
    "Compare methods",
    key="gradcam_compare",
    help="Show the same image and class explained by other methods side by side.",
)
methods = [method]
if compare:
    methods += explain_ui.compare_picker_ui(
        default, method, key="gradcam_compare_methods", container=side
    )
# colormap and opacity: drawn here in the sidebar by the cam_views fragment below
view_box = side.container()

with w.guard("running the model"):
    probs = cache.probabilities(run["path"], x)
    # a new model or sample starts at its own predicted class (see class_picker_ui)
    target = w.class_picker_ui(
        labels, probs, key="gradcam_target", context=(run["path"], origin), container=side
    )
    predicted = int(np.argmax(probs))
    target_name = labels[target] if target < len(labels) else str(target)
    st.markdown(
        f"**{describe.dataset_title(flag)}** · `{run['name']}` · {origin} · true label: "
        f"**{true_text}**"
    )
    # OOD warning before any grade, then the refer badge and calibrated bars (app.trust_ui)
    own_truth = list(truth) if source == "Dataset sample" else []
    shown = trust_ui.checked_prediction_ui(
        run["path"], x, labels, flag, key="gradcam", true_index=own_truth
    )
    titles = {m: explain.method_info(m)["title"] for m in methods}
    # the heading names the class the maps explain, and whether the model predicted it
    st.subheader(
        explain_ui.evidence_heading(target, target_name, predicted, probs, shown),
        help="The heatmap shows which regions raised the model's score for this class. It "
        "shows where the model looked, not whether the finding is really there.",
    )
    with w.Timer() as timer:
        cams = {
            m: cache.heatmap(run["path"], x, m, target, explain_ui.layer_for(default, m))
            for m in methods
        }
    # which layer each map reads, with its grid: coarse grids give blurry maps
    where_read = {}
    for m in methods:
        layers = explain.resolve_layers(model, m, explain_ui.layer_for(default, m))
        where_read[m] = explain.describe_layers(model, layers) or "input pixels"
    labelled = {m: f"{titles[m]} · {where_read[m]}" for m in methods}
    st.caption(
        f"{', '.join(titles.values())}: {timer.ms:.0f} ms server time · "
        + (
            f"reads {where_read[method]}"
            if len(methods) == 1
            else "; ".join(f"{titles[m]} reads {where_read[m]}" for m in methods)
        )
    )
    if default.faithful is False:
        st.warning(
            "**No explanation method was faithful for this model**, so the map is shown "
            "dimmed: treat it as a rough hint, not as evidence. The measured numbers are "
            "under *Can you trust this map?* below.",
            icon=":material/visibility_off:",
        )

    slice_index = None
    if three_d:
        depth = x.shape[0]
        # slices are numbered from 1 for people, as in the captions and the 3D viewer
        state.follow(
            "gradcam_slice", range(1, depth + 1), depth // 2 + 1, parent=depth, keep_valid=False
        )
        slice_number = st.slider(
            f"Axial slice (1–{depth})",
            1,
            depth,
            key="gradcam_slice",
            help="3D model: the heatmap is a volume; scrub it here or open the 3D viewer.",
        )
        slice_index = slice_number - 1
        st.page_link(
            "../pages/volume.py",
            label="Open the 3D viewer",
            icon=":material/view_in_ar:",
            # the viewer opens on this very sample and model
            query_params={
                "dataset": flag,
                "size": size,
                "split": split,
                "index": index,
                "run": run["name"],
            },
        )
    # the file says what it shows: run, sample, (slice,) method and the class explained
    slice_file = "" if slice_index is None else f"_slice{slice_index + 1}"
    cam_views(
        view_box,
        display,
        cams,
        slice_index,
        x.shape[0],
        {
            **labelled,
            **{f"title:{m}": t for m, t in titles.items()},
            "class": f"class {target}: {target_name}",
            "class_name": target_name,
            "file_class": f"class{target}",
            "model": run["name"],
            "origin": origin,
        },
        f"{run['name']}_{origin_file}{slice_file}",
        default.faithful is False,
    )

    explain_ui.trust_panel_ui(stored, default, method, run["name"])

    st.subheader("Does the heat fall on the anatomy?")
    alignment = figures.alignment(x, cams, flag)
    if alignment is None:
        st.caption(
            f"No anatomy mask is defined for {flag}; the alignment score is available for "
            "AdrenalMNIST3D, VesselMNIST3D and RetinaMNIST."
        )
    else:
        cols = st.columns(len(alignment["scores"]) + 1)
        for col, (m, score) in zip(cols, alignment["scores"].items(), strict=False):
            col.metric(
                f"{titles[m]} energy in mask",
                f"{score:.1%}",
                delta=f"{score - alignment['area']:+.1%} vs uniform",
                help="Share of the heatmap's energy inside the anatomy mask (the organ for 3D "
                "masks, the fundus disk for retina photos).",
            )
        cols[-1].metric(
            "Mask area (uniform map)",
            f"{alignment['area']:.1%}",
            help="What a heatmap spread evenly over the image would score.",
        )
    if stored and alignment_rows(stored):
        with st.expander(f"Grad-CAM alignment over the test split ({stored.get('split', 'test')})"):
            st.dataframe(alignment_rows(stored), hide_index=True, key="alignment_table")
            st.caption(
                "Heat on anatomy: share of heatmap energy inside the organ mask (3D) or fundus "
                "disk (RetinaMNIST); compare it with the anatomy's area, which a uniform map "
                "would score. Deletion AUC: mean predicted-class score while the most salient "
                "pixels are removed first; lower than random order means the heatmap found "
                "what the model relies on."
            )

quantized = registry.quantized_models(run["path"])
st.subheader("Float vs quantized: occlusion maps")
if not quantized:
    st.caption(
        "This run has no quantized model (`quantized/*.tflite`). Quantize it with "
        "`python -m core.quantize RUN_DIR` to compare what the deployed model looks at."
    )
else:
    mode = st.selectbox("Quantized variant", list(quantized), key="gradcam_qmode")
    if st.toggle(
        "Compare occlusion maps",
        key="gradcam_occlusion",
        help="Occlusion needs only forward passes, so it explains the TFLite model "
        "too. Takes a few seconds.",
    ):
        with w.guard("computing occlusion maps"):
            cmap = st.session_state.get("gradcam_cmap", w.COLORMAPS[0])
            st.session_state[OCCLUSION_CMAP] = cmap
            maps = cache.occlusion_pair(run["path"], mode, x, target)
            pics = figures.occlusion_pictures(display, maps, cmap, slice_index)
            cols = st.columns(2)
            cols[0].image(
                pics["float"],
                caption="Float (Keras) occlusion",
                width="stretch",
                output_format="PNG",
            )
            cols[1].image(
                pics["quantized"],
                caption=f"{mode} (TFLite) occlusion",
                width="stretch",
                output_format="PNG",
            )
            st.metric(
                "Correlation of the two maps",
                f"{maps['correlation']:.3f}",
                help="Pearson correlation; 1 = the quantized model relies on the same regions.",
            )
