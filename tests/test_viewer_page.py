"""AppTest of the 3D viewer's slice views: window/level on CT data, stepping slices and cases.

Data are synthetic MedMNIST files (conftest ``synthetic_root``): NoduleMNIST3D is not stored
locally, so a file of its exact layout (28³ uint8 CT-like grey levels) stands in for it.
Clicks on the views need a browser: tests/test_browser_viewer.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import viewer as cv

HOME = str(Path(__file__).resolve().parents[1] / "app" / "Home.py")


@pytest.fixture
def env(synthetic_root, tmp_path, monkeypatch):
    monkeypatch.setenv("JOBS_WORKER_AUTOSTART", "0")
    monkeypatch.setenv("REVIEWS_DB", str(tmp_path / "reviews.sqlite"))
    return synthetic_root


def open_volume(query: dict[str, str]) -> AppTest:
    import streamlit as st

    st.cache_data.clear()
    at = AppTest.from_file(HOME, default_timeout=180)
    at.run()
    for key, value in query.items():
        at.query_params[key] = value
    at.switch_page("../pages/volume.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def view_captions(at: AppTest) -> list[str]:
    names = [p.name for p in cv.PLANES]
    return [c for c in captions(at) if any(c.startswith(n + " ") for n in names)]


def test_ct_dataset_offers_window_presets_that_say_what_they_do(env):
    at = open_volume({"dataset": "nodulemnist3d", "index": "2"})
    assert "CT intensity" in "\n".join(i.value for i in at.info)
    window = at.selectbox(key="volume_window")
    assert window.options == [*cv.WINDOW_PRESETS, "Custom"]
    assert window.value == "Full range (as stored)"
    assert any("every stored grey level as it is" in c for c in captions(at))
    window.set_value("Lung").run()
    assert any(c.startswith("**Lung**: the darkest half (0–128") for c in captions(at))
    assert "not Hounsfield windows" in window.help
    at.selectbox(key="volume_window").set_value("Custom").run()
    at.slider(key="volume_level").set_value(100).run()
    at.slider(key="volume_width").set_value(40).run()
    assert any("Stored grey levels 80–120 are spread" in c for c in captions(at))
    assert not at.exception
    assert view_captions(at) == ["Axial (z) 15/28", "Coronal (y) 15/28", "Sagittal (x) 15/28"]


def test_mask_dataset_says_so_and_has_no_window(env):
    at = open_volume({"dataset": "adrenalmnist3d"})
    assert "binary shape mask" in "\n".join(i.value for i in at.info)
    assert "volume_window" not in [s.key for s in at.selectbox]
    assert any("no window/level to set" in c for c in captions(at))


def test_step_buttons_move_the_active_view_and_stop_at_the_ends(env):
    at = open_volume({"dataset": "nodulemnist3d"})
    at.button(key="volume_next_slice").click().run()
    assert at.slider(key="volume_slice_0").value == 16
    assert "Axial (z) 16/28" in view_captions(at)
    at.radio(key="volume_plane").set_value(2).run()
    at.button(key="volume_prev_slice").click().run()
    assert at.slider(key="volume_slice_2").value == 14
    assert view_captions(at) == ["Axial (z) 16/28", "Coronal (y) 15/28", "Sagittal (x) 14/28"]
    at.slider(key="volume_slice_2").set_value(28).run()
    at.button(key="volume_next_slice").click().run()
    assert at.slider(key="volume_slice_2").value == 28  # the last slice stays the last
    assert not at.exception


def test_case_buttons_step_through_the_split(env):
    at = open_volume({"dataset": "nodulemnist3d", "split": "test", "index": "0"})
    assert at.button(key="volume_prev_case").disabled
    at.button(key="volume_next_case").click().run()
    assert at.number_input(key="volume_index").value == 1
    assert "test sample #1" in "\n".join(i.value for i in at.info)
    assert any("Case 2 of 12" in c for c in captions(at))
    at.slider(key="volume_slice_1").set_value(5).run()
    at.button(key="volume_next_case").click().run()  # the crosshair stays where it was
    assert at.number_input(key="volume_index").value == 2
    assert at.slider(key="volume_slice_1").value == 5
    at.button(key="volume_prev_case").click().run()
    assert at.number_input(key="volume_index").value == 1
    assert not at.exception


def test_the_views_explain_their_letters_and_keys(env):
    at = open_volume({"dataset": "nodulemnist3d"})
    text = "\n".join(captions(at))
    assert "A/P anterior/posterior, R/L patient's right/left, S/I superior/inferior" in text
    assert "MedMNIST and NumPy files store no orientation" in text
    assert "J / K previous / next slice" in text and "P / N previous / next case" in text
