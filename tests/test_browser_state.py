"""Real-browser checks of widget state: what the sidebar SHOWS after links and switches.

AppTest (tests/test_app_state.py) sees what the script uses; only a browser shows whether the
page tells the browser about it (a stale combobox label was the symptom of issue 17, items 12
and 13). One ``streamlit run`` serves this module with its own registry of random-weight runs
on the real MedMNIST files; its log is read for Streamlit's "created with a default value but
also had its value set via the Session State API" warning (issue 16), which Streamlit logs
once per server process, so this module needs a server of its own. Screenshots go to
``test-artifacts/browser/state_*.png``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from app_helpers import (
    CHROMIUM,
    eventually,
    make_run,
    streamlit_server,
    wait_body_text,
    wait_idle,
)
from conftest import real_root, require_real_file
from test_browser import SHOTS, assert_no_error_shown, choose, open_page, press_slider

pytestmark = [pytest.mark.browser, pytest.mark.slow]
DUPLICATE_WARNING = "created with a default value but also had its value set"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    require_real_file("retinamnist")
    require_real_file("adrenalmnist3d")
    require_real_file("adrenalmnist3d", 64)
    tmp = tmp_path_factory.mktemp("browser_state")
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
        runs = {
            "retina": make_run(registry, "retinamnist", "cnn2d", seed=0).name,
            "retina_aug": make_run(registry, "retinamnist", "cnn2d", seed=1, augment=True).name,
            "adrenal": make_run(registry, "adrenalmnist3d", "cnn3d", seed=2).name,
        }
    SHOTS.mkdir(parents=True, exist_ok=True)
    log = SHOTS / "state_server.log"
    with streamlit_server(env, log) as url:
        yield {"url": url, "env": env, "runs": runs, "log": log}


def shown(page, key: str) -> str:
    """The text a selectbox or number input shows right now."""
    return page.locator(f".st-key-{key} input").first.input_value()


def checked(page, key: str) -> str:
    """The label of the checked option of a radio group."""
    return page.locator(f".st-key-{key} label:has(input:checked)").first.inner_text().strip()


def set_number(page, key: str, value: int) -> None:
    box = page.locator(f".st-key-{key} input").first
    box.fill(str(value))
    box.press("Enter")
    wait_idle(page)


def test_links_set_widgets_one_way(server, page):
    runs = server["runs"]
    links = [
        ("gradcam", f"?run={runs['retina']}&split=val&index=3", {"gradcam_index": "3"}),
        ("gradcam", f"?run={runs['adrenal']}&split=val&index=4", {"gradcam_index": "4"}),
        (
            "volume",
            f"?dataset=adrenalmnist3d&size=28&split=val&index=4&run={runs['adrenal']}",
            {"volume_index": "4"},
        ),
        ("samples", "?dataset=retinamnist&size=28&split=val&index=4", {}),
        ("experiments", f"?run={runs['adrenal']}", {}),
    ]
    for path, query, numbers in links:
        open_page(page, server, path, query)
        assert_no_error_shown(page)
        # polled: on a loaded machine the number box can show its minimum for a moment before
        # the link's value arrives (CI read "0" once; a screenshot just after showed "4")
        for key, value in numbers.items():
            wait_shown(page, key, value)
        split_key = {"gradcam": "gradcam_split", "volume": "volume_split"}.get(path)
        if split_key:
            eventually(page, lambda k=split_key, q=query: _assert_equal(checked(page, k), "val", q))
    wait_shown(page, "experiments_run", runs["adrenal"], part=True)
    page.screenshot(path=str(SHOTS / "state_links_experiments.png"), full_page=True)
    log = server["log"].read_text(errors="replace")
    assert DUPLICATE_WARNING not in log, log[log.find(DUPLICATE_WARNING) - 200 :][:1500]


def _assert(condition: bool) -> None:
    assert condition


def _assert_equal(got: str, wanted: str, context: str) -> None:
    assert got == wanted, (got, wanted, context)


def wait_shown(page, key: str, wanted: str, *, part: bool = False) -> str:
    """Poll until widget ``key`` shows ``wanted`` (or contains it, ``part``); return the text.

    One-shot reads raced a rerun on a loaded CI machine: a widget can show its minimum or its
    previous choice for a moment before the script's value arrives.
    """

    def check() -> str:
        got = shown(page, key)
        assert (wanted in got) if part else (got == wanted), (key, got, wanted)
        return got

    return eventually(page, check)


def axial_caption_matches_slider(page, n: int) -> str:
    """The axial slider's value, after checking the axial caption shows the same slice."""
    # the views are click components; their captions sit in keyed containers under them
    caption = page.locator(".st-key-volume_caption_0").inner_text()
    value = page.locator(".st-key-volume_slice_0 [data-testid=stSliderThumbValue]").inner_text()
    assert caption == f"Axial (z) {value}/{n}", (value, caption)
    return value


