"""AppTest of every page: no exception, key widgets present, controls change what is shown.

The registry (random-weight models, real metrics files) and the data (tiny synthetic MedMNIST
files) are built in a temporary folder; nothing here reads ``trained_models/`` or the network.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from app_helpers import build_registry, synthetic_environment
from PIL import Image
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
HOME = str(ROOT / "app" / "Home.py")
PAGES = ("samples", "volume", "gradcam", "experiments", "quantization", "case_review")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app")
    with synthetic_environment(tmp) as values:
        runs = build_registry(Path(values["TRAINED_MODELS_DIR"]))
        yield {**values, "runs": runs}


@pytest.fixture()
def empty_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDMNIST_ROOT", str(tmp_path / "no-data"))
    monkeypatch.setenv("TRAINED_MODELS_DIR", str(tmp_path / "no-models"))
    monkeypatch.setenv("JOBS_WORKER_AUTOSTART", "0")
    monkeypatch.setenv("JOBS_DB", str(tmp_path / "jobs.sqlite"))
    monkeypatch.setenv("REVIEWS_DB", str(tmp_path / "reviews.sqlite"))


def fresh_app() -> AppTest:
    import streamlit as st

    # Loader caches are process-wide: drop them so each test sees its own registry and data.
    st.cache_data.clear()
    return AppTest.from_file(HOME, default_timeout=180)


def open_page(page: str, query: dict | None = None) -> AppTest:
    at = fresh_app()
    at.run()
    assert not at.exception
    if query:
        for key, value in query.items():
            at.query_params[key] = value
    at.switch_page(f"../pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [e.value for e in (*at.info, *at.error, *at.warning, *at.success)]
    return "\n".join(str(p) for p in parts)


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------
# Home
# ------------------------------------------------------------------------------------------


def test_home_shows_model_cards_and_local_data(env):
    at = fresh_app()
    at.run()
    assert not at.exception
    body = texts(at)
    for run in env["runs"].values():
        assert run.name in body  # one card per run
    assert "RetinaMNIST (retinamnist)" in body
    assert "binary shape mask" in str(at.dataframe[0].value.to_dict())
    # deltas against the best published figure on the metric cards
    deltas = [m.delta for m in at.metric if m.delta]
    from core import info

    best_auc = info.best_published("retinamnist")["auc"][0]
    assert any(f"vs {best_auc:.3f}" in d for d in deltas), deltas
    assert at.selectbox(key="home_download_choice") is not None
    assert at.button(key="home_download") is not None
    # filtering cards by dataset removes the others
    at.multiselect(key="home_card_datasets").set_value(["adrenalmnist3d"]).run()
    body = texts(at)
    assert env["runs"]["adrenal"].name in body and env["runs"]["retina"].name not in body


def test_home_with_nothing_installed_explains_what_to_do(empty_env):
    at = fresh_app()
    at.run()
    assert not at.exception
    body = texts(at)
    assert "holds no trained model yet" in body
    assert "No MedMNIST file is present yet" in body


def test_offline_download_shows_numbered_steps(empty_env, monkeypatch):
    import urllib.request

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    at = fresh_app()
    at.run()
    at.selectbox(key="home_download_choice").set_value("breastmnist|28")
    at.button(key="home_download").click().run()
    assert not at.exception
    message = " ".join(e.value for e in at.error)
    assert "breastmnist.npz is not available" in message
    assert "1. Download" in message and "3. Save it as" in message


def test_home_does_not_import_tensorflow(env):
    code = (
        "import sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({HOME!r}, default_timeout=60); at.run()\n"
        "assert not at.exception, at.exception\n"
        "print('TF' if 'tensorflow' in sys.modules else 'NO-TF')\n"
    )
    env_vars = {**os.environ, **{k: v for k, v in env.items() if isinstance(v, str)}}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,  # `python -c` imports from the working directory: core, app
        env=env_vars,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "NO-TF"


def test_every_page_renders_without_data_or_models(empty_env):
    for page in PAGES:
        at = open_page(page)
        assert at.info or at.caption, page  # a helpful message, not a blank page


def test_case_review_without_models_says_what_to_do(empty_env):
    at = open_page("case_review")
    at.text_input(key="review_name_input").input("Dr Test")
    at.button(key="FormSubmitter:review_name_form-Start reviewing").click().run()
    assert not at.exception, [e.value for e in at.exception]
    body = texts(at)
    assert "No single-label model is in the registry yet" in body
    assert "1. Train one" in body


# ------------------------------------------------------------------------------------------
# Sample browser
# ------------------------------------------------------------------------------------------


def matching(at: AppTest) -> int:
    for m in at.markdown:
        if "matching samples" in m.value:
            return int(m.value.split("**")[1].split()[0])
    raise AssertionError("no 'matching samples' line")


def test_sample_browser_filters_and_sorts(env):
    at = open_page("samples")
    at.selectbox(key="samples_dataset_flag").set_value("retinamnist").run()
    at.radio(key="samples_split").set_value("test").run()
    assert matching(at) == 12
    assert len(at.image) >= 1
    at.selectbox(key="samples_label").set_value(0).run()
    assert matching(at) == 3  # labels cycle 0..4 over 12 samples
    at.selectbox(key="samples_label").set_value("all").run()

    run = env["runs"]["retina"].name
    at.selectbox(key="samples_run").set_value(run).run()
    assert not at.exception
    # the trust panel's probability bars (inline SVG)
    assert any(m.value.startswith("<svg") for m in at.markdown), "probability chart of the sample"
    at.radio(key="samples_verdict").set_value("incorrect").run()
    wrong = matching(at)
    at.radio(key="samples_verdict").set_value("correct").run()
    assert matching(at) + wrong == 12
    at.radio(key="samples_verdict").set_value("all").run()
    at.selectbox(key="samples_sort").set_value("hardest first").run()
    hardest = at.selectbox(key="samples_selected").options[0]
    at.selectbox(key="samples_sort").set_value("most confident first").run()
    assert at.selectbox(key="samples_selected").options[0] != hardest


def test_sample_browser_3d_thumbnails_and_pages(env):
    at = open_page("samples")
    at.selectbox(key="samples_dataset_flag").set_value("adrenalmnist3d").run()
    assert "binary shape mask" in texts(at)
    at.radio(key="samples_thumb").set_value("max-intensity projection").run()
    assert not at.exception
    assert at.get("pagination")


# ------------------------------------------------------------------------------------------
# 3D volume viewer
# ------------------------------------------------------------------------------------------


def slice_captions(at: AppTest) -> list[str]:
    """The three views' captions ("Axial (z) 15/28"); the views are click components."""
    return [c.value for c in at.caption if re.fullmatch(r"\w+ \(\w\) \d+/\d+", c.value)]


