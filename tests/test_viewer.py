"""core.viewer: plane layout and orientation letters, click-to-voxel, window/level, drawing."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from core import info
from core import viewer as cv

SHAPE = (10, 14, 22)  # non-cubic: every axis has its own length


def numbered(shape=SHAPE) -> np.ndarray:
    """A volume whose every voxel holds its own flat index: a picture tells which voxel it is."""
    return np.arange(np.prod(shape), dtype=np.int64).reshape(shape)


@pytest.mark.parametrize(
    ("orientation", "expected"),
    [
        (
            cv.ASSUMED_LPS,  # x -> left, y -> posterior, z -> superior
            {0: ("A", "P", "R", "L"), 1: ("S", "I", "R", "L"), 2: ("S", "I", "A", "P")},
        ),
        (
            cv.NIFTI_RAS,  # x -> right, y -> anterior, z -> superior: the same radiological views
            {0: ("A", "P", "R", "L"), 1: ("S", "I", "R", "L"), 2: ("S", "I", "A", "P")},
        ),
    ],
)
def test_views_are_laid_out_the_radiological_way(orientation, expected):
    for axis, (top, bottom, left, right) in expected.items():
        view = cv.plane_view(axis, orientation)
        assert (view.top, view.bottom, view.left, view.right) == (top, bottom, left, right)


def test_flips_follow_the_orientation():
    lps = [cv.plane_view(a, cv.ASSUMED_LPS) for a in range(3)]
    ras = [cv.plane_view(a, cv.NIFTI_RAS) for a in range(3)]
    # LPS: axial needs no flip; coronal/sagittal put z (growing superior) upwards
    assert [(v.flip_rows, v.flip_cols) for v in lps] == [
        (False, False),
        (True, False),
        (True, False),
    ]
    # RAS: y grows anterior (axial rows flip), x grows right (axial/coronal columns flip),
    # and sagittal columns (y, anterior) flip so anterior is on the left
    assert [(v.flip_rows, v.flip_cols) for v in ras] == [(True, True), (True, True), (True, True)]


def test_unusual_orientation_keeps_the_letters_true():
    odd = cv.Orientation(("A", "S", "L"), False, "")  # axis 0 runs front-back
    view = cv.plane_view(0, odd)  # rows = axis 1 (S), cols = axis 2 (L)
    assert (view.top, view.bottom) == ("I", "S")  # not flipped: "up" (A) is not on this axis
    assert (view.left, view.right) == ("R", "L")


@pytest.mark.parametrize("orientation", [cv.ASSUMED_LPS, cv.NIFTI_RAS, cv.DICOM_LPS])
@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("display", [(1.0, 1.0), (7.3, 7.3), (13.0, 4.5)])
def test_a_click_finds_the_voxel_drawn_under_it(orientation, axis, display):
    """Click the centre of every displayed cell, at any display scale (also non-square)."""
    volume = numbered()
    view = cv.plane_view(axis, orientation)
    index = SHAPE[axis] // 3
    picture = cv.display_slice(volume, view, index)
    rows, cols = picture.shape
    sx, sy = display
    width, height = cols * sx, rows * sy
    for r, c in itertools.product(range(rows), range(cols)):
        voxel = cv.click_to_voxel(view, SHAPE, index, (c + 0.5) * sx, (r + 0.5) * sy, width, height)
        assert volume[voxel] == picture[r, c], (r, c, voxel)
        assert voxel[axis] == index
        assert cv.voxel_to_display(view, SHAPE, voxel) == (r, c)


def test_clicks_in_known_corners():
    shape = (10, 14, 22)
    axial = cv.plane_view(0)
    # axial top-left is anterior-right: y = 0 (front), x = 0 (patient's right, LPS)
    assert cv.click_to_voxel(axial, shape, 4, 0, 0, 220, 140) == (4, 0, 0)
    coronal = cv.plane_view(1)
    # coronal top-left is superior-right: the last z
    assert cv.click_to_voxel(coronal, shape, 6, 1, 1, 220, 100) == (9, 6, 0)
    sagittal = cv.plane_view(2)
    # sagittal bottom-right is inferior-posterior: z = 0, the last y
    assert cv.click_to_voxel(sagittal, shape, 3, 139, 99, 140, 100) == (0, 13, 3)


def test_clicks_on_or_past_the_edge_stay_inside():
    view = cv.plane_view(0)
    assert cv.click_to_voxel(view, SHAPE, 0, -3, -3, 100, 100) == (0, 0, 0)
    assert cv.click_to_voxel(view, SHAPE, 0, 100, 100, 100, 100) == (0, 13, 21)
    with pytest.raises(ValueError, match="no size"):
        cv.click_to_voxel(view, SHAPE, 0, 1, 1, 0, 100)


def test_window_level_maths():
    grey = np.array([0, 32, 64, 96, 128, 200, 255], np.float32)
    full = cv.apply_window(grey / 255.0, cv.WINDOW_PRESETS["Full range (as stored)"])
    assert full.tolist() == grey.astype(np.uint8).tolist()  # as stored: identity
    lung = cv.apply_window(grey, cv.WINDOW_PRESETS["Lung"], scale=1.0)  # 0..128 -> 0..255
    assert lung.tolist() == [0, 64, 128, 191, 255, 255, 255]
    soft = cv.Window(160.0, 96.0)  # 112..208
    assert (soft.low, soft.high) == (112.0, 208.0)
    out = cv.apply_window(np.array([100.0, 112.0, 160.0, 208.0, 230.0]), soft, scale=1.0)
    assert out.tolist() == [0, 0, 128, 255, 255]
    with pytest.raises(ValueError, match="width must be > 0"):
        cv.apply_window(grey, cv.Window(10.0, 0.0))
    assert set(cv.PRESET_HELP) == set(cv.WINDOW_PRESETS)  # every preset says what it does


def test_render_draws_crosshair_in_the_other_planes_colours():
    volume = np.zeros((28, 28, 28), np.float32)
    voxel = (5, 10, 20)
    view = cv.plane_view(0)  # axial: rows = y (coronal plane, green), cols = x (sagittal, yellow)
    pic = cv.render_view(volume, view, voxel, side=280, labels=False)
    f = cv.enlargement(28, 28, 280)
    assert pic.shape == (28 * f, 28 * f, 3) and f == 10
    row_line = 10 * f + f // 2
    col_line = 20 * f + f // 2
    assert tuple(pic[row_line, 2]) == cv.PLANES[1].colour  # horizontal line: coronal plane
    assert tuple(pic[2, col_line]) == cv.PLANES[2].colour  # vertical line: sagittal plane
    assert tuple(pic[row_line, col_line]) == (0, 0, 0)  # a gap keeps the voxel itself visible
    plain = cv.render_view(volume, view, voxel, side=280, labels=False, crosshair=False)
    assert plain.max() == 0
    labelled = cv.render_view(volume, view, voxel, side=280, crosshair=False)
    assert labelled[:40].max() == 255 and labelled[-40:].max() == 255  # "A" on top, "P" below


def test_render_applies_window_and_heatmap():
    volume = np.full((8, 8, 8), 64 / 255.0, np.float32)
    lung = cv.render_view(
        volume,
        cv.plane_view(0),
        (4, 4, 4),
        window=cv.WINDOW_PRESETS["Lung"],
        crosshair=False,
        labels=False,
    )
    assert int(lung[0, 0, 0]) == 128  # grey 64 is mid-grey in the lung preset
    cam = np.ones((8, 8, 8), np.float32)
    hot = cv.render_view(
        volume,
        cv.plane_view(0),
        (4, 4, 4),
        cam=cam,
        alpha=1.0,
        cmap="jet",
        crosshair=False,
        labels=False,
    )
    assert tuple(hot[0, 0]) != tuple(lung[0, 0])  # the heat colour replaces the grey


def test_orientation_by_upload_format():
    assert cv.orientation_for("NIfTI-1") is cv.NIFTI_RAS
    assert cv.orientation_for("DICOM series (zip)") is cv.DICOM_LPS
    assert cv.orientation_for("NumPy .npy") is cv.ASSUMED_LPS
    assert cv.orientation_for(None) is cv.ASSUMED_LPS and not cv.ASSUMED_LPS.known


def test_info_knows_ct_intensity_from_masks():
    assert info.is_ct_intensity("nodulemnist3d") and info.is_ct_intensity("organmnist3d")
    assert not info.is_ct_intensity("adrenalmnist3d") and not info.is_ct_intensity("vesselmnist3d")
    assert info.volume_kind("vesselmnist3d") == info.VOLUME_MASK
    assert info.volume_kind("synapsemnist3d") == info.VOLUME_MICROSCOPY
    assert info.volume_kind("retinamnist") is None and not info.is_ct_intensity("retinamnist")
    assert "binary shape mask" in info.modality_note("adrenalmnist3d")
    assert info.modality_note("nodulemnist3d") == "CT intensity"


def test_redraw_benchmark_runs_and_reports_every_case(tmp_path, capsys):
    from benchmarks import viewer_redraw

    out = tmp_path / "redraw.json"
    assert viewer_redraw.main(["--repeats", "2", "--output", str(out)]) == 0
    import json

    rows = json.loads(out.read_text())
    assert [(r["size"], r["heatmap"]) for r in rows] == [
        (28, False),
        (28, True),
        (64, False),
        (64, True),
    ]
    assert all(r["median_ms"] > 0 and r["sent_kb"] > 1 for r in rows)
    assert "| 64³ | yes |" in capsys.readouterr().out
