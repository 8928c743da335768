"""The Explanations page (url path ``gradcam``) and its helpers in app/explain_ui.py.

AppTest on a registry of random-weight runs over synthetic MedMNIST files (the pattern of
tests/test_app.py), with ``explain.json`` files written the way ``python -m core.explain``
writes them: the page opens on the stored default method, says the verdict, dims maps no method
was faithful for, and the download carries model, class, method and a colour bar.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from app_helpers import make_run, synthetic_environment
from PIL import Image
from streamlit.testing.v1 import AppTest

from app import explain_ui

ROOT = Path(__file__).resolve().parents[1]
HOME = str(ROOT / "app" / "Home.py")
METHODS = (
    "gradcam",
    "gradcam++",
    "hirescam",
    "layercam",
    "layercam_fused",
    "scorecam",
    "integrated_gradients",
    "smoothgrad",
    "occlusion",
)
UNFAITHFUL = "No explanation method was faithful for this model. The best candidate fell short."
FAITHFUL = "Reasonably trustworthy. The map points at regions the model really uses."


def _candidate(method: str, layer, deletion: float, insertion: float, rho: float) -> dict:
    split = {
        "faithfulness": {"deletion_ratio": deletion, "insertion_ratio": insertion, "n": 64},
        "sanity": {"rank_correlation": rho, "n": 64},
        "anatomy": {"disk": 0.88, "area_disk": 0.73, "background": 0.12},
    }
    return {"method": method, "layer": layer, "val": split, "test": split}


def _write_explain(run: Path, **keys) -> None:
    (run / "explain.json").write_text(json.dumps(keys))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("explain_page")
    with synthetic_environment(tmp) as values:
        registry = Path(values["TRAINED_MODELS_DIR"])
        runs = {
            "retina": make_run(registry, "retinamnist", "cnn2d", seed=0),
            "plain": make_run(registry, "retinamnist", "cnn2d", seed=1, name="plain"),
            "adrenal": make_run(registry, "adrenalmnist3d", "cnn3d", seed=2),
        }
        # retina: measured, nothing faithful, default LayerCAM on a named layer
        _write_explain(
            runs["retina"],
            default_method="layercam",
            default_layer="block2_relu2",
            faithful=False,
            verdict=UNFAITHFUL,
            chosen_by="best validation margin",
            candidates=[
                _candidate("gradcam", "block2_relu2", 0.98, 1.01, 0.7),
                _candidate("layercam", "block2_relu2", 0.95, 1.05, 0.3),
            ],
        )
        # adrenal: measured and faithful, a pixel-level default (no layer)
        _write_explain(
            runs["adrenal"],
            default_method="integrated_gradients",
            default_layer=None,
            faithful=True,
            verdict=FAITHFUL,
            candidates=[_candidate("integrated_gradients", None, 0.6, 1.4, 0.1)],
        )
        # plain: no explain.json (never measured)
        yield {**values, "runs": {k: v.name for k, v in runs.items()}}


def open_page(page: str, query: dict) -> AppTest:
    import streamlit as st

    st.cache_data.clear()  # each test sees this module's registry
    at = AppTest.from_file(HOME, default_timeout=180)
    at.run()
    for key, value in query.items():
        at.query_params[key] = value
    at.switch_page(f"../pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _captions(at: AppTest) -> str:
    return "\n".join(str(c.value) for c in at.caption)


# ---------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------
def test_opens_on_the_stored_default_and_dims_an_unfaithful_map(env):
    at = open_page("gradcam", {"run": env["runs"]["retina"], "index": "3"})
    assert at.title[0].value == "Explanations"
    assert at.selectbox(key="gradcam_method").value == "layercam"
    assert "LayerCAM: " in _captions(at) and "reads block2_relu2 (14×14)" in _captions(at)
    warnings = [w.value for w in at.warning]
    assert any("No explanation method was faithful for this model" in w for w in warnings)
    assert UNFAITHFUL in warnings  # the verdict, in plain words, first
    assert any("Evidence for class" in h.value for h in at.subheader)
    (table,) = [d.value for d in at.dataframe if "Deletion ratio (test)" in d.value.columns]
    assert list(table["Method"]) == ["LayerCAM", "Grad-CAM"]  # the default first
    assert table["Default"].tolist() == [True, False]
    assert table["Heat on anatomy (test)"].tolist() == [0.88, 0.88]
    assert table["Anatomy share of image"].tolist() == [0.73, 0.73]
    # another method: its own automatic layer, the verdict stays about the default
    at.selectbox(key="gradcam_method").set_value("scorecam").run()
    assert not at.exception
    assert "Score-CAM: " in _captions(at) and "reads block3_relu2 (7×7)" in _captions(at)
    assert "The verdict is about the default method (LayerCAM)" in _captions(at)


def test_a_faithful_default_shows_its_verdict_undimmed(env):
    at = open_page("gradcam", {"run": env["runs"]["adrenal"], "index": "1"})
    assert at.selectbox(key="gradcam_method").value == "integrated_gradients"
    assert [s.value for s in at.success] == [FAITHFUL]
    assert not any("faithful" in w.value for w in at.warning)


def test_an_unmeasured_model_opens_on_grad_cam_and_says_how_to_measure(env):
    at = open_page("gradcam", {"run": env["runs"]["plain"]})
    assert at.selectbox(key="gradcam_method").value == "gradcam"
    (info,) = [i.value for i in at.info if "not been measured" in i.value]
    assert "1. Measure them: `python -m core.explain plain`" in info


def test_a_new_model_opens_on_its_own_default(env):
    at = open_page("gradcam", {"run": env["runs"]["retina"]})
    at.selectbox(key="gradcam_method").set_value("smoothgrad").run()
    at.selectbox(key="gradcam_run").set_value(env["runs"]["plain"]).run()
    assert at.selectbox(key="gradcam_method").value == "gradcam"
    at.selectbox(key="gradcam_run").set_value(env["runs"]["retina"]).run()
    assert at.selectbox(key="gradcam_method").value == "layercam"


def test_compare_methods_side_by_side(env):
    at = open_page("gradcam", {"run": env["runs"]["retina"]})
    single = len(at.image)
    # the pictures go out as the PNG the page encoded (Streamlit's "auto" re-encoded them as JPEG)
    assert all(url.endswith(".png") for image in at.image for url in image.value)
    at.toggle(key="gradcam_compare").set_value(True).run()
    picked = at.multiselect(key="gradcam_compare_methods").value
    assert picked == ["gradcam", "layercam_fused"]  # the default is the main map already
    at.multiselect(key="gradcam_compare_methods").set_value(
        ["gradcam", "integrated_gradients", "occlusion"]
    ).run()
    assert not at.exception
    # original + 4 overlays + colour bar, against original + heatmap + overlay + colour bar
    assert single == 4 and len(at.image) == 6
    assert all(url.endswith(".png") for image in at.image for url in image.value)
    assert len(at.get("download_button")) == 4


def test_download_carries_model_class_method_and_colour_bar(env, monkeypatch):
    import streamlit as st

    files: dict[str, bytes] = {}
    original = st.download_button

    def record(*args, **kwargs):
        data = kwargs["data"]  # a callable: the PNG is drawn when the button is clicked
        files[kwargs["file_name"]] = data() if callable(data) else data
        return original(*args, **kwargs)

    monkeypatch.setattr(st, "download_button", record)
    run = env["runs"]["retina"]
    at = open_page("gradcam", {"run": run, "split": "val", "index": "5"})
    at.selectbox(key="gradcam_target").set_value(2).run()
    name = f"{run}_val5_layercam_class2.png"
    picture = np.asarray(Image.open(io.BytesIO(files[name])).convert("RGB"))
    # the bare overlay is 280 px; the file adds caption lines above and the colour bar below
    assert picture.shape[0] > 280 + 4 * 18 and picture.shape[1] >= 420
    width = picture.shape[1]
    bar = explain_ui.colour_bar("jet", width - 20, 1)[0].astype(int)
    bar_rows = [
        r
        for r in range(picture.shape[0])
        if np.abs(picture[r, 10 : width - 10].astype(int) - bar).max() <= 1
    ]
    assert bar_rows and min(bar_rows) > 280, "no colour bar under the overlay"
    assert (picture[:60] < 100).all(axis=-1).any(), "no caption text above the overlay"


def test_volume_viewer_uses_the_same_default(env):
    at = open_page("volume", {"dataset": "adrenalmnist3d", "size": "28"})
    at.selectbox(key="volume_run").set_value(env["runs"]["adrenal"]).run()
    assert not at.exception
    assert at.selectbox(key="volume_method").value == "integrated_gradients"


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (None, explain_ui.ExplainDefault("gradcam", None, None, None)),
        ({"split": "test"}, explain_ui.ExplainDefault("gradcam", None, None, None)),
        ({"default_method": "lime"}, explain_ui.ExplainDefault("gradcam", None, None, None)),
        (
            {"default_method": "layercam_fused", "default_layer": ["a", "b"], "faithful": True},
            explain_ui.ExplainDefault("layercam_fused", ("a", "b"), True, None),
        ),
        (
            {"default_method": "smoothgrad", "default_layer": None, "verdict": "ok"},
            explain_ui.ExplainDefault("smoothgrad", None, None, "ok"),
        ),
    ],
)
def test_explain_default_reads_the_file_or_falls_back(stored, expected):
    assert explain_ui.explain_default(stored, METHODS) == expected


def test_layer_is_the_measured_one_only_for_the_default_method():
    default = explain_ui.ExplainDefault("gradcam++", "block2_relu2", True, "ok")
    assert explain_ui.layer_for(default, "gradcam++") == "block2_relu2"
    assert explain_ui.layer_for(default, "gradcam") is None


def test_dim_washes_out_towards_grey():
    picture = np.zeros((4, 4, 3), np.uint8)
    dimmed = explain_ui.dim(picture)
    assert dimmed.dtype == np.uint8 and (dimmed > 100).all()