def header(page) -> str:
    return next(t for t in page.inner_text("body").splitlines() if "predicted:" in t)


def test_gradcam_target_class_follows_model_and_sample(server, page):
    """Issue 17 item 12: header, target picker, heatmap and download name one class."""
    runs = server["runs"]
    open_page(page, server, "gradcam", f"?run={runs['adrenal']}")
    choose(page, "gradcam_run", runs["retina_aug"])
    set_number(page, "gradcam_index", 9)
    choose(page, "gradcam_run", runs["adrenal"])
    choose(page, "gradcam_run", runs["retina"])

    def target_names_the_prediction() -> str:
        target = shown(page, "gradcam_target")
        predicted = re.search(r"predicted: \*?\*?([^(]+?) \(", header(page)).group(1)
        assert target.endswith("· predicted"), target
        assert re.match(rf"\d+: {re.escape(predicted)} \(", target), (target, header(page))
        return target

    target = eventually(page, target_names_the_prediction)
    assert "hyperplasia" not in target and "normal" not in target  # RetinaMNIST labels
    k = int(target.split(":")[0])
    with page.expect_download() as download:
        page.locator("[data-testid=stDownloadButton] button").first.click()
    assert download.value.suggested_filename == f"{runs['retina']}_test9_gradcam_class{k}.png"
    page.screenshot(path=str(SHOTS / "state_gradcam_target.png"), full_page=True)

    # a class picked by hand is named in the header and the file, and ends with the sample
    other = (k + 1) % 5
    choose(page, "gradcam_target", f"{other}: ")
    wait_body_text(page, f"Evidence for class {other}:")
    wait_body_text(page, "not the predicted class")
    with page.expect_download() as download:
        page.locator("[data-testid=stDownloadButton] button").first.click()
    assert download.value.suggested_filename.endswith(f"_class{other}.png")
    # opacity reruns only the pictures' fragment: the file still names this sample and class,
    # and holds the new overlay
    drawn = download.value.path().read_bytes()
    press_slider(page, "gradcam_alpha", 3)
    with page.expect_download() as download:
        page.locator("[data-testid=stDownloadButton] button").first.click()
    assert download.value.suggested_filename == f"{runs['retina']}_test9_gradcam_class{other}.png"
    assert download.value.path().read_bytes() != drawn
    set_number(page, "gradcam_index", 10)
    eventually(page, lambda: _assert(shown(page, "gradcam_target").endswith("· predicted")))
    wait_body_text(page, "· the predicted class")
    # after a new sample the fragment draws with the new sample's class, not the last one
    press_slider(page, "gradcam_alpha", 2, "ArrowLeft")
    k = int(shown(page, "gradcam_target").split(":")[0])
    wait_body_text(page, f"Evidence for class {k}:")
    with page.expect_download() as download:
        page.locator("[data-testid=stDownloadButton] button").first.click()
    assert download.value.suggested_filename == f"{runs['retina']}_test10_gradcam_class{k}.png"
    assert_no_error_shown(page)


