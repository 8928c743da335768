"""Case review with the trust predictor: the worklist ordered by refer flag / uncertainty,
calibrated probabilities on screen, and a run without ``calibration.json`` still opening.

Random-weight models on small synthetic MedMNIST files (``app_helpers``); one run is fitted
with ``core.trust.fit`` (temperature, refer threshold, OOD guard) like a shipped run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from app_helpers import make_run, synthetic_environment
from conftest import write_synthetic
from streamlit.testing.v1 import AppTest

from core import data, registry
from core.reviews import order_cases

ROOT = Path(__file__).resolve().parents[1]
HOME = str(ROOT / "app" / "Home.py")
PAGE = "../pages/case_review.py"
FITTED = "retina-fitted"
RAW = "retina-raw"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from core.trust import fit

    tmp = tmp_path_factory.mktemp("review_trust")
    with synthetic_environment(tmp) as values:
        # the retina OOD guard is measured on these foreign images (core.trust.foreign)
        for seed, flag in enumerate(("pneumoniamnist", "breastmnist")):
            write_synthetic(Path(values["MEDMNIST_ROOT"]), flag, seed=9 + seed)
        reg = Path(values["TRAINED_MODELS_DIR"])
        make_run(reg, "retinamnist", "cnn2d", seed=3, name=FITTED)
        make_run(reg, "retinamnist", "cnn2d", seed=4, name=RAW)
        fit.fit(reg / FITTED)
        yield {**values, "registry": reg}


@pytest.fixture()
def db(env, tmp_path, monkeypatch) -> Path:
    path = tmp_path / "reviews.sqlite"
    monkeypatch.setenv("REVIEWS_DB", str(path))
    return path


@pytest.fixture(autouse=True)
def _reset_address():
    yield
    st.config.set_option("server.address", None)


def open_review(run: str) -> AppTest:
    st.cache_data.clear()
    at = AppTest.from_file(HOME, default_timeout=180)
    at.run()
    at.switch_page(PAGE)
    st.config.set_option("server.address", "0.0.0.0")  # a clinician: no ground truth
    at.run()
    at.text_input(key="review_name_input").input("Dr Test")
    at.button(key="FormSubmitter:review_name_form-Start reviewing").click().run()
    at.sidebar.selectbox(key="review_run").set_value(run).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def shown_index(at: AppTest) -> int:
    return int(at.subheader[0].value.rsplit("#", 1)[1])


def walk(at: AppTest, n: int) -> list[int]:
    """The sample indices of the first ``n`` cases, stepping with Next."""
    seen = [shown_index(at)]
    for _ in range(n - 1):
        at.button(key="review_next").click().run()
        assert not at.exception, [e.value for e in at.exception]
        seen.append(shown_index(at))
    return seen


def test_fitted_run_orders_by_refer_and_uncertainty_with_calibrated_probabilities(env, db):
    pred = registry.load_predictor(env["registry"] / FITTED)
    assert pred.trust is not None
    x, _ = data.load_split("retinamnist", "test")
    out = pred.assess(x)
    predicted = out["proba"].argmax(axis=1)
    by_trust = order_cases(predicted, uncertainty=out["uncertainty"], refer=out["refer"])
    by_class = order_cases(predicted)
    assert list(by_trust[:4]) != list(by_class[:4])  # else this test could not tell them apart

    at = open_review(FITTED)
    assert walk(at, 4) == [int(i) for i in by_trust[:4]]
    # the probability on screen is the calibrated one, and the help text says so
    i = shown_index(at)
    metric = at.metric[0]
    assert metric.proto.delta == f"calibrated probability {out['proba'][i].max():.1%}"
    assert "calibrated probability" in metric.proto.help
    assert "temperature scaling" in metric.proto.help
    assert not any("no trust values" in m.value for m in at.info)
    # a referred case says so
    first = open_review(FITTED)
    referred = any("Referred to a specialist" in m.value for m in first.warning)
    assert referred == bool(out["refer"][shown_index(first)])


def test_run_without_calibration_opens_with_raw_probabilities(env, db):
    assert not (env["registry"] / RAW / "calibration.json").exists()
    pred = registry.load_predictor(env["registry"] / RAW)
    x, _ = data.load_split("retinamnist", "test")
    raw = pred.predict_proba(x)
    model = registry.load_model(env["registry"] / RAW)
    np.testing.assert_allclose(raw, model.predict(x, verbose=0), atol=1e-5)  # T = 1

    at = open_review(RAW)
    assert any("no trust values yet" in m.value and "1. " in m.value for m in at.info)
    assert not at.warning  # no refer flags without a threshold
    expected = order_cases(raw.argmax(axis=1), uncertainty=1 - raw.max(axis=1))
    assert shown_index(at) == int(expected[0])
    metric = at.metric[0]
    assert metric.proto.delta == f"raw probability {raw[expected[0]].max():.1%}"
    assert "not calibrated" in metric.proto.help
    # a verdict still saves on the raw run
    at.button(key="review_agree").click().run()
    assert not at.exception
    assert at.get("progress")[0].proto.text.startswith("1 of 12 reviewed")