def test_volume_viewer_slices_and_gradcam(env):
    at = open_page("volume", {"dataset": "adrenalmnist3d", "index": "1"})
    # the 3D scene is off until asked for (a PyVista child costs ~1.8 CPU-s a volume)
    assert at.toggle(key="volume_show_scene").value is False
    assert not at.get("iframe")
    assert not at.get("plotly_chart")  # the trust panel's bars are inline SVG
    assert any(m.value.startswith("<svg") for m in at.markdown), "the probability bars"
    at.toggle(key="volume_show_scene").set_value(True).run()
    assert at.number_input(key="volume_index").value == 1
    assert "binary shape mask" in texts(at)
    picker = at.selectbox(key="volume_run")
    assert picker.value == env["runs"]["adrenal"].name  # the newest 3D model is the default
    assert picker.options[-1] == "No model"
    picker.select_index(len(picker.options) - 1).run()  # "No model": no heatmap
    assert at.slider(key="volume_cam_threshold").proto.disabled
    before = slice_captions(at)
    at.slider(key="volume_slice_0").set_value(3).run()  # slices count from 1, as captions do
    after = slice_captions(at)
    assert before != after and any("Axial (z) 3/28" in c for c in after)
    at.selectbox(key="volume_run").set_value(env["runs"]["adrenal"].name).run()
    assert not at.exception
    assert not at.slider(key="volume_cam_threshold").proto.disabled
    assert "Slice redraw:" in texts(at)
    at.radio(key="volume_viewer").set_value("Plotly").run()
    assert at.get("plotly_chart")
    at.radio(key="volume_mode").set_value("volume").run()
    assert not at.exception


