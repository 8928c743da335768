"""Real browser: a chest X-ray uploaded to a retina model is flagged before any grade is shown.

The module's registry holds a copy of the shipped ``cnn2d_aug`` RetinaMNIST run with its trust
values fitted here (``core.trust.fit`` on the real val split and foreign sets), so the test does
not depend on which ``calibration.json`` files the repository ships. The uploads are real
MedMNIST test images saved as PNG: a PneumoniaMNIST chest X-ray (foreign) and a RetinaMNIST
fundus photograph (in distribution). Screenshots go to ``test-artifacts/browser/trust_*.png``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from app_helpers import CHROMIUM, streamlit_server, wait_idle
from conftest import real_root, require_real_file
from test_browser import SHOTS, open_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
RUN = "cnn2d_aug"
WARNING = "This does not look like a retinal fundus photograph"


def _png(image: np.ndarray, path: Path) -> Path:
    from PIL import Image

    Image.fromarray(image).save(path, format="PNG")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    for flag in ("retinamnist", "pneumoniamnist", "breastmnist"):
        require_real_file(flag)
    tmp = tmp_path_factory.mktemp("browser_trust")
    registry_dir = tmp / "registry"
    shipped = REPO / "trained_models" / RUN
    registry_dir.mkdir()
    shutil.copytree(shipped, registry_dir / RUN, ignore=shutil.ignore_patterns("quantized"))
    env = {
        "MEDMNIST_ROOT": str(real_root()),
        "TRAINED_MODELS_DIR": str(registry_dir),
        "JOBS_DB": str(tmp / "jobs.sqlite"),
        "JOBS_WORKER_AUTOSTART": "0",
    }
    from core import data, registry
    from core.trust import fit

    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        fit.fit(registry_dir / RUN, registry_dir)
        predictor = registry.load_predictor(registry_dir / RUN, registry_dir)
        chest, _ = data.load_raw_split("pneumoniamnist", "test")
        fundus, _ = data.load_raw_split("retinamnist", "test")
        x_chest, _ = data.load_split("pneumoniamnist", "test")
        x_fundus, _ = data.load_split("retinamnist", "test")
    # the predictor's own verdicts on the images the browser will upload (the UI must agree)
    assert predictor.is_ood(x_chest[:1])[0], "the trust fit does not flag this chest X-ray"
    calm = int(np.flatnonzero(~predictor.is_ood(x_fundus[:20]))[0])
    uploads = {
        "chest": _png(chest[0], tmp / "chest_xray.png"),
        "fundus": _png(fundus[calm], tmp / "fundus.png"),
    }
    SHOTS.mkdir(parents=True, exist_ok=True)
    with streamlit_server(env, SHOTS / "trust_server.log") as url:
        yield {"url": url, "env": env, "uploads": uploads}


def _upload(page, server, which: str) -> str:
    open_page(page, server, "gradcam", f"?run={RUN}")
    page.locator(".st-key-gradcam_source label", has_text="Upload an image").click()
    wait_idle(page)
    page.locator("[data-testid=stFileUploaderDropzoneInput]").set_input_files(
        str(server["uploads"][which])
    )
    wait_idle(page)
    page.wait_for_selector("text=Accepted", timeout=60_000)
    wait_idle(page)
    return page.inner_text("[data-testid=stMain]")


def test_chest_xray_upload_is_flagged_before_any_grade(server, page):
    body = _upload(page, server, "chest")
    page.screenshot(path=str(SHOTS / "trust_chest_upload.png"), full_page=True)
    assert WARNING in body, body[:3000]
    # the grade stays inside the closed "show anyway" expander: not visible on the page
    assert "predicted:" not in body, body[:3000]
    # nor does the explanation's heading give the class a probability
    heading = next(t for t in body.splitlines() if t.startswith("Evidence for class"))
    assert "%" not in heading and "no probability" in heading, heading
    page.get_by_text("Show the model's output anyway").click()
    wait_idle(page)
    opened = page.inner_text("[data-testid=stMain]")
    assert opened.index(WARNING) < opened.index("predicted:")
    assert "Refer to a specialist" in opened
    page.screenshot(path=str(SHOTS / "trust_chest_upload_opened.png"), full_page=True)


def test_fundus_upload_is_graded_with_calibrated_bars(server, page):
    body = _upload(page, server, "fundus")
    page.screenshot(path=str(SHOTS / "trust_fundus_upload.png"), full_page=True)
    assert WARNING not in body
    assert "predicted:" in body and "calibrated" in body
    # the heading's probability is the panel's calibrated one, not the raw output
    heading = next(t for t in body.splitlines() if t.startswith("Evidence for class"))
    assert re.search(r"\(\d+\.\d% calibrated\)", heading), heading
    assert "Refer to a specialist" in body or "reliable range" in body
