"""app.trust_ui against a stub predictor: the band, the refer reason, and the OOD warning drawn
before (and instead of) any grade."""

from __future__ import annotations

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from app import trust_figures, trust_ui

GRADES = ["No DR", "Mild", "Moderate", "Severe NPDR", "Proliferative DR"]


class TrustNotFittedError(RuntimeError):
    """Same name as core.trust.predictor's: assess_one recognises it by name."""


class StubPredictor:
    """The slice of core.trust's Predictor the UI uses, with fixed answers."""

    def __init__(self, logits, ood=False, refer=False, trust=None, members=1, fitted=True):
        self.logits = [np.asarray(z, dtype=float) for z in logits]
        self.members = list(range(members))
        self.temperature = 2.0
        self.ood, self.refer_flag, self.fitted = ood, refer, fitted
        self.trust = (
            trust
            if trust is not None
            else (
                {
                    "calibration": {"val": {"scaled": {"ece": 0.05}}},
                    "refer": {"threshold": 0.4, "target_accuracy": 0.7},
                }
                if fitted
                else {}
            )
        )

    def raw(self, x):
        return {"logits": [z[None] for z in self.logits]}

    def predict_proba(self, x):
        from scipy.special import softmax

        mean = np.mean([softmax(z / self.temperature) for z in self.logits], axis=0)
        return mean[None]

    def assess(self, x):
        if not self.fitted:
            raise TrustNotFittedError("no calibration.json")
        p = self.predict_proba(x)
        return {
            "proba": p,
            "uncertainty": 1 - p.max(axis=1),
            "ood_score": np.array([3.0 if self.ood else 0.2]),
            "is_ood": np.array([self.ood]),
            "refer": np.array([self.refer_flag or self.ood]),
        }


X = np.zeros((28, 28, 3), dtype=np.float32)


def test_single_model_band_is_plus_minus_val_ece():
    res = trust_ui.assess_one(StubPredictor([[2.0, 1.0, 0.0, 0.0, 0.0]]), X)
    lo, hi = res["band"]
    assert res["band_kind"] == "single" and res["fitted"]
    assert hi - res["proba"] == pytest.approx(np.full(5, 0.05))
    assert res["proba"] - lo == pytest.approx(np.full(5, 0.05))


def test_ensemble_band_spans_the_members():
    from scipy.special import softmax

    logits = [[4.0, 0.0, 0.0, 0.0, 0.0], [0.0, 4.0, 0.0, 0.0, 0.0]]
    res = trust_ui.assess_one(StubPredictor(logits, members=2), X)
    each = np.stack([softmax(np.asarray(z) / 2.0) for z in logits])
    assert res["band_kind"] == "ensemble"
    assert res["band"][0] == pytest.approx(each.min(0))
    assert res["band"][1] == pytest.approx(each.max(0))
    assert np.all(res["band"][0] <= res["proba"]) and np.all(res["proba"] <= res["band"][1])


def test_unfitted_run_falls_back_to_raw_probabilities():
    res = trust_ui.assess_one(StubPredictor([[1.0, 0, 0, 0, 0]], fitted=False), X)
    assert not res["fitted"] and not res["is_ood"] and res["band"] is None
    assert res["proba"].sum() == pytest.approx(1.0)


def test_refer_reason_names_the_cause():
    res = trust_ui.assess_one(StubPredictor([[0.1, 0, 0, 0, 0]], refer=True), X)
    assert "uncertainty" in trust_ui.refer_reason(res) and "70%" in trust_ui.refer_reason(res)
    ood = trust_ui.assess_one(StubPredictor([[0.1, 0, 0, 0, 0]], ood=True), X)
    assert "does not look like" in trust_ui.refer_reason(ood)
    calm = trust_ui.assess_one(StubPredictor([[9.0, 0, 0, 0, 0]]), X)
    assert trust_ui.refer_reason(calm) == ""


SVG = "{http://www.w3.org/2000/svg}"


def parse_svg(markup: str):
    """The chart's SVG as an ElementTree element (fails if it is not well-formed XML)."""
    import xml.etree.ElementTree as ET

    return ET.fromstring(markup)


def svg_charts(at: AppTest) -> list:
    """Every inline SVG chart the page drew (the trust panel's probability bars)."""
    return [parse_svg(m.value) for m in at.markdown if m.value.startswith("<svg")]


def _svg_texts(root) -> list[str]:
    return [t.text or "" for t in root.iter(f"{SVG}text")]


def test_chart_draws_the_band_as_whiskers_and_names_every_value():
    svg = trust_figures.calibrated_probability_chart(
        np.array([0.5, 0.3, 0.2]),
        ["a", "b", "<c>"],
        [1],
        band=(np.array([0.4, 0.3, 0.0]), np.array([0.7, 0.35, 0.2])),
    )
    root = parse_svg(svg)  # labels are escaped: "<c>" does not break the markup
    bars = {int(r.get("data-class")): r for r in root.iter(f"{SVG}rect")}
    assert bars[1].get("fill") == "#2e7d32" and bars[0].get("fill") != "#2e7d32"
    # bar widths are proportional to the probabilities
    widths = np.array([float(bars[i].get("width")) for i in range(3)])
    assert widths / widths[0] == pytest.approx([1.0, 0.6, 0.4])
    x0, scale = float(bars[0].get("x")), widths[0] / 0.5
    for i, (lo, hi) in enumerate([(0.4, 0.7), (0.3, 0.35), (0.0, 0.2)]):
        (path,) = [p for p in root.iter(f"{SVG}path") if p.get("data-band") == str(i)]
        xs = [float(v.split(",")[0]) for v in path.get("d")[1:].split("H")[:1]]
        xs.append(float(path.get("d").split("H")[1].split("M")[0]))
        assert xs == pytest.approx([x0 + scale * lo, x0 + scale * hi], abs=0.1)
    texts = _svg_texts(root)
    assert {"50.0%", "30.0%", "20.0%", "2: <c>", "calibrated probability"} <= set(texts)
    spoken = root.find(f"{SVG}title").text
    assert "1: b: 30.0% (band 30.0% to 35.0%)" in spoken  # a screen reader hears the values
    no_band = parse_svg(trust_figures.calibrated_probability_chart(np.array([1.0, 0.0]), "xy"))
    assert not list(no_band.iter(f"{SVG}path"))


