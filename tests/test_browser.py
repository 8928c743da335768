"""Real-browser tests: Debian's Chromium (Playwright) against ``streamlit run app/Home.py``.

One server on 127.0.0.1 and a free port serves every test in this module; its registry holds
random-weight models built on the real MedMNIST files (``MEDMNIST_ROOT``; a missing file fails
under ``REQUIRE_REAL_DATA=1`` and skips otherwise). Screenshots go to
``test-artifacts/browser/`` (git-ignored) for a person to look at.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from app_helpers import (
    CHROMIUM,
    REPO,
    make_run,
    poll,
    stop_worker,
    streamlit_server,
    wait_attribute_changes,
    wait_body_text,
    wait_idle,
)
from conftest import real_root, require_real_file
from PIL import Image
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SHOTS = REPO / "test-artifacts" / "browser"
PAGES = {
    "": "MedMNIST clinical review",
    "samples": "Sample browser",
    "volume": "3D volume viewer",
    "gradcam": "Explanations",
    "experiments": "Experiments",
    "quantization": "Quantization",
    "retrain": "Retrain a model",
    "review": "Case review",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    for flag in ("retinamnist", "adrenalmnist3d", "breastmnist"):
        require_real_file(flag)
    tmp = tmp_path_factory.mktemp("browser")
    env = {
        "MEDMNIST_ROOT": str(real_root()),
        "TRAINED_MODELS_DIR": str(tmp / "registry"),
        "JOBS_DB": str(tmp / "jobs.sqlite"),
        "JOBS_WORKER_AUTOSTART": "1",
        "REVIEWS_DB": str(tmp / "reviews.sqlite"),  # never the repo's var/reviews.sqlite
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        retina = make_run(tmp / "registry", "retinamnist", "cnn2d", seed=0)
        make_run(tmp / "registry", "adrenalmnist3d", "cnn3d", seed=1)
        from core.quantize import quantize_run

        quantize_run(retina, ("dynamic",), latency_runs=2, n_representative=16)
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        with streamlit_server(env, SHOTS / "server.log") as url:
            yield {"url": url, "env": env, "retina": retina.name, "tmp": tmp}
    finally:
        stop_worker(env["JOBS_DB"])


def open_page(page, server, path: str, query: str = ""):
    page.goto(f"{server['url']}/{path}{query}", wait_until="domcontentloaded")
    page.wait_for_selector("[data-testid=stApp]", timeout=60_000)
    wait_idle(page)
    return page


def assert_no_error_shown(page) -> None:
    assert page.locator("[data-testid=stException]").count() == 0
    body = page.inner_text("body")
    assert "Traceback" not in body
    assert "Something went wrong" not in body, body[:2000]


def press_slider(page, key: str, presses: int, direction: str = "ArrowRight") -> None:
    thumb = page.locator(f".st-key-{key} input[type=range]").first
    thumb.focus()
    for _ in range(presses):
        thumb.press(direction)
    # the slider commits its value after a short debounce; then the fragment reruns
    page.wait_for_timeout(800)
    wait_idle(page)


def image_stats(png: bytes) -> dict[str, float]:
    arr = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)
    grey = arr.mean(axis=-1)
    return {
        "std": float(grey.std()),
        "bright_fraction": float((grey > 120).mean()),
        "colours": len(np.unique(arr.reshape(-1, 3)[::7].astype(np.uint8), axis=0)),
    }


def test_every_page_opens(server, page):
    for path, title in PAGES.items():
        open_page(page, server, path)
        page.get_by_role("heading", name=title).first.wait_for(timeout=30_000)
        assert_no_error_shown(page)
        page.screenshot(path=str(SHOTS / f"page_{path or 'home'}.png"), full_page=True)


def test_volume_slices_scrub_and_3d_is_not_blank(server, page):
    open_page(page, server, "volume", "?dataset=adrenalmnist3d&index=3")
    wait_body_text(page, "binary shape mask")
    # the views are click components; their captions sit in keyed containers under them
    expect(page.locator(".st-key-volume_caption_0")).to_have_text("Axial (z) 15/28", timeout=30_000)
    press_slider(page, "volume_slice_0", 4)
    expect(page.locator(".st-key-volume_caption_0")).to_have_text("Axial (z) 19/28", timeout=30_000)
    press_slider(page, "volume_slice_2", 3, "ArrowLeft")
    expect(page.locator(".st-key-volume_caption_2")).to_have_text(
        "Sagittal (x) 12/28", timeout=30_000
    )
    alpha = page.locator(".st-key-volume_alpha")
    before = alpha.inner_text()
    press_slider(page, "volume_alpha", 5)
    poll(page, alpha.inner_text, lambda now: now != before, 30_000, "the opacity to change")
    wait_body_text(page, r"Slice redraw: \d+ ms server time", regex=True)

    # the scene is off until asked for; PyVista (vtk.js): give WebGL a moment, then check its
    # pixels are not all background
    assert page.locator("[data-testid=stIFrame]").count() == 0
    page.locator(".st-key-volume_show_scene label").click()
    wait_idle(page)
    frame = page.locator("[data-testid=stIFrame]").first
    frame.wait_for(timeout=60_000)
    page.wait_for_timeout(4000)
    stats = image_stats(frame.screenshot(path=str(SHOTS / "volume_pyvista.png")))
    assert stats["std"] > 8 and stats["colours"] > 20, stats
    page.screenshot(path=str(SHOTS / "volume_page.png"), full_page=True)

    page.locator(".st-key-volume_mode").get_by_text("Volume rendering").click()
    wait_idle(page)
    frame = page.locator("[data-testid=stIFrame]").first
    frame.wait_for(timeout=60_000)
    page.wait_for_timeout(4000)
    stats = image_stats(frame.screenshot(path=str(SHOTS / "volume_pyvista_volume.png")))
    assert stats["std"] > 8 and stats["colours"] > 20, stats

    page.locator(".st-key-volume_viewer").get_by_text("Plotly").click()
    wait_idle(page)
    chart = page.locator("[data-testid=stPlotlyChart]").first
    chart.wait_for(timeout=60_000)
    page.wait_for_timeout(2500)
    stats = image_stats(chart.screenshot(path=str(SHOTS / "volume_plotly.png")))
    assert stats["std"] > 8 and stats["colours"] > 20, stats
    assert_no_error_shown(page)


def test_gradcam_opacity_slider_changes_overlay(server, page):
    open_page(page, server, "gradcam", f"?run={server['retina']}&index=5")
    overlay = page.locator("[data-testid=stImage] img").nth(2)
    before = overlay.get_attribute("src")
    press_slider(page, "gradcam_alpha", 6)
    wait_attribute_changes(page, overlay, "src", before)
    wait_body_text(page, r"Grad-CAM: \d+ ms server time", regex=True)
    page.screenshot(path=str(SHOTS / "gradcam_sample.png"), full_page=True)
    assert_no_error_shown(page)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


UPLOADS = [
    ("good", "scan.png", lambda: png_bytes(gradient_image()), "Accepted"),
    ("rgba", "rgba.png", lambda: png_bytes(gradient_image().convert("RGBA")), "alpha channel"),
    (
        "16bit",
        "deep.png",
        lambda: png_bytes(Image.fromarray((np.arange(4096, dtype=np.uint16) * 16).reshape(64, 64))),
        "rescaled to 8-bit",
    ),
    (
        "renamed",
        "report.png",
        lambda: b"%PDF-1.7 this is a document, not an image\n" * 20,
        "not a PNG or JPEG image",
    ),
    ("empty", "empty.png", lambda: b"", "empty"),
    ("huge_pixels", "huge.png", lambda: png_bytes(Image.new("L", (6000, 6000))), "megapixels"),
    (
        "huge_bytes",
        "noise.png",
        lambda: png_bytes(
            Image.fromarray(
                np.random.default_rng(0).integers(0, 255, (1600, 1600, 3), dtype=np.uint8)
            )
        ),
        "5",
    ),
]


def gradient_image() -> Image.Image:
    ramp = np.linspace(0, 255, 96 * 96).reshape(96, 96).astype(np.uint8)
    return Image.fromarray(np.stack([ramp, ramp.T, 255 - ramp], axis=-1))


@pytest.mark.parametrize(("case", "name", "make", "expected"), UPLOADS, ids=[u[0] for u in UPLOADS])
def test_gradcam_uploads(server, page, case, name, make, expected):
    open_page(page, server, "gradcam", f"?run={server['retina']}")
    page.locator(".st-key-gradcam_source").get_by_text("Upload an image").click()
    wait_idle(page)
    data = make()
    page.locator(".st-key-gradcam_upload input[type=file]").set_input_files(
        files=[{"name": name, "mimeType": "image/png", "buffer": data}]
    )
    wait_idle(page)
    body = wait_body_text(page, "refused by the uploader" if case == "huge_bytes" else expected)
    if case == "huge_bytes":
        # Streamlit's own limit (server.maxUploadSize = 5) refuses it before our code runs: the
        # file chip turns into an error and the page keeps asking for an image.
        assert len(data) > 5 * 1024 * 1024
        assert page.locator(".st-key-gradcam_upload [data-testid=stFileChipIconError]").count()
        assert "Upload an image to explain" in body
        assert "refused by the uploader" in body
    page.screenshot(path=str(SHOTS / f"upload_{case}.png"), full_page=True)
    assert_no_error_shown(page)


def choose(page, key: str, typed: str, attempts: int = 3) -> None:
    """Pick a selectbox option the way a person does: open it, type to filter, click the match.

    Waiting for the filtered option (instead of pressing Enter at once) avoids a race in which
    Enter picked the first, unfiltered option before the list had caught up with the typing.
    A person whose list closed under them (CI once saw no option for 30 s right after a page
    load at load 10+: a late rerun can close an open list) opens it again: so does this, up to
    ``attempts`` times, and then fails with what the list showed.
    """
    box = page.locator(f".st-key-{key}")
    option = page.get_by_role("option").filter(has_text=typed).first
    seen: list[str] = []
    for _ in range(attempts):
        wait_idle(page)
        box.click()
        page.keyboard.type(typed)
        try:
            option.wait_for(timeout=15_000)
            break
        except PlaywrightTimeoutError:
            seen.append(
                f"input={box.locator('input').first.input_value()!r} "
                f"options={page.get_by_role('option').all_inner_texts()[:8]!r}"
            )
            page.keyboard.press("Escape")  # closes the list and clears the typed filter
    else:
        page.screenshot(path=str(SHOTS / f"choose_failed_{key}.png"), full_page=True)
        raise AssertionError(f"{key}: no option {typed!r} after {attempts} tries: {seen}")
    option.click()
    wait_idle(page)
    shown = box.locator("input").first.input_value()  # the combobox shows the choice here
    assert typed in shown, f"{key} shows {shown!r}, not {typed!r}"


def test_retrain_job_runs_to_completion(server, page):
    open_page(page, server, "retrain")
    wait_body_text(page, "Access: local only")
    choose(page, "retrain_dataset", "breastmnist")
    choose(page, "retrain_model", "cnn2d")
    epochs = page.locator(".st-key-retrain_epochs input")
    epochs.fill("1")
    page.locator(".st-key-retrain_submit button").click()
    wait_idle(page)
    page.screenshot(path=str(SHOTS / "retrain_submitted.png"), full_page=True)
    page.get_by_text(re.compile(r"Job #\d+ queued")).first.wait_for(timeout=30_000)
    # the job panel's success message (the job table's cells are a canvas grid whose text
    # lives in a hidden accessibility table, so they cannot be waited for as visible)
    page.get_by_text("Finished: saved as run").first.wait_for(timeout=240_000)
    page.screenshot(path=str(SHOTS / "retrain_done.png"), full_page=True)
    registry = Path(server["env"]["TRAINED_MODELS_DIR"])
    assert any(p.name.startswith("breastmnist-cnn2d") for p in registry.iterdir())
    assert_no_error_shown(page)
    # the finished run is now a model card on Home
    open_page(page, server, "")
    wait_body_text(page, "BreastMNIST")
