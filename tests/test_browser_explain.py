"""Real-browser check of the Explanations page: the old ``/gradcam`` link opens it on the
model's stored default method, switching methods redraws the map, Compare methods shows them
side by side, the trust numbers open in an expander, the download is the annotated PNG.

One ``streamlit run`` serves a registry of random-weight runs on the real MedMNIST files, one
of them with an ``explain.json`` as ``python -m core.explain`` writes it. Screenshots go to
``test-artifacts/browser/explain_*.png``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from app_helpers import (
    CHROMIUM,
    eventually,
    make_run,
    streamlit_server,
    wait_attribute_changes,
    wait_body_text,
    wait_idle,
)
from conftest import real_root, require_real_file
from PIL import Image
from playwright.sync_api import expect
from test_browser import SHOTS, assert_no_error_shown, choose, open_page

pytestmark = [pytest.mark.browser, pytest.mark.slow]
VERDICT = "No explanation method was faithful for this model. Treat the map as a rough hint."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    require_real_file("retinamnist")
    tmp = tmp_path_factory.mktemp("browser_explain")
    registry = tmp / "registry"
    env = {
        "MEDMNIST_ROOT": str(real_root()),
        "TRAINED_MODELS_DIR": str(registry),
        "JOBS_DB": str(tmp / "jobs.sqlite"),
        "JOBS_WORKER_AUTOSTART": "0",
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        run = make_run(registry, "retinamnist", "cnn2d", seed=0)
    split = {
        "faithfulness": {"deletion_ratio": 0.97, "insertion_ratio": 1.02, "n": 64},
        "sanity": {"rank_correlation": 0.35, "n": 64},
    }
    (run / "explain.json").write_text(
        json.dumps(
            {
                "default_method": "layercam",
                "default_layer": "block2_relu2",
                "faithful": False,
                "verdict": VERDICT,
                "candidates": [
                    {"method": "layercam", "layer": "block2_relu2", "val": split, "test": split}
                ],
            }
        )
    )
    SHOTS.mkdir(parents=True, exist_ok=True)
    with streamlit_server(env, SHOTS / "explain_server.log") as url:
        yield {"url": url, "run": run.name}


def method_shown(page) -> str:
    return page.locator(".st-key-gradcam_method input").first.input_value()


def server_time_caption(page) -> str:
    return next(t for t in page.inner_text("body").splitlines() if "ms server time" in t)


def _is(got: str, wanted: str) -> None:
    assert got == wanted, (got, wanted)


def test_switching_methods(server, page):
    open_page(page, server, "gradcam", f"?run={server['run']}&index=4")
    body = wait_body_text(page, "No explanation method was faithful for this model")
    assert "Explanations" in page.locator("h1").first.inner_text()
    eventually(page, lambda: _is(method_shown(page), "LayerCAM · this model's default"))
    assert "No explanation method was faithful for this model" in body and VERDICT in body
    assert re.match(
        r"LayerCAM: \d+ ms server time · reads block2_relu2 \(14×14\)", server_time_caption(page)
    )
    overlay = page.locator("[data-testid=stImage] img").nth(2).get_attribute("src")
    page.screenshot(path=str(SHOTS / "explain_default.png"), full_page=True)

    choose(page, "gradcam_method", "Integrated Gradients")
    wait_body_text(
        page, r"Integrated Gradients: \d+ ms server time · reads input pixels", regex=True
    )
    wait_attribute_changes(page, page.locator("[data-testid=stImage] img").nth(2), "src", overlay)
    with page.expect_download() as download:
        page.locator("[data-testid=stDownloadButton] button").first.click()
    assert re.fullmatch(
        rf"{server['run']}_test4_integrated_gradients_class\d\.png",
        download.value.suggested_filename,
    )
    picture = np.asarray(Image.open(download.value.path()).convert("RGB"))
    assert picture.shape[0] > 280 + 60 and picture.shape[1] >= 420  # caption + colour bar
    page.screenshot(path=str(SHOTS / "explain_integrated_gradients.png"), full_page=True)

    page.locator(".st-key-gradcam_compare").get_by_text("Compare methods").click()
    wait_idle(page)
    # chosen + 2 compared (polled: the compared maps land after the rerun goes idle under load)
    expect(page.locator("[data-testid=stDownloadButton]")).to_have_count(3, timeout=60_000)
    page.get_by_text("The numbers behind the verdict").click()
    wait_idle(page)
    expander = page.locator("[data-testid=stExpander]").filter(has_text="numbers behind")
    expect(expander.locator("[data-testid=stDataFrame]")).to_have_count(1, timeout=30_000)
    page.screenshot(path=str(SHOTS / "explain_compare.png"), full_page=True)
    assert_no_error_shown(page)
