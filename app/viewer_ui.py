"""The 3D viewer's orthogonal slices, linked like OHIF / 3D Slicer.

Three views (axial, coronal, sagittal) share one crosshair: a click in one view moves the
other two to that voxel. The crosshair *is* the three slice sliders (``volume_slice_0/1/2``,
1-based like their captions), so sliders, clicks, step buttons and links all agree. The maths
(orientation, click-to-voxel, window/level, drawing) is in ``core.viewer``; this module only
wires widgets to it. Clicks come from ``streamlit-image-coordinates`` (pixel position and the
displayed size of the picture, whatever width the browser gave it).
"""

from __future__ import annotations

import functools

import numpy as np
import streamlit as st
from streamlit_image_coordinates import streamlit_image_coordinates

from app import state
from app import widgets as w
from core import info
from core import viewer as cv

CUSTOM = "Custom"
# Keyboard shortcuts of the step buttons (st.button's own ``shortcut``). Letters, not arrows:
# arrow keys already move a focused slider, and the page scrolls on PageUp/PageDown.
SLICE_KEYS = ("J", "K")  # previous, next slice of the active view
CASE_KEYS = ("P", "N")  # previous, next case


def slice_key(axis: int) -> str:
    """Session State key of the slider holding the crosshair's 1-based slice on ``axis``."""
    return f"volume_slice_{axis}"


