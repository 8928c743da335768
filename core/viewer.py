"""Orthogonal slice viewer maths: plane orientation, linked crosshair, window/level, rendering.

Pure numpy + PIL (no Streamlit, no TensorFlow), so every mapping here is unit-tested and the
page only wires widgets to it. Conventions follow 3D Slicer and OHIF:

* Volumes are ``(D, H, W)`` arrays indexed ``(z, y, x)``; the three planes are named by the
  axis they cut (axial fixes z, coronal fixes y, sagittal fixes x), as the page always did.
* Each view is shown the radiological way: axial with anterior up and the patient's right on
  the viewer's left; coronal with superior up and right on the left; sagittal with superior
  up and anterior on the left. Rows or columns are flipped to get there, so a click must be
  mapped back through the same flips: ``click_to_voxel`` and ``voxel_to_display`` do that.
* Window/level works on the 0-255 grey scale the volumes are stored in (MedMNIST CT volumes
  were already mapped from Hounsfield units to 0-255; the mapping is not in the files).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from core import imaging

OPPOSITE = {"A": "P", "P": "A", "L": "R", "R": "L", "S": "I", "I": "S"}


@dataclass(frozen=True)
class Plane:
    """One of the three orthogonal views.

    Attributes:
        name: Caption name, e.g. "Axial (z)".
        axis: The volume axis the plane cuts (0, 1 or 2).
        up: Patient direction shown at the top of the view.
        left: Patient direction shown on the viewer's left.
        colour: RGB of this plane's crosshair line in the other views (Slicer's colours).
    """

    name: str
    axis: int
    up: str
    left: str
    colour: tuple[int, int, int]


PLANES: tuple[Plane, ...] = (
    Plane("Axial (z)", 0, "A", "R", (235, 70, 70)),
    Plane("Coronal (y)", 1, "S", "R", (80, 200, 90)),
    Plane("Sagittal (x)", 2, "S", "A", (240, 210, 60)),
)


@dataclass(frozen=True)
class Orientation:
    """Patient direction towards which each array index grows.

    Attributes:
        directions: Letters for axes 0, 1, 2, e.g. ``("S", "P", "L")``: z grows towards the
            head, y towards the back, x towards the patient's left (DICOM's LPS order).
        known: True when the file said so (NIfTI affine, DICOM slice geometry); False when
            the viewer assumes it (MedMNIST and NumPy files carry no orientation).
        note: One sentence for the page saying where the orientation comes from.
    """

    directions: tuple[str, str, str]
    known: bool
    note: str


ASSUMED_LPS = Orientation(
    ("S", "P", "L"),
    False,
    "MedMNIST and NumPy files store no orientation: the labels assume DICOM's patient order "
    "(x towards the patient's left, y towards the back, z towards the head).",
)
NIFTI_RAS = Orientation(
    ("S", "A", "R"),
    True,
    "From the NIfTI header: the volume was reoriented to RAS (x towards the patient's right, "
    "y towards the front, z towards the head).",
)
DICOM_LPS = Orientation(
    ("S", "P", "L"),
    True,
    "From the DICOM slice geometry (patient LPS order, slices sorted along their normal).",
)


def orientation_for(file_format: str | None) -> Orientation:
    """The orientation of a volume by where it came from.

    Args:
        file_format: ``PreparedVolume.format`` of an upload ("NIfTI-1", "DICOM series (zip)",
            ...), or None for a MedMNIST sample.

    Returns:
        The matching ``Orientation`` (``ASSUMED_LPS`` when the source records none).
    """
    if file_format and file_format.startswith("NIfTI"):
        return NIFTI_RAS
    if file_format and file_format.startswith("DICOM"):
        return DICOM_LPS
    return ASSUMED_LPS


@dataclass(frozen=True)
class PlaneView:
    """How one plane's 2D slice is laid out on screen.

    Attributes:
        plane: The plane.
        row_axis: Volume axis running down the displayed rows.
        col_axis: Volume axis running along the displayed columns.
        flip_rows: Row 0 on screen is the *last* index of ``row_axis``.
        flip_cols: Column 0 on screen is the *last* index of ``col_axis``.
        top, bottom, left, right: Orientation letters at the view's edges.
    """

    plane: Plane
    row_axis: int
    col_axis: int
    flip_rows: bool
    flip_cols: bool
    top: str
    bottom: str
    left: str
    right: str


def plane_view(axis: int, orientation: Orientation = ASSUMED_LPS) -> PlaneView:
    """Lay out the plane cutting ``axis`` the radiological way for ``orientation``.

    An index axis that grows towards the direction wanted at the top (or left) is flipped so
    that direction is at the top (left). An axis that is neither that direction nor its
    opposite (an unusual orientation) is left as stored, and the labels say what is there.

    Args:
        axis: 0 (axial), 1 (coronal) or 2 (sagittal).
        orientation: Where each array axis points in the patient.

    Returns:
        The ``PlaneView``.

    Raises:
        ValueError: ``axis`` not in 0..2.
    """
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    plane = PLANES[axis]
    row_axis, col_axis = (a for a in (0, 1, 2) if a != axis)
    row_dir = orientation.directions[row_axis]
    col_dir = orientation.directions[col_axis]
    flip_rows = row_dir == plane.up
    flip_cols = col_dir == plane.left
    top = row_dir if flip_rows else OPPOSITE[row_dir]
    left = col_dir if flip_cols else OPPOSITE[col_dir]
    return PlaneView(
        plane, row_axis, col_axis, flip_rows, flip_cols, top, OPPOSITE[top], left, OPPOSITE[left]
    )


def display_slice(volume: np.ndarray, view: PlaneView, index: int) -> np.ndarray:
    """The 2D slice of ``volume`` at ``index`` along the view's axis, flipped for display.

    Args:
        volume: ``(D, H, W)`` (or ``(D, H, W, C)``; the channel axis is kept last).
        view: From ``plane_view``.
        index: 0-based slice index along ``view.plane.axis``.

    Returns:
        ``(rows, cols)`` array (a view, not a copy, when no flip is needed).

    Raises:
        ValueError: see ``core.imaging.take_slice``.
    """
    sl = imaging.take_slice(volume, view.plane.axis, index)
    if view.flip_rows:
        sl = sl[::-1]
    if view.flip_cols:
        sl = sl[:, ::-1]
    return sl


def _grid_index(pixel: float, extent: float, n: int) -> int:
    """Which of ``n`` equal cells along ``extent`` display pixels holds ``pixel``."""
    if extent <= 0:
        raise ValueError(f"the displayed image has no size ({extent})")
    return min(n - 1, max(0, math.floor(pixel * n / extent)))


def click_to_voxel(
    view: PlaneView,
    shape: tuple[int, int, int],
    index: int,
    x: float,
    y: float,
    width: float,
    height: float,
) -> tuple[int, int, int]:
    """Map a click on a displayed slice to the voxel under it.

    Args:
        view: The clicked plane's layout.
        shape: The volume's ``(D, H, W)``.
        index: 0-based slice shown in the clicked plane.
        x, y: Click position in display pixels from the image's top-left corner.
        width, height: Displayed image size in pixels (the browser may scale the picture to
            any size, and a non-cubic volume gives a non-square slice).

    Returns:
        The ``(z, y, x)`` voxel (0-based); clicks on the image's edge are clamped inside.
    """
    rows, cols = shape[view.row_axis], shape[view.col_axis]
    r = _grid_index(y, height, rows)
    c = _grid_index(x, width, cols)
    voxel = [0, 0, 0]
    voxel[view.plane.axis] = int(index)
    voxel[view.row_axis] = rows - 1 - r if view.flip_rows else r
    voxel[view.col_axis] = cols - 1 - c if view.flip_cols else c
    return voxel[0], voxel[1], voxel[2]


def voxel_to_display(
    view: PlaneView, shape: tuple[int, int, int], voxel: tuple[int, int, int]
) -> tuple[int, int]:
    """Row and column of ``voxel`` in the view's displayed (flipped) slice: the crosshair.

    Returns:
        ``(row, col)`` in slice cells (multiply by the enlargement factor for pixels).
    """
    rows, cols = shape[view.row_axis], shape[view.col_axis]
    r, c = voxel[view.row_axis], voxel[view.col_axis]
    return (rows - 1 - r if view.flip_rows else r), (cols - 1 - c if view.flip_cols else c)


# --------------------------------------------------------------------------------------------
# Window / level
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """A grey-level window on the stored 0-255 scale.

    Attributes:
        level: Centre of the window (stored grey level shown as mid-grey).
        width: Range of stored grey levels spread from black to white.
    """

    level: float
    width: float

    @property
    def low(self) -> float:
        return self.level - self.width / 2.0

    @property
    def high(self) -> float:
        return self.level + self.width / 2.0


# Named for what they make easier to see in MedMNIST's 0-255 CT volumes. They are contrast
# stretches on that scale, not Hounsfield windows: MedMNIST does not ship its HU mapping.
WINDOW_PRESETS: dict[str, Window] = {
    "Full range (as stored)": Window(127.5, 255.0),
    "Lung": Window(64.0, 128.0),
    "Soft tissue": Window(160.0, 96.0),
    "Bone / dense": Window(215.0, 80.0),
}
PRESET_HELP: dict[str, str] = {
    "Full range (as stored)": "every stored grey level as it is: 0 black, 255 white",
    "Lung": "the darkest half (0–128, air and lung) spread over black to white; "
    "everything brighter shows white",
    "Soft tissue": "mid greys (112–208) spread over black to white; darker shows black, "
    "brighter white",
    "Bone / dense": "the brightest greys (175–255) spread over black to white; "
    "everything darker shows black",
}


def apply_window(image: np.ndarray, window: Window, scale: float = 255.0) -> np.ndarray:
    """Grey levels through a window: ``low`` and below black, ``high`` and above white.

    Args:
        image: Values on ``[0, 1]`` (multiplied by ``scale`` to the stored 0-255 levels) or,
            with ``scale=1``, already 0-255.
        window: Level and width on the 0-255 scale; width must be > 0.
        scale: Factor from ``image`` values to stored grey levels.

    Returns:
        uint8 array of the same shape.

    Raises:
        ValueError: ``window.width`` is not positive.
    """
    if not window.width > 0:
        raise ValueError(f"window width must be > 0, got {window.width}")
    grey = np.asarray(image, np.float32) * np.float32(scale)
    out = (grey - np.float32(window.low)) * np.float32(255.0 / window.width)
    return (np.clip(out, 0.0, 255.0) + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Rendering one view
# --------------------------------------------------------------------------------------------


def enlargement(rows: int, cols: int, side: int) -> int:
    """Integer nearest-neighbour factor so the longer side of a slice is at least ``side``."""
    return max(1, math.ceil(side / max(rows, cols)))


@functools.lru_cache(maxsize=4)
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)  # Pillow's bundled font: no system fonts needed


def render_view(
    volume: np.ndarray,
    view: PlaneView,
    voxel: tuple[int, int, int],
    *,
    window: Window | None = None,
    cam: np.ndarray | None = None,
    alpha: float = 0.45,
    cmap: str = "jet",
    side: int = 320,
    crosshair: bool = True,
    labels: bool = True,
) -> np.ndarray:
    """Draw one plane at the crosshair ``voxel``: window/level, heatmap, crosshair, labels.

    Args:
        volume: ``(D, H, W)`` float in [0, 1] (stored grey level / 255).
        view: From ``plane_view``.
        voxel: ``(z, y, x)`` crosshair position; the plane shows slice ``voxel[axis]``.
        window: Grey-level window (None: values as stored).
        cam: Optional heatmap of the volume's shape, in [0, 1], blended with ``alpha``.
        alpha: Heatmap opacity.
        cmap: Matplotlib colormap of the heatmap.
        side: Minimum length in pixels of the picture's longer side.
        crosshair: Draw the other two planes as coloured lines through ``voxel``.
        labels: Write the orientation letters at the four edges.

    Returns:
        ``(rows * f, cols * f, 3)`` uint8 RGB, ``f = enlargement(rows, cols, side)``.
    """
    shape = volume.shape[:3]
    index = voxel[view.plane.axis]
    grey = apply_window(
        display_slice(volume, view, index), window or WINDOW_PRESETS["Full range (as stored)"]
    )
    if cam is not None:
        rgb = imaging.overlay(grey, display_slice(cam, view, index), alpha=alpha, cmap=cmap)
    else:
        rgb = np.repeat(grey[..., None], 3, axis=-1)
    rows, cols = rgb.shape[:2]
    f = enlargement(rows, cols, side)
    big = np.repeat(np.repeat(rgb, f, axis=0), f, axis=1)
    if crosshair:
        r, c = voxel_to_display(view, shape, voxel)
        thick = max(1, f // 6)
        # the horizontal line is the plane cutting the row axis, the vertical one the plane
        # cutting the column axis; a gap around the point keeps the voxel itself visible
        row_colour = np.asarray(PLANES[view.row_axis].colour, np.uint8)
        col_colour = np.asarray(PLANES[view.col_axis].colour, np.uint8)
        yc, xc = r * f + f // 2, c * f + f // 2
        gap = f + thick
        y0, x0 = yc - thick // 2, xc - thick // 2
        band_rows = slice(max(0, y0), y0 + thick)
        band_cols = slice(max(0, x0), x0 + thick)
        big[band_rows, : max(0, xc - gap)] = row_colour
        big[band_rows, xc + gap :] = row_colour
        big[: max(0, yc - gap), band_cols] = col_colour
        big[yc + gap :, band_cols] = col_colour
    if labels:
        big = _draw_labels(big, view)
    return big


def _draw_labels(image: np.ndarray, view: PlaneView) -> np.ndarray:
    from PIL import Image, ImageDraw

    h, w = image.shape[:2]
    size = max(12, min(h, w) // 14)
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    font = _font(size)
    pad = max(3, size // 4)
    spots = [
        (view.top, w / 2, pad, "mt"),
        (view.bottom, w / 2, h - pad, "mb"),
        (view.left, pad, h / 2, "lm"),
        (view.right, w - pad, h / 2, "rm"),
    ]
    for text, x, y, anchor in spots:
        draw.text(
            (x, y),
            text,
            fill=(255, 255, 255),
            font=font,
            anchor=anchor,
            stroke_width=2,
            stroke_fill=(0, 0, 0),
        )
    return np.asarray(pil)
