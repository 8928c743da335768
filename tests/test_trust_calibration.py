"""Calibration maths on synthetic data with known answers (no TensorFlow)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from core.trust import calibration


def test_ece_and_mce_of_a_hand_built_set():
    # 10 cases at confidence 0.9 of which 6 correct (gap 0.3), 10 at 0.6 of which 6 (gap 0)
    proba = np.array([[0.9, 0.1]] * 10 + [[0.6, 0.4]] * 10)
    y = np.array([0] * 6 + [1] * 4 + [0] * 6 + [1] * 4)
    rel = calibration.reliability(proba, y)
    assert rel["ece"] == pytest.approx(0.5 * 0.3 + 0.5 * 0.0)
    assert rel["mce"] == pytest.approx(0.3)
    assert [b["count"] for b in rel["bins"]] == [10, 10]
    assert rel["bins"][1]["accuracy"] == pytest.approx(0.6)
    assert rel["bins"][1]["confidence"] == pytest.approx(0.9)


def test_ece_zero_when_every_prediction_is_right_and_certain():
    proba = np.eye(3)[[0, 1, 2, 1]]
    assert calibration.ece(proba, [0, 1, 2, 1]) == pytest.approx(0.0)


def _calibrated_sample(n, t_true, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3, size=(n, 4))
    p = softmax(z / t_true, axis=1)
    y = np.array([rng.choice(4, p=row) for row in p])
    return z, y


@pytest.mark.parametrize("t_true", [0.5, 1.0, 2.5])
def test_temperature_fit_recovers_the_temperature_that_generated_the_labels(t_true):
    z, y = _calibrated_sample(4000, t_true)
    assert calibration.fit_temperature(z, y) == pytest.approx(t_true, rel=0.12)


def test_scaling_an_overconfident_model_lowers_ece_on_fresh_data():
    z_val, y_val = _calibrated_sample(2000, 2.0, seed=1)
    z_test, y_test = _calibrated_sample(2000, 2.0, seed=3)
    rep = calibration.calibration_report(z_val, y_val, z_test, y_test)
    assert rep["test"]["raw"]["ece"] > 0.08  # scores used as if T were 1: over-confident
    assert rep["test"]["scaled"]["ece"] < rep["test"]["raw"]["ece"] / 2
    assert rep["test"]["scaled"]["ece"] <= rep["test_ece_bound_95"]


def test_simulated_bound_holds_for_a_perfectly_calibrated_model_about_95_percent_of_the_time():
    rng = np.random.default_rng(3)
    conf = rng.uniform(0.3, 1.0, size=400)
    bound = calibration.simulated_ece_bound(conf, n_sims=1000, seed=0)
    within = []
    for _ in range(400):
        correct = rng.random(400) < conf
        within.append(calibration.reliability_from_confidence(conf, correct)["ece"] <= bound)
    assert 0.91 <= np.mean(within) <= 0.99
    assert 0.02 < bound < 0.1  # the order of magnitude for 400 cases


def test_fit_temperature_rejects_mismatched_input():
    with pytest.raises(ValueError, match="N labels"):
        calibration.fit_temperature(np.zeros((3, 2)), [0, 1])
