"""Widget state across one session: links, dataset/model/sample switches, slice numbering.

These drive the pages as a person does, in ONE session (AppTest keeps Session State between
runs), and check what the browser would show, not only what the script uses: Streamlit sends a
value to the browser only when it is assigned through Session State (the widget proto then
carries ``set_value``); otherwise the browser keeps showing its previous choice, which is how
the sidebar came to show "28³ voxels" and "cnn3d" on a RetinaMNIST page.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from app_helpers import build_registry, synthetic_environment
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
HOME = str(ROOT / "app" / "Home.py")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app_state")
    with synthetic_environment(tmp) as values:
        runs = build_registry(Path(values["TRAINED_MODELS_DIR"]), quantize=False)
        yield {**values, "runs": {k: p.name for k, p in runs.items()}}


@pytest.fixture()
def duplicate_defaults(monkeypatch):
    """Keys of widgets drawn with a default argument while Session State also set them.

    Streamlit logs this only inside a real server and only once per process, so the rule it
    checks (``policies.check_session_state_rules``) is recorded here directly.
    """
    from streamlit.elements.lib import policies
    from streamlit.runtime.state import get_session_state

    hits: list[str] = []
    original = policies.check_session_state_rules

    def record(default_value, key, writes_allowed=True):
        if (
            key is not None
            and default_value is not None
            and get_session_state().is_new_state_value(key)
        ):
            hits.append(key)
        return original(default_value, key, writes_allowed)

    monkeypatch.setattr(policies, "check_session_state_rules", record)
    return hits


def start() -> AppTest:
    import streamlit as st

    st.cache_data.clear()
    at = AppTest.from_file(HOME, default_timeout=180)
    at.run()
    assert not at.exception
    return at


def goto(at: AppTest, page: str, query: dict | None = None) -> AppTest:
    """Open a page the way a link does: query parameters, then the page switch."""
    at.query_params.clear()
    for key, value in (query or {}).items():
        at.query_params[key] = str(value)
    at.switch_page(f"../pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def shown_label(at: AppTest, key: str) -> str:
    """The option label a selectbox's proto tells the browser to show after this run.

    Raises AssertionError when the proto does not assign a value (``set_value``), i.e. the
    browser would keep whatever it showed before.
    """
    proto = at.selectbox(key=key).proto
    assert proto.set_value, f"{key}: the browser is not told the new value and keeps the old one"
    return proto.raw_value


def texts(at: AppTest) -> str:
    return "\n".join(str(m.value) for m in (*at.markdown, *at.caption))


# ------------------------------------------------------------------------------------------
# Links set widgets one way only (issue 16: the gradcam_split warning)
# ------------------------------------------------------------------------------------------


def headings(at: AppTest) -> str:
    return "\n".join(str(h.value) for h in at.subheader)


def test_pages_opened_from_links_set_widgets_one_way(env, duplicate_defaults):
    runs = env["runs"]
    at = start()
    goto(at, "gradcam", {"run": runs["retina"], "split": "val", "index": 3})
    assert duplicate_defaults == [], "gradcam: widgets given a default AND a Session State value"
    assert at.radio(key="gradcam_split").value == "val"
    assert at.number_input(key="gradcam_index").value == 3
    link = {"dataset": "adrenalmnist3d", "size": 28, "split": "val", "index": 2}
    goto(at, "volume", {**link, "run": runs["adrenal"]})
    assert at.radio(key="volume_split").value == "val"
    assert at.number_input(key="volume_index").value == 2
    assert at.selectbox(key="volume_run").value == runs["adrenal"]
    assert duplicate_defaults == [], "volume: widgets given a default AND a Session State value"
    # back to Grad-CAM from another page (its widgets were dropped there), now a 3D model
    goto(at, "gradcam", {"run": runs["adrenal"], "split": "train", "index": 2})
    assert at.selectbox(key="gradcam_run").value == runs["adrenal"]
    assert at.radio(key="gradcam_split").value == "train"
    assert at.number_input(key="gradcam_index").value == 2
    assert duplicate_defaults == [], "gradcam (3D): widgets given a default AND Session State"
    goto(at, "samples", {"dataset": "retinamnist", "size": 28, "split": "val", "index": 4})
    assert at.selectbox(key="samples_dataset_flag").value == "retinamnist"
    assert at.radio(key="samples_split").value == "val"
    assert at.selectbox(key="samples_selected").value == 4
    goto(at, "experiments", {"run": runs["adrenal"]})
    assert at.selectbox(key="experiments_dataset").value == "adrenalmnist3d"
    assert at.selectbox(key="experiments_run").value == runs["adrenal"]
    # and the same pages opened without any link
    for page in ("gradcam", "volume", "samples", "experiments"):
        goto(at, page)
    assert duplicate_defaults == [], (
        f"widgets given a default AND a Session State value: {sorted(set(duplicate_defaults))}"
    )


# ------------------------------------------------------------------------------------------
# Issue 17 item 12: the target class belongs to one model and one sample
# ------------------------------------------------------------------------------------------


def predicted_option(at: AppTest) -> int:
    options = at.selectbox(key="gradcam_target").options
    (index,) = [i for i, label in enumerate(options) if label.endswith("· predicted")]
    return index


def assert_target_is_predicted(at: AppTest) -> None:
    picker = at.selectbox(key="gradcam_target")
    assert picker.value == predicted_option(at), picker.options
    # ...and the browser is told so, under this run's label list
    assert shown_label(at, "gradcam_target") == picker.options[picker.value]


def test_gradcam_target_class_follows_model_and_sample(env):
    runs = env["runs"]
    at = start()
    goto(at, "gradcam", {"run": runs["adrenal"]})
    assert_target_is_predicted(at)
    # the path: 3D run -> 2D run, sample 9 -> 3D run -> another 2D run
    at.selectbox(key="gradcam_run").set_value(runs["retina_aug"]).run()
    assert_target_is_predicted(at)
    at.number_input(key="gradcam_index").set_value(9).run()
    assert_target_is_predicted(at)
    at.selectbox(key="gradcam_run").set_value(runs["adrenal"]).run()
    assert_target_is_predicted(at)
    at.selectbox(key="gradcam_run").set_value(runs["retina"]).run()
    assert_target_is_predicted(at)
    assert "· the predicted class" in headings(at)  # the header names the class explained
    labels = at.selectbox(key="gradcam_target").options
    assert len(labels) == 5 and not any("hyperplasia" in label for label in labels)

    # a class picked by hand is what the header, the heatmap and the download explain...
    at.number_input(key="gradcam_index").set_value(10).run()
    next_predicted = predicted_option(at)
    at.number_input(key="gradcam_index").set_value(9).run()
    chosen = next(k for k in range(5) if k not in (predicted_option(at), next_predicted))
    at.selectbox(key="gradcam_target").set_value(chosen).run()
    assert at.selectbox(key="gradcam_target").value == chosen
    explained = rf"Evidence for class {chosen}: .*\*\*not\*\* the predicted"
    assert re.search(explained, headings(at))
    download = at.get("download_button")[0]
    assert f"class {chosen}:" in download.proto.label
    # ...and it does not carry over to the next sample, which starts at its own prediction
    at.number_input(key="gradcam_index").set_value(10).run()
    assert at.selectbox(key="gradcam_target").value == next_predicted
    assert_target_is_predicted(at)


def test_gradcam_download_file_names_the_class(env, monkeypatch):
    import streamlit as st

    names: list[str] = []
    original = st.download_button

    def record(*args, **kwargs):
        names.append(kwargs.get("file_name"))
        return original(*args, **kwargs)

    monkeypatch.setattr(st, "download_button", record)
    at = start()
    goto(at, "gradcam", {"run": env["runs"]["retina"], "split": "val", "index": 5})
    at.selectbox(key="gradcam_target").set_value(4).run()
    assert names[-1] == f"{env['runs']['retina']}_val5_gradcam_class4.png"
    # a 3D overlay is one slice: the file says which
    goto(at, "samples")
    goto(at, "gradcam", {"run": env["runs"]["adrenal"], "index": 1})
    at.slider(key="gradcam_slice").set_value(7).run()
    k = at.selectbox(key="gradcam_target").value
    assert names[-1] == f"{env['runs']['adrenal']}_test1_slice7_gradcam_class{k}.png"


# ------------------------------------------------------------------------------------------
# Issue 17 item 13: pickers that depend on the dataset follow it
# ------------------------------------------------------------------------------------------


def test_samples_dataset_switch_resets_size_and_model(env):
    runs = env["runs"]
    at = start()
    goto(at, "samples")
    at.selectbox(key="samples_dataset_flag").set_value("adrenalmnist3d").run()
    at.selectbox(key="samples_run").set_value(runs["adrenal"]).run()
    at.selectbox(key="samples_label").set_value(1).run()
    at.selectbox(key="samples_dataset_flag").set_value("retinamnist").run()
    assert not at.exception
    assert shown_label(at, "samples_dataset_size") == "28×28 px"
    assert at.selectbox(key="samples_run").value in (runs["retina"], runs["retina_aug"])
    assert at.selectbox(key="samples_run").value in shown_label(at, "samples_run")
    assert at.selectbox(key="samples_label").value == "all"  # class 1 is another finding here
    assert shown_label(at, "samples_label") == "All labels"
    at.selectbox(key="samples_dataset_flag").set_value("adrenalmnist3d").run()
    assert shown_label(at, "samples_dataset_size") == "28³ voxels"
    assert runs["adrenal"] in shown_label(at, "samples_run")


def test_experiments_dataset_switch_resets_run(env):
    runs = env["runs"]
    at = start()
    goto(at, "experiments", {"run": runs["retina_aug"]})
    assert at.selectbox(key="experiments_run").value == runs["retina_aug"]
    at.selectbox(key="experiments_dataset").set_value("adrenalmnist3d").run()
    assert at.selectbox(key="experiments_run").value == runs["adrenal"]
    assert runs["adrenal"] in shown_label(at, "experiments_run")
    at.selectbox(key="experiments_dataset").set_value("retinamnist").run()
    label = shown_label(at, "experiments_run")
    assert runs["retina"] in label or runs["retina_aug"] in label, label


# ------------------------------------------------------------------------------------------
# Issue 17 item 16: links keep their context
# ------------------------------------------------------------------------------------------


def test_gradcam_3d_viewer_link_keeps_sample_and_model(env):
    runs = env["runs"]
    at = start()
    goto(at, "gradcam", {"run": runs["adrenal"], "split": "val", "index": 3})
    (link,) = [p for p in at.get("page_link") if "3D viewer" in p.proto.label]
    query = dict(pair.split("=") for pair in link.proto.query_string.split("&"))
    assert query == {
        "dataset": "adrenalmnist3d",
        "size": "28",
        "split": "val",
        "index": "3",
        "run": runs["adrenal"],
    }
    goto(at, "volume", query)
    assert at.number_input(key="volume_index").value == 3
    assert at.radio(key="volume_split").value == "val"
    assert at.selectbox(key="volume_run").value == runs["adrenal"]
    assert "val sample #3" in "\n".join(i.value for i in at.info)


def test_finished_job_link_opens_that_run_on_experiments(env, monkeypatch):
    import streamlit as st

    from app import retrain_ui

    calls: list[dict] = []
    monkeypatch.setattr(st, "page_link", lambda *a, **kw: calls.append(kw))
    retrain_ui.run_link_ui("breastmnist-cnn2d-s0")
    assert calls and calls[0]["query_params"] == {"run": "breastmnist-cnn2d-s0"}


# ------------------------------------------------------------------------------------------
# Issue 17 item 19: slices are numbered from 1 on sliders and captions alike
# ------------------------------------------------------------------------------------------


def test_slice_sliders_and_captions_count_alike(env):
    at = start()
    goto(at, "volume", {"dataset": "adrenalmnist3d"})
    for axis in range(3):
        slider = at.slider(key=f"volume_slice_{axis}")
        assert slider.min == 1 and slider.max == 28
    at.slider(key="volume_slice_0").set_value(3).run()
    captions = [c.value for c in at.caption]
    assert "Axial (z) 3/28" in captions, captions
    at.slider(key="volume_slice_0").set_value(28).run()
    assert "Axial (z) 28/28" in [c.value for c in at.caption]

    goto(at, "gradcam", {"run": env["runs"]["adrenal"]})
    slider = at.slider(key="gradcam_slice")
    assert (slider.min, slider.max, slider.value) == (1, 28, 15)
    at.slider(key="gradcam_slice").set_value(7).run()
    captions = [c for img in at.image for c in img.captions]
    assert "Overlay · axial slice 7/28" in captions, captions


def test_bad_link_values_fall_back_to_defaults(env):
    """A hand-edited or stale link never breaks a page: impossible values become defaults."""
    runs = env["runs"]
    at = start()
    goto(at, "gradcam", {"run": "no-such-run", "split": "holdout", "index": "99999"})
    assert at.selectbox(key="gradcam_run").index == 0  # the default run
    assert at.radio(key="gradcam_split").value == "test"
    assert at.number_input(key="gradcam_index").value == 0
    goto(at, "volume", {"dataset": "adrenalmnist3d", "size": "65", "index": "-3", "split": "x"})
    assert at.selectbox(key="volume_dataset_size").value == 28
    assert at.number_input(key="volume_index").value == 0
    assert at.radio(key="volume_split").value == "test"
    goto(at, "samples", {"dataset": "adrenalmnist3d", "index": "abc", "run": runs["retina"]})
    assert at.selectbox(key="samples_run").value == runs["adrenal"]  # a retina run is no choice
