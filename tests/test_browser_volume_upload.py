"""Real-browser test of the 3D viewer's upload: a ``.nii.gz`` made with nibabel from a real
AdrenalMNIST3D test volume renders (scene, slices, prediction); a 4D file is refused.

Screenshots go to ``test-artifacts/browser/`` for a person to look at.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from app_helpers import (
    CHROMIUM,
    REPO,
    eventually,
    make_run,
    streamlit_server,
    wait_body_text,
    wait_idle,
)
from conftest import real_root, require_real_file
from PIL import Image
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SHOTS = REPO / "test-artifacts" / "browser"


def nii_gz(zyx: np.ndarray) -> bytes:
    xyz = np.moveaxis(zyx, (0, 1, 2), (2, 1, 0))  # NIfTI stores (x, y, z[, t])
    return gzip.compress(nib.Nifti1Image(xyz, affine=np.eye(4)).to_bytes())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    require_real_file("adrenalmnist3d")
    tmp = tmp_path_factory.mktemp("browser_volume_upload")
    env = {
        "MEDMNIST_ROOT": str(real_root()),
        "TRAINED_MODELS_DIR": str(tmp / "registry"),
        "JOBS_DB": str(tmp / "jobs.sqlite"),
        "JOBS_WORKER_AUTOSTART": "0",
        "REVIEWS_DB": str(tmp / "reviews.sqlite"),
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        make_run(tmp / "registry", "adrenalmnist3d", "cnn3d", seed=1)
    SHOTS.mkdir(parents=True, exist_ok=True)
    with streamlit_server(env, SHOTS / "server_volume_upload.log") as url:
        yield url


def upload(page, url: str, name: str, data: bytes) -> str:
    page.goto(f"{url}/volume?dataset=adrenalmnist3d", wait_until="domcontentloaded")
    page.wait_for_selector("[data-testid=stApp]", timeout=60_000)
    wait_idle(page)
    page.locator(".st-key-volume_source").get_by_text("Upload a volume").click()
    wait_idle(page)
    page.locator(".st-key-volume_upload input[type=file]").set_input_files(
        files=[{"name": name, "mimeType": "application/gzip", "buffer": data}]
    )
    page.wait_for_timeout(500)
    wait_idle(page)
    return page.inner_text("body")


def test_a_nii_gz_upload_renders_with_prediction(server, page):
    volume = np.load(require_real_file("adrenalmnist3d"))["test_images"][3]
    upload(page, server, "adrenal_test3.nii.gz", nii_gz(volume))
    text = wait_body_text(page, "Model predicted:", timeout_ms=60_000)
    assert "Accepted adrenal_test3.nii.gz: NIfTI-1, 28 × 28 × 28 voxels of 1 × 1 × 1 mm" in text
    assert "Traceback" not in text and "Something went wrong" not in text
    assert "Model predicted:" in text, text[-1500:]  # the trust panel's prediction on the upload
    expect(page.locator(".st-key-volume_caption_0")).to_have_text("Axial (z) 15/28", timeout=30_000)

    def sliders_show_15() -> None:
        # the slider shows the slice the caption names (the upload came after a run without it)
        for axis in range(3):
            assert page.locator(f".st-key-volume_slice_{axis}").inner_text().split()[-3] == "15"

    eventually(page, sliders_show_15)
    page.locator(".st-key-volume_show_scene label").click()  # the 3D scene is off by default
    wait_idle(page)
    frame = page.locator("[data-testid=stIFrame]").first
    frame.wait_for(timeout=60_000)
    page.wait_for_timeout(4000)
    shot = np.asarray(Image.open(io.BytesIO(frame.screenshot())).convert("L"), np.float32)
    assert shot.std() > 8  # the scene is drawn, not a blank frame
    page.screenshot(path=str(SHOTS / "volume_upload.png"), full_page=True)


def test_a_4d_upload_is_refused_with_its_shape(server, page):
    volume = np.load(require_real_file("adrenalmnist3d"))["test_images"][3]
    four_d = np.stack([volume] * 2, axis=-1)
    text = upload(page, server, "two_volumes.nii.gz", nii_gz(four_d))
    assert "two_volumes.nii.gz was not accepted" in text
    assert "pick one volume" in text and "28 × 28 × 28 × 2" in text
    assert "Traceback" not in text
    page.screenshot(path=str(SHOTS / "volume_upload_refused.png"), full_page=True)