def _on_click(axis: int, shape: tuple[int, int, int], orientation: cv.Orientation) -> None:
    """A click in view ``axis``: move the other two views' slices to the voxel under it.

    Runs as the component's callback, before the script, so it may set the sliders' values.
    """
    click = st.session_state.get(f"volume_click_{axis}")
    if not click or "x" not in click:
        return
    index = int(st.session_state.get(slice_key(axis), shape[axis] // 2 + 1)) - 1
    voxel = cv.click_to_voxel(
        cv.plane_view(axis, orientation),
        shape,
        index,
        float(click["x"]),
        float(click["y"]),
        float(click["width"]),
        float(click["height"]),
    )
    for other in range(3):
        st.session_state[slice_key(other)] = voxel[other] + 1
    st.session_state["volume_plane"] = axis  # the stepping buttons now move this view


def _step_slice(delta: int, shape: tuple[int, int, int]) -> None:
    axis = int(st.session_state.get("volume_plane", 0))
    key = slice_key(axis)
    current = int(st.session_state.get(key, shape[axis] // 2 + 1))
    st.session_state[key] = min(shape[axis], max(1, current + delta))


MEDMNIST_SCALE = (
    "MedMNIST's 0–255 grey scale (MedMNIST already turned each scan's Hounsfield units into "
    "grey levels and does not store how)"
)
UPLOAD_SCALE = "the 0–255 grey scale your volume was rescaled to (its lowest value 0, highest 255)"


def window_ui(kind: str | None, scale: str = MEDMNIST_SCALE) -> cv.Window | None:
    """Window/level presets for CT-intensity volumes; None (as stored) for the others.

    Args:
        kind: ``info.volume_kind`` of the volume (``VOLUME_CT`` gets presets; ``VOLUME_MASK``
            says there is nothing to window; other kinds are shown as stored).
        scale: What the 0-255 grey levels are, in words (MedMNIST's or an upload's rescale).

    Returns:
        The chosen window, or None when no window applies.
    """
    if kind == info.VOLUME_MASK:
        st.caption(
            "Binary shape mask (0/255): every voxel is black or white, so there is no "
            "window/level to set."
        )
        return None
    if kind != info.VOLUME_CT:
        return None
    options = [*cv.WINDOW_PRESETS, CUSTOM]
    choice = st.selectbox(
        "Window/level",
        options,
        key="volume_window",
        help=f"The presets stretch contrast on {scale}: they are not Hounsfield windows.",
    )
    if choice == CUSTOM:
        c1, c2 = st.columns(2)
        level = c1.slider("Level (grey level shown mid-grey)", 0, 255, 128, key="volume_level")
        width = c2.slider("Width (grey levels black → white)", 1, 255, 128, key="volume_width")
        window = cv.Window(float(level), float(width))
        st.caption(
            f"Stored grey levels {window.low:.0f}–{window.high:.0f} are spread from black to "
            "white; darker shows black, brighter white."
        )
        return window
    st.caption(f"**{choice}**: {cv.PRESET_HELP[choice]}, on {scale}.")
    return cv.WINDOW_PRESETS[choice]


@st.fragment
def slice_viewer_ui(
    volume: np.ndarray,
    cam: np.ndarray | None,
    kind: str | None,
    orientation: cv.Orientation = cv.ASSUMED_LPS,
    scale: str = MEDMNIST_SCALE,
) -> None:
    """Three linked views with crosshair, orientation letters, window/level and stepping.

    Only this fragment reruns when a slider moves, a view is clicked or a step button pressed.

    Args:
        volume: ``(D, H, W)`` float in [0, 1] (stored grey level / 255).
        cam: Optional heatmap of the same shape, in [0, 1].
        kind: ``info.volume_kind`` of the volume (decides whether window/level applies).
        orientation: Where the array axes point in the patient (labels and flips).
        scale: What the grey levels are, for the window/level captions.
    """
    shape = tuple(int(s) for s in volume.shape[:3])
    st.subheader("Orthogonal slices")
    c1, c2, c3 = st.columns([2, 1, 1])
    with c1:
        window = window_ui(kind, scale)
    alpha = c2.slider(
        "Heatmap opacity", 0.0, 1.0, 0.45, 0.05, key="volume_alpha", disabled=cam is None
    )
    cmap = c3.selectbox("Colormap", w.COLORMAPS, key="volume_cmap", disabled=cam is None)
    for plane in cv.PLANES:
        n = shape[plane.axis]
        # another volume size starts again in the middle (slice 15 of 28 is not the middle of 64)
        state.follow(slice_key(plane.axis), range(1, n + 1), n // 2 + 1, parent=n, keep_valid=False)
    voxel = tuple(int(st.session_state[slice_key(a)]) - 1 for a in range(3))
    with w.Timer() as timer:
        cols = st.columns(3)
        for col, plane in zip(cols, cv.PLANES, strict=True):
            view = cv.plane_view(plane.axis, orientation)
            picture = cv.render_view(
                volume, view, voxel, window=window, cam=cam, alpha=alpha, cmap=cmap
            )
            with col:
                # PNG level 1: ~10x smaller than the component's default (no compression) for
                # these blocky pictures, for ~1 ms more per view
                streamlit_image_coordinates(
                    picture,
                    width="stretch",
                    key=f"volume_click_{plane.axis}",
                    png_compression_level=1,
                    cursor="crosshair",
                    on_click=functools.partial(_on_click, plane.axis, shape, orientation),
                )
                with st.container(key=f"volume_caption_{plane.axis}"):
                    st.caption(f"{plane.name} {voxel[plane.axis] + 1}/{shape[plane.axis]}")
                st.slider(f"{plane.name} slice", 1, shape[plane.axis], key=slice_key(plane.axis))
    s1, s2, s3 = st.columns([2, 1, 1], vertical_alignment="bottom")
    state.follow("volume_plane", range(3), 0)
    s1.radio(
        "Step through",
        range(3),
        key="volume_plane",
        horizontal=True,
        format_func=lambda a: cv.PLANES[a].name,
        help="The view the step buttons move. Clicking a view selects it too.",
    )
    s2.button(
        "◀ Previous slice",
        key="volume_prev_slice",
        shortcut=SLICE_KEYS[0],
        on_click=_step_slice,
        args=(-1, shape),
        width="stretch",
    )
    s3.button(
        "Next slice ▶",
        key="volume_next_slice",
        shortcut=SLICE_KEYS[1],
        on_click=_step_slice,
        args=(1, shape),
        width="stretch",
    )
    st.caption(
        "Click a point in any view to move the other two there (the coloured lines are the "
        f"other views' planes). Keys: {SLICE_KEYS[0]} / {SLICE_KEYS[1]} previous / next slice, "
        f"{CASE_KEYS[0]} / {CASE_KEYS[1]} previous / next case. Letters at the edges: A/P "
        f"anterior/posterior, R/L patient's right/left, S/I superior/inferior. "
        f"{orientation.note}"
    )
    st.caption(f"Slice redraw: {timer.ms:.0f} ms server time")


def _step_case(delta: int, n_cases: int) -> None:
    current = int(st.session_state.get("volume_index", 0))
    st.session_state["volume_index"] = min(n_cases - 1, max(0, current + delta))


def case_stepper_ui(index: int, n_cases: int, container=None) -> None:
    """ "Previous case" / "Next case" buttons (keys P / N) over the split's samples.

    Drawn outside the slice fragment: a new case reruns the whole page (prediction, scene).

    Args:
        index: The sample shown now.
        n_cases: Samples in the split.
        container: Where to draw (default: the main area).
    """
    box = container or st
    c1, c2, c3 = box.columns([1, 1, 3], vertical_alignment="center")
    c1.button(
        "◀ Previous case",
        key="volume_prev_case",
        shortcut=CASE_KEYS[0],
        on_click=_step_case,
        args=(-1, n_cases),
        disabled=index <= 0,
        width="stretch",
    )
    c2.button(
        "Next case ▶",
        key="volume_next_case",
        shortcut=CASE_KEYS[1],
        on_click=_step_case,
        args=(1, n_cases),
        disabled=index >= n_cases - 1,
        width="stretch",
    )
    c3.caption(f"Case {index + 1} of {n_cases} in this split (sample #{index}).")