@pytest.mark.slow
def test_volume_viewer_pyvista_child_process(env):
    at = open_page("volume", {"dataset": "adrenalmnist3d"})
    at.toggle(key="volume_show_scene").set_value(True).run()
    at.radio(key="volume_viewer").set_value("PyVista (VTK)").run()
    assert not at.exception
    assert not any("PyVista renderer failed" in w.value for w in at.warning)
    frames = at.get("iframe")
    assert frames and "vtk" in str(frames[0].proto).lower()


# ------------------------------------------------------------------------------------------
# Explanations (url path "gradcam", the former Grad-CAM explorer)
# ------------------------------------------------------------------------------------------


def test_gradcam_sample_and_controls(env):
    run = env["runs"]["retina"].name
    at = open_page("gradcam", {"run": run, "index": "2"})
    assert at.selectbox(key="gradcam_run").value == run
    assert at.number_input(key="gradcam_index").value == 2
    assert "Grad-CAM:" in texts(at) and "server time" in texts(at)
    assert at.get("download_button")
    # the run has no measured default: Grad-CAM at the automatic layer, said so in the panel
    assert at.selectbox(key="gradcam_method").value == "gradcam"
    assert any("have not been measured yet" in i.value for i in at.info)
    at.selectbox(key="gradcam_method").set_value("layercam_fused").run()
    assert "LayerCAM (fused layers): " in texts(at) and "server time" in texts(at)
    at.toggle(key="gradcam_compare").set_value(True).run()
    compared = at.multiselect(key="gradcam_compare_methods").value
    assert compared and "layercam_fused" not in compared
    assert len(at.get("download_button")) == 1 + len(compared)  # one annotated PNG per method
    at.slider(key="gradcam_alpha").set_value(0.9).run()
    at.selectbox(key="gradcam_cmap").set_value("inferno").run()
    at.selectbox(key="gradcam_target").set_value(3).run()
    assert not at.exception
    assert any("energy in mask" in m.label for m in at.metric)  # RetinaMNIST has a mask
    # float vs quantized occlusion (the fixture quantized this run in dynamic mode)
    at.toggle(key="gradcam_occlusion").set_value(True).run()
    assert not at.exception
    assert any("Correlation" in m.label for m in at.metric)


UPLOAD_CASES = [
    ("good.png", png(Image.new("RGB", (64, 48), (120, 40, 30))), "Accepted"),
    ("rgba.png", png(Image.new("RGBA", (30, 30), (200, 10, 10, 128))), "alpha channel"),
    (
        "deep.png",
        png(Image.fromarray(np.arange(900, dtype=np.uint16).reshape(30, 30) * 50)),
        "rescaled to 8-bit",
    ),
    ("fake.png", b"%PDF-1.4 not an image at all", "not a PNG or JPEG image"),
    ("empty.png", b"", "empty"),
    ("huge.png", png(Image.new("L", (5000, 5000))), "megapixels"),
]


@pytest.mark.parametrize(
    ("name", "data", "expected"), UPLOAD_CASES, ids=[c[0] for c in UPLOAD_CASES]
)
def test_gradcam_upload(env, name, data, expected):
    at = open_page("gradcam", {"run": env["runs"]["retina"].name})
    at.radio(key="gradcam_source").set_value("Upload an image").run()
    at.file_uploader(key="gradcam_upload").set_value((name, data, "image/png")).run()
    assert not at.exception
    assert expected in texts(at), texts(at)


def test_gradcam_3d_model_uses_a_slice(env):
    at = open_page("gradcam", {"run": env["runs"]["adrenal"].name})
    assert at.radio(key="gradcam_source").proto.disabled
    at.slider(key="gradcam_slice").set_value(5).run()
    assert not at.exception


