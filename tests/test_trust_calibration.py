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


def _calibrated_sample(n, t_true, seed=0, bias=(0.0, 0.0, 0.0, 0.0)):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3, size=(n, 4))
    p = softmax(z / t_true + np.asarray(bias), axis=1)
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


PRIOR_SHIFT = (0.0, 1.5, -1.0, 0.5)  # the labels' class priors differ from the scores'


def test_bias_temperature_fit_recovers_temperature_and_offsets():
    z, y = _calibrated_sample(6000, 1.8, seed=5, bias=PRIOR_SHIFT)
    t, b = calibration.fit_bias_temperature(z, y)
    assert t == pytest.approx(1.8, rel=0.12)
    np.testing.assert_allclose(b, PRIOR_SHIFT, atol=0.2)
    assert b[0] == 0.0  # softmax ignores a common shift: the first class anchors the rest


def test_calibrator_choice_on_val_cross_validation():
    # prior shift: one temperature cannot fix it, the offsets win on held-out folds
    z, y = _calibrated_sample(1500, 1.5, seed=6, bias=PRIOR_SHIFT)
    cal = calibration.fit_calibrator(z, y)
    assert cal["method"] == "temperature_bias"
    assert cal["cv_nll"]["temperature_bias"] < cal["cv_nll"]["temperature"]
    z_test, y_test = _calibrated_sample(1500, 1.5, seed=7, bias=PRIOR_SHIFT)
    # on fresh cases from the same source the chosen map fits better (held-out NLL)
    shifted = calibration.nll(z_test, y_test, cal["temperature"], cal["bias"])
    t_only = calibration.nll(z_test, y_test, calibration.fit_temperature(z, y))
    assert shifted < t_only - 0.02
    # no prior shift: the extra parameters only fit noise, and the one-SE rule keeps plain
    # temperature in most draws (a noise gain beats one SE in roughly 1 of 6)
    kept = []
    for seed in range(8, 20):
        z, y = _calibrated_sample(1500, 1.5, seed=seed)
        cal = calibration.fit_calibrator(z, y)
        kept.append(cal["method"] == "temperature")
        if kept[-1]:
            assert cal["bias"] == [0.0] * 4
            assert cal["temperature"] == pytest.approx(calibration.fit_temperature(z, y))
    assert sum(kept) >= 9, kept


def test_report_applies_the_chosen_map_to_test():
    z_val, y_val = _calibrated_sample(1500, 2.0, seed=9, bias=PRIOR_SHIFT)
    z_test, y_test = _calibrated_sample(1500, 2.0, seed=10, bias=PRIOR_SHIFT)
    rep = calibration.calibration_report(z_val, y_val, z_test, y_test)
    expected = calibration.scaled_proba(z_test, rep["temperature"], rep["bias"])
    assert rep["test"]["scaled"]["ece"] == pytest.approx(calibration.ece(expected, y_test))
    assert rep["method"] == "temperature_bias"
    assert rep["test"]["scaled"]["ece"] <= rep["test_ece_bound_95"]


def test_calibrator_falls_back_to_plain_folds_when_a_class_is_rare():
    z, y = _calibrated_sample(200, 1.0, seed=11)
    y[:] = np.where(y == 3, 0, y)
    y[0] = 3  # one case of class 3: stratified 5-fold is impossible
    cal = calibration.fit_calibrator(z, y)
    assert cal["method"] in calibration.METHODS and len(cal["bias"]) == 4
