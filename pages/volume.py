"""3D volume viewer: PyVista scene, orthogonal slice scrubbing, the model's heatmap in 3D."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app import cache, describe, explain_ui, state, trust_ui, viewer_ui
from app import volume as v3d
from app import widgets as w
from app.volume_upload_ui import volume_upload_ui
from core import info
from core import viewer as cv

st.title("3D volume viewer")

w.seed_from_query(
    {
        "volume_dataset_flag": ("dataset", str),
        "volume_dataset_size": ("size", int),
        "volume_split": ("split", str),
        "volume_index": ("index", int),
    }
)

side = st.sidebar
picked = w.dataset_picker_ui(key="volume_dataset", three_d=True, container=side)
if picked is None:
    st.stop()
flag, size = picked
labels = info.label_names(flag)
source = side.radio(
    "Volume",
    ["Dataset sample", "Upload a volume"],
    key="volume_source",
    horizontal=True,
    help="Your own volume (NIfTI or NumPy) is resampled to this dataset's grid and shown "
    "to this dataset's models; it stays in memory only.",
)
if source == "Upload a volume":
    uploaded = volume_upload_ui(flag, size)
    if uploaded is None:
        # The slice viewer is not drawn in this run, but Streamlit keeps its slider values
        # while the browser drops the sliders: forgotten here, they are sent again (app.state)
        # when a volume comes back, instead of the browser showing slice 1 of a page using 15.
        for axis in range(3):
            st.session_state.pop(f"volume_slice_{axis}", None)
        st.stop()
    volume, digest = uploaded.volume, uploaded.digest
    orientation = cv.orientation_for(uploaded.format)
    # an intensity upload gets window/level whatever the models saw (they are warned about)
    kind, scale = (info.VOLUME_MASK if uploaded.is_mask else info.VOLUME_CT), viewer_ui.UPLOAD_SCALE
    split, index = "upload", digest[:12]  # what the class picker's context keys on
    st.info(
        f"Your volume, shown to **{describe.dataset_title(flag)}** models at {size}³ voxels. "
        f"They were trained on **{info.modality_note(flag)}** volumes.",
        icon=":material/info:",
    )
else:
    split = w.split_ui(key="volume_split", container=side)
    with w.guard("loading the volumes") as g:
        images, y = cache.raw_split(flag, split, size)
    if g.failed:
        st.stop()
    # a link's ?index= (or the last choice) stays while it is a sample of this split
    state.follow("volume_index", range(len(images)), 0)
    index = int(
        side.number_input(
            f"Sample (0–{len(images) - 1})", 0, len(images) - 1, key="volume_index", step=1
        )
    )
    volume = images[index].astype(np.float32) / 255.0  # (D, H, W) in [0, 1]
    true_label = labels[int(y[index, 0])] if not info.is_multilabel(flag) else "multi-label"
    st.info(
        f"**{describe.dataset_title(flag)}**, {split} sample #{index}, {size}³ voxels, true "
        f"label **{true_label}**. Voxel values are a **{info.modality_note(flag)}**.",
        icon=":material/info:",
    )
    orientation = cv.ASSUMED_LPS  # MedMNIST files record no orientation
    kind, scale = info.volume_kind(flag), viewer_ui.MEDMNIST_SCALE
    viewer_ui.case_stepper_ui(index, len(images))

# The heatmap needs a 3D model trained on this dataset at this size (optional).
run = w.run_picker_ui(
    cache.runs(),
    key="volume_run",
    optional=True,
    label="Model for the heatmap (optional)",
    dataset=flag,
    three_d=True,
    container=side,
)
if run is not None and describe.run_size(run) != size:
    side.caption(f"That model was trained on {describe.run_size(run)}³ volumes; choose that size.")
    run = None
cam = None
if run is not None:
    with w.guard("reading the model's explanation settings"):
        from core import explain  # TensorFlow: the model is loaded for the heatmap anyway

        stored = run.get("explain") or cache.run_file(run["path"], "explain.json")
        default = explain_ui.explain_default(stored, explain.METHODS)
        # the same default as the Explanations page: the method measured most faithful
        method = explain_ui.method_picker_ui(
            default, key="volume_method", context=run["path"], container=side
        )
    with w.guard("computing the 3D heatmap"):
        x = volume[..., None]
        probs = cache.probabilities(run["path"], x)
        target = w.class_picker_ui(
            labels,
            probs,
            key="volume_target",
            context=(run["path"], flag, size, split, index),
            container=side,
        )
        cam = cache.heatmap(run["path"], x, method, target, explain_ui.layer_for(default, method))
        if default.faithful is False:
            side.warning(
                "No explanation method was faithful for this model: read the heat as a rough "
                "hint, not as evidence (numbers on the Explanations page).",
                icon=":material/visibility_off:",
            )
    with st.container(border=True):  # the panel may open an expander: no nesting in one
        trust_ui.checked_prediction_ui(
            run["path"],
            x,
            labels,
            flag,
            key="volume",
            true_index=[int(y[index, 0])] if source == "Dataset sample" else [],
        )
else:
    side.caption("Pick a 3D model to overlay its heatmap (where it looked).")

with w.guard("drawing the slices"):
    viewer_ui.slice_viewer_ui(volume, cam, kind, orientation, scale)

scene_col = st.container()

with scene_col:
    st.subheader("3D scene")
    # Off until asked for: building a scene costs the server ~1.8 CPU-s per volume in a PyVista
    # child (benchmarks.app_load: 2.2 of a 3D page load's CPU-s), so eight reviewers stepping
    # through cases waited 27 s at p95. OHIF and 3D Slicer also open on the 2D views.
    show_scene = st.toggle(
        "Show the 3D scene",
        key="volume_show_scene",
        help="An interactive 3D rendering of the volume (and of the heatmap as a red surface) "
        "that you can rotate and zoom. It takes the server a second or two per volume, so it "
        "is off until you turn it on; it then stays on while you step through cases.",
    )
    if not show_scene:
        st.caption(
            "Turn on **Show the 3D scene** to rotate the volume in 3D. The slices above show "
            "the same voxels."
        )
        st.stop()
    c1, c2 = st.columns(2)
    mode = c1.radio(
        "Rendering",
        list(v3d.RENDER_MODES),
        key="volume_mode",
        horizontal=True,
        format_func=lambda m: {"isosurface": "Isosurface", "volume": "Volume rendering"}[m],
    )
    viewer = c2.radio(
        "Viewer",
        ["PyVista (VTK)", "Plotly"],
        key="volume_viewer",
        horizontal=True,
        help="PyVista builds a vtk.js scene in a helper process (its volume rendering is "
        "drawn as nested translucent shells); Plotly draws a true volume rendering and is "
        "the fallback when PyVista fails.",
    )
    threshold = c1.slider(
        "Surface threshold",
        0.05,
        0.95,
        0.5,
        0.05,
        key="volume_threshold",
        help="Iso-level of the surface (fraction of the maximum voxel value).",
    )
    opacity = c2.slider("Anatomy opacity", 0.05, 1.0, 0.35, 0.05, key="volume_opacity")
    cam_threshold = c1.slider(
        "Heat threshold",
        0.1,
        0.95,
        0.6,
        0.05,
        key="volume_cam_threshold",
        disabled=cam is None,
        help="Voxels whose heatmap value (0–1) is above this level form the red heat surface.",
    )
    opts = v3d.SceneOptions(
        mode=mode, threshold=threshold, opacity=opacity, cam_threshold=cam_threshold
    )
    with w.guard("drawing the 3D scene"):
        if viewer == "PyVista (VTK)":
            try:
                html = cache.scene_html(volume, cam, opts, repr(opts))
            except RuntimeError as exc:
                w.log.warning("PyVista scene failed: %s", exc)
                st.warning(
                    f"The PyVista renderer failed ({exc}); showing the Plotly view instead.",
                    icon=":material/warning:",
                )
                html = None
            if html is not None:
                st.iframe(html, height=540)
            else:
                st.plotly_chart(v3d.plotly_scene(volume, cam, opts), key="volume_plotly")
        else:
            st.plotly_chart(v3d.plotly_scene(volume, cam, opts), key="volume_plotly")
    st.caption(
        "Grey: anatomy surface at the threshold"
        + ("; red: heat above the heat threshold." if cam is not None else ".")
        + " Drag to rotate, scroll to zoom."
    )