# ------------------------------------------------------------------------------------------
# Experiments and quantization
# ------------------------------------------------------------------------------------------


def test_experiments_compare_groups_and_published(env):
    run = env["runs"]["retina_aug"].name
    at = open_page("experiments", {"run": run})
    assert at.selectbox(key="experiments_dataset").value == "retinamnist"
    assert at.selectbox(key="experiments_run").value == run
    charts = at.get("plotly_chart")
    assert charts
    spec = json.loads(charts[0].proto.spec)
    names = {trace["name"] for trace in spec["data"]}
    assert any(n.startswith("published") for n in names)
    labels = [y for trace in spec["data"] for y in trace["y"]]  # horizontal bars
    assert any("aug on" in y for y in labels) and any("aug off" in y for y in labels)
    at.radio(key="experiments_metric").set_value("acc").run()
    assert not at.exception
    at.selectbox(key="experiments_dataset").set_value("adrenalmnist3d").run()
    assert not at.exception


def test_quantization_page_reads_results(env):
    at = open_page("quantization")
    assert at.selectbox(key="quant_run").value == env["runs"]["retina"].name
    table = at.dataframe[0].value
    assert "dynamic" in set(table["mode"])
    assert len(at.get("plotly_chart")) == 2
    at.radio(key="quant_metric").set_value("acc").run()
    assert not at.exception


def test_quantization_page_warns_about_collapsed_variants(env):
    path = env["runs"]["retina"] / "quantized" / "results.json"
    original = path.read_text()
    data = json.loads(original)
    data["modes"]["dynamic"]["notes"] = ["collapsed: the same output for every test image"]
    try:
        path.write_text(json.dumps(data))
        st.cache_data.clear()  # the registry listing is cached for a few seconds
        at = open_page("quantization")
        warnings = " ".join(str(x.value) for x in at.warning)
        assert "dynamic variant(s) of this model give the same output" in warnings
    finally:
        path.write_text(original)
        st.cache_data.clear()
    at = open_page("quantization")
    assert not any("same output" in str(x.value) for x in at.warning)


def test_retrain_page_is_wired(env):
    if not (ROOT / "pages" / "retrain.py").is_file():
        pytest.fail("pages/retrain.py is missing: the Retrain page must be in the navigation")
    at = open_page("retrain")
    assert not at.exception


def test_group_runs_separates_recipes_and_labels_what_differs():
    from core.results import group_runs

    def run(name, seed, auc, **cfg):
        base = {"dataset": "retinamnist", "model": "vgg16", "augment": True, "size": 28}
        base |= {"fine_tune_blocks": 2}
        return {
            "name": name,
            "config": {**base, **cfg},
            "metrics": {"seed": seed, "test": {"auc": auc, "acc": 0.5}},
        }

    runs = [
        run("old", 0, 0.70),  # an older config: no weight_ema field, input_size unset (32 px)
        run("new", 1, 0.72, input_size=32, weight_ema=0.0, label_smoothing=0.0),
        run("third", 2, 0.74, input_size=32),
        run("ema", 0, 0.80, weight_ema=0.99, lr_schedule="cosine"),
        run("big", 0, 0.60, input_size=64),
        run("other-data", 0, 0.9, dataset="breastmnist"),
    ]
    groups = {g["label"]: g for g in group_runs(runs, "retinamnist")}
    assert set(groups) == {
        "vgg16 · fine-tune 2 · aug on",
        "vgg16 · fine-tune 2 · aug on · lr schedule cosine, weight ema 0.99",
        "vgg16 · fine-tune 2 · aug on · input 64 px",
    }
    usual = groups["vgg16 · fine-tune 2 · aug on"]
    assert usual["runs"] == ["old", "new", "third"] and usual["n"] == 3
    assert usual["auc_mean"] == pytest.approx(0.72) and usual["auc_std"] == pytest.approx(0.02)
    assert groups["vgg16 · fine-tune 2 · aug on · input 64 px"]["runs"] == ["big"]