def test_dataset_switch_updates_sidebar_pickers(server, page):
    """Issue 17 item 13: size and model pickers show the new dataset's choices."""
    runs = server["runs"]
    open_page(page, server, "samples")
    choose(page, "samples_dataset_flag", "adrenalmnist3d")
    choose(page, "samples_run", runs["adrenal"])
    choose(page, "samples_dataset_flag", "retinamnist")
    eventually(page, lambda: _assert(shown(page, "samples_dataset_size") == "28×28 px"))
    model = shown(page, "samples_run")
    assert runs["retina"] in model or runs["retina_aug"] in model, model
    wait_body_text(page, "RetinaMNIST")
    page.screenshot(path=str(SHOTS / "state_samples_switch.png"), full_page=True)

    open_page(page, server, "experiments", f"?run={runs['retina_aug']}")
    wait_shown(page, "experiments_run", runs["retina_aug"], part=True)
    choose(page, "experiments_dataset", "adrenalmnist3d")
    wait_shown(page, "experiments_run", runs["adrenal"], part=True)
    page.screenshot(path=str(SHOTS / "state_experiments_switch.png"), full_page=True)
    assert_no_error_shown(page)


def test_montage_thumbnails_have_one_size(server, page):
    """Issue 17 item 14: at 64³ a long caption must not draw its thumbnail larger."""
    open_page(page, server, "samples")
    if "adrenalmnist3d" not in shown(page, "samples_dataset_flag"):
        choose(page, "samples_dataset_flag", "adrenalmnist3d")
    choose(page, "samples_dataset_size", "64")
    wait_shown(page, "samples_dataset_size", "64³ voxels")
    montage = page.locator("[data-testid=stImage] img")

    def both_classes_shown() -> None:
        captions = page.locator("[data-testid=stImageCaption]").all_inner_texts()[:24]
        assert any("hyperplasia" in c for c in captions), captions
        assert any("normal" in c for c in captions), captions

    eventually(page, both_classes_shown)
    sizes = {
        (round(box["width"]), round(box["height"]))
        for box in (img.bounding_box() for img in montage.all()[:24])
    }
    page.screenshot(path=str(SHOTS / "state_montage_64.png"), full_page=True)
    assert len(sizes) == 1, f"thumbnails drawn at different sizes: {sorted(sizes)}"


def test_3d_viewer_link_keeps_sample_and_slices_count_from_one(server, page):
    """Issue 17 items 16 and 19: the link opens this sample; slider and caption agree."""
    runs = server["runs"]
    open_page(page, server, "gradcam", f"?run={runs['adrenal']}&index=22")
    page.get_by_text("Open the 3D viewer").click()
    wait_idle(page)
    page.get_by_role("heading", name="3D volume viewer").first.wait_for(timeout=30_000)
    assert "index=22" in page.url and f"run={runs['adrenal']}" in page.url
    wait_shown(page, "volume_index", "22")
    wait_body_text(page, "test sample #22")
    wait_shown(page, "volume_run", runs["adrenal"], part=True)
    eventually(page, lambda: axial_caption_matches_slider(page, 28))
    page.screenshot(path=str(SHOTS / "state_volume_from_link.png"), full_page=True)
    assert_no_error_shown(page)
    # another volume size starts again in the middle slice, on slider and caption alike
    choose(page, "volume_dataset_size", "64")
    assert eventually(page, lambda: axial_caption_matches_slider(page, 64)) == "33"

    open_page(page, server, "gradcam", f"?run={runs['adrenal']}&index=22")
    page.locator(".st-key-gradcam_slice [data-testid=stSlider]").wait_for(timeout=60_000)
    slider = page.locator(".st-key-gradcam_slice").inner_text()
    assert "1–28" in slider and "15" in slider
    wait_body_text(page, "Overlay · axial slice 15/28")
