"""Real-browser test of the 3D viewer's linked slice views (Chromium, ``streamlit run``).

A click on one view moves the other two to the voxel under the pointer (their captions and
sliders follow); the step buttons and their keys move the active view; the case buttons and
their keys switch samples. On a 1400 px wide window each view must be at least 256 px wide.
Real AdrenalMNIST3D volumes (``MEDMNIST_ROOT``); screenshots go to ``test-artifacts/browser/``.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from app_helpers import CHROMIUM, streamlit_server, wait_idle
from conftest import real_root, require_real_file
from playwright.sync_api import expect
from test_browser import SHOTS, assert_no_error_shown, choose
from test_browser_volume_upload import upload

pytestmark = [pytest.mark.browser, pytest.mark.slow]
WAIT = 30_000  # ms: a loaded 2-core CI machine reruns the fragment slowly
N = 28


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    require_real_file("adrenalmnist3d")
    tmp = tmp_path_factory.mktemp("viewer")
    env = {
        "MEDMNIST_ROOT": str(real_root()),
        "TRAINED_MODELS_DIR": str(tmp / "registry"),  # empty: no model, no heatmap
        "JOBS_DB": str(tmp / "jobs.sqlite"),
        "JOBS_WORKER_AUTOSTART": "0",
        "REVIEWS_DB": str(tmp / "reviews.sqlite"),
    }
    SHOTS.mkdir(parents=True, exist_ok=True)
    with streamlit_server(env, SHOTS / "server_viewer.log") as url:
        yield url


@pytest.fixture()
def page(browser):
    """A 1400 px wide window: the size the issue asks the views to be readable at."""
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    pg = context.new_page()
    yield pg
    context.close()


def view(page, axis: int):
    return page.locator(f".st-key-volume_click_{axis} iframe")


def caption(page, axis: int):
    return page.locator(f".st-key-volume_caption_{axis}")


def slider_value(page, axis: int):
    return page.locator(f".st-key-volume_slice_{axis} [data-testid=stSliderThumbValue]")


def expect_position(page, z: int, y: int, x: int) -> None:
    """The three captions and sliders show the 1-based crosshair (z, y, x)."""
    for axis, (name, value) in enumerate(
        zip(("Axial (z)", "Coronal (y)", "Sagittal (x)"), (z, y, x), strict=True)
    ):
        expect(caption(page, axis)).to_have_text(f"{name} {value}/{N}", timeout=WAIT)
        expect(slider_value(page, axis)).to_have_text(str(value), timeout=WAIT)


def click_cell(page, axis: int, row: int, col: int) -> None:
    """Click the centre of displayed cell (row, col) of a view (0-based, as drawn)."""
    frame = view(page, axis)
    box = frame.bounding_box()
    assert box is not None
    frame.click(
        position={"x": (col + 0.5) * box["width"] / N, "y": (row + 0.5) * box["height"] / N}
    )


def press_key(page, key: str) -> None:
    """A key press on the page itself (a click inside a view puts focus in its iframe)."""
    page.get_by_role("heading", name="Orthogonal slices").click()
    page.keyboard.press(key)


def test_click_moves_the_other_views_and_stepping_works(server, page):
    page.goto(f"{server}/volume?dataset=adrenalmnist3d&split=test&index=3")
    page.get_by_role("heading", name="Orthogonal slices").wait_for(timeout=120_000)
    wait_idle(page)
    for axis in range(3):
        expect(view(page, axis)).to_be_visible(timeout=WAIT)
        box = view(page, axis).bounding_box()
        assert box["width"] >= 256 and box["height"] >= 256, (axis, box)
    expect_position(page, 15, 15, 15)
    page.screenshot(path=str(SHOTS / "viewer_start.png"), full_page=True)

    # axial view: rows run front (A, top) to back, columns patient right (R, left) to left:
    # cell (row 20, col 6) is voxel y = 20, x = 6; the axial slice itself stays
    click_cell(page, 0, 20, 6)
    expect_position(page, 15, 21, 7)
    # sagittal view: superior at the top (row 4 is z = 27 - 4), anterior on the left (y = col)
    click_cell(page, 2, 4, 10)
    expect_position(page, 24, 11, 7)
    expect(page.locator(".st-key-volume_plane input[type=radio]").nth(2)).to_be_checked(
        timeout=WAIT
    )  # the clicked view is the one the step buttons move now
    wait_idle(page)
    redraw = re.search(r"Slice redraw: (\d+) ms server time", page.inner_text("body"))
    assert redraw, "the page reports its redraw time"
    print(f"slice redraw after a click: {redraw.group(1)} ms server time")
    page.screenshot(path=str(SHOTS / "viewer_crosshair.png"), full_page=True)

    # stepping the active (sagittal) view: key K, then the button
    press_key(page, "k")
    expect_position(page, 24, 11, 8)
    page.locator(".st-key-volume_prev_slice button").click()
    expect_position(page, 24, 11, 7)
    page.locator(".st-key-volume_prev_slice button").click()
    expect_position(page, 24, 11, 6)

    # cases: key N, then the button back; the crosshair stays where it was
    info = page.locator("[data-testid=stAlertContentInfo]").first
    expect(info).to_contain_text("test sample #3", timeout=WAIT)
    press_key(page, "n")
    expect(info).to_contain_text("test sample #4", timeout=WAIT)
    expect(page.locator(".st-key-volume_index input")).to_have_value("4", timeout=WAIT)
    expect_position(page, 24, 11, 6)
    page.screenshot(path=str(SHOTS / "viewer_next_case.png"), full_page=True)
    page.locator(".st-key-volume_prev_case button").click()
    expect(info).to_contain_text("test sample #3", timeout=WAIT)
    expect(page.locator(".st-key-volume_index input")).to_have_value("3", timeout=WAIT)
    assert_no_error_shown(page)


def ct_like_nii_gz() -> bytes:
    """A chest-CT-like volume in Hounsfield units: air, body, two lungs, a nodule, a spine.

    Non-cubic (40 slices of 48 x 56) with 0.8 x 0.8 x 1.5 mm voxels in RAS, like a scan
    exported to NIfTI, so the viewer resamples it and takes its orientation from the header.
    """
    z, y, x = np.indices((40, 48, 56)).astype(np.float32)
    hu = np.full(z.shape, -1000.0, np.float32)  # air
    body = ((x - 28) / 26) ** 2 + ((y - 24) / 20) ** 2 < 1
    hu[body] = 40.0  # soft tissue
    for cx in (17, 39):  # lungs
        hu[((x - cx) / 9) ** 2 + ((y - 26) / 13) ** 2 < 1] = -820.0
    # RAS: x grows towards the patient's right and y towards the front, so the left lung is
    # at small x and the spine at small y; the axial view must show them on the viewer's
    # right (L) and at the bottom (P)
    hu[(x - 17) ** 2 + (y - 30) ** 2 + (z - 26) ** 2 < 16] = 60.0  # a nodule in the left lung
    hu[(x - 28) ** 2 + (y - 7) ** 2 < 16] = 700.0  # spine (bone), posterior
    xyz = np.moveaxis(hu, (0, 1, 2), (2, 1, 0))
    image = nib.Nifti1Image(xyz, affine=np.diag([0.8, 0.8, 1.5, 1.0]))
    return gzip.compress(image.to_bytes())


def test_an_uploaded_ct_gets_window_presets_and_header_orientation(server, page):
    text = upload(page, server, "chest_ct.nii.gz", ct_like_nii_gz())
    assert "Accepted chest_ct.nii.gz" in text, text[:2000]
    box = page.locator(".st-key-volume_window")
    expect(box).to_be_visible(timeout=WAIT)
    expect(
        page.get_by_text("From the NIfTI header: the volume was reoriented to RAS")
    ).to_be_visible(timeout=WAIT)
    choose(page, "volume_window", "Lung")
    expect(page.get_by_text("the darkest half (0–128, air and lung)")).to_be_visible(timeout=WAIT)
    # RAS: x grows to the patient's right, so the coronal view's left column is the last x,
    # and superior (the last z) is its top row
    click_cell(page, 1, 0, 0)
    expect(caption(page, 0)).to_have_text(f"Axial (z) {N}/{N}", timeout=WAIT)
    expect(caption(page, 2)).to_have_text(f"Sagittal (x) {N}/{N}", timeout=WAIT)
    page.screenshot(path=str(SHOTS / "viewer_upload_ct_lung.png"), full_page=True)
    assert_no_error_shown(page)