def _panel(kwargs: dict) -> AppTest:
    """The trust panel as an AppTest script.

    The default AppTest timeout (3 s) is shorter than a cold Plotly import on a
    busy CI machine, which made these tests fail under the full suite only.
    """
    return AppTest.from_function(_panel_app, kwargs=kwargs, default_timeout=60)


def _panel_app(ood: bool, refer: bool, rule_grade=None, fitted: bool = True) -> None:
    import numpy as np
    from test_trust_ui import GRADES, StubPredictor

    from app import trust_ui

    pred = StubPredictor([[0.5, 0.2, 3.0, 0.1, 0.0]], ood=ood, refer=refer, fitted=fitted)
    res = trust_ui.assess_one(pred, np.zeros((28, 28, 3), dtype=np.float32))
    trust_ui.prediction_panel_ui(res, GRADES, "retinamnist", key="t", rule_grade=rule_grade)


def test_foreign_image_warning_comes_before_any_grade():
    at = _panel({"ood": True, "refer": True}).run()
    assert not at.exception
    assert "does not look like a retinal fundus photograph" in at.error[0].value
    # the grade sits only inside the collapsed "show anyway" expander, after the warning
    assert at.expander[0].label.startswith("Show the model's output anyway")
    inside = " ".join(m.value for m in at.expander[0].markdown)
    assert "predicted: **Moderate** (" in inside and "Refer to a specialist" in inside
    outside = [m.value for m in at.main.markdown if m not in at.expander[0].markdown]
    assert not any("predicted:" in v for v in outside)


def test_in_distribution_case_shows_grade_and_badge():
    at = _panel({"ood": False, "refer": True}).run()
    assert not at.exception and not at.error and not at.expander
    text = " ".join(m.value for m in at.markdown)
    assert "Refer to a specialist" in text and "uncertainty" in text
    assert "predicted: **Moderate** (" in text
    calm = _panel({"ood": False, "refer": False}).run()
    assert "reliable range" in " ".join(m.value for m in calm.markdown)
    # every on-screen term carries a help text
    assert all(m.help for m in calm.markdown if not m.value.startswith("<svg"))


@pytest.mark.parametrize(
    "fitted, axis, title",
    [
        (True, "calibrated probability", "Calibrated probabilities"),
        (False, "probability (not calibrated)", "Raw probabilities"),
    ],
)
def test_chart_calls_probabilities_calibrated_only_when_they_are(fitted, axis, title):
    """A run without a fitted calibrator shows its raw softmax: neither the axis nor the
    title may call it calibrated (it was, on the axis, before this test)."""
    at = _panel({"ood": False, "refer": False, "fitted": fitted}).run()
    assert not at.exception
    (chart,) = svg_charts(at)
    texts = _svg_texts(chart)
    assert axis in texts and not any("calibrated probability" in t for t in texts if t != axis)
    assert texts[0].startswith(title)
    assert not at.get("plotly_chart")  # the panel no longer costs the browser Plotly's script
    text = " ".join(m.value for m in at.markdown)
    assert (", calibrated)" in text) is fitted and (", not calibrated)" in text) is not fitted


def test_val_chosen_rule_grade_shown_only_when_it_differs():
    differs = _panel({"ood": False, "refer": False, "rule_grade": (3, "cut points")}).run()
    text = " ".join(m.value for m in differs.markdown)
    assert "validation-chosen rule (cut points): **Severe NPDR**" in text
    same = _panel({"ood": False, "refer": False, "rule_grade": (2, "cut points")}).run()
    assert "validation-chosen rule" not in " ".join(m.value for m in same.markdown)


def test_explanation_heading_uses_the_panels_probability_and_none_when_foreign():
    """The Explanations heading gives the class the same number as the trust panel above it,
    and none at all for an image the panel flagged as unlike the training data."""
    from app.explain_ui import evidence_heading

    raw = np.array([0.1, 0.2, 0.7])
    calibrated = {"is_ood": False, "fitted": True, "proba": np.array([0.2, 0.3, 0.5])}
    assert evidence_heading(2, "moderate", 2, raw, calibrated) == (
        "Evidence for class 2: moderate (50.0% calibrated) · the predicted class"
    )
    foreign = {**calibrated, "is_ood": True}
    heading = evidence_heading(1, "mild", 2, raw, foreign)
    assert "%" not in heading and "no probability" in heading
    assert heading.endswith("· **not** the predicted class")
    # no panel (multi-label datasets): the raw output, not called calibrated
    assert evidence_heading(2, "moderate", 2, raw, None).startswith(
        "Evidence for class 2: moderate (70.0%)"
    )
