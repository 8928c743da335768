"""benchmarks.calibration_shift on synthetic scores with known temperatures (no TensorFlow)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import softmax

from benchmarks import calibration_shift as cs
from core.trust import calibration


def _scores(t_true: float, n: int, seed: int, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Scores whose NLL-optimal temperature is ``t_true``: labels are drawn from
    softmax(z / t_true), so dividing the scores by t_true recovers the true probabilities."""
    rng = np.random.default_rng(seed)
    calibrated = rng.normal(0.0, 2.0, (n, k))
    p = softmax(calibrated, axis=1)
    y = np.array([rng.choice(k, p=row) for row in p])
    return calibrated * t_true, y


@pytest.mark.parametrize("t_true", [0.6, 1.7])
def test_interval_recovers_a_known_temperature(t_true: float) -> None:
    z, y = _scores(t_true, 2000, seed=1)
    lo, hi = cs.temperature_interval(z, y, n_resamples=200)
    assert lo < t_true < hi
    assert hi - lo < 0.25 * t_true  # 2 000 cases pin T down
    small_lo, small_hi = cs.temperature_interval(z[:120], y[:120], n_resamples=200)
    assert small_hi - small_lo > hi - lo  # 120 cases leave it looser


def test_interval_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="need scores"):
        cs.temperature_interval(np.zeros((3, 2)), np.zeros(4))


def test_shift_study_sees_val_and_test_ask_for_opposite_temperatures() -> None:
    val, test = _scores(0.5, 1500, seed=2), _scores(2.0, 1500, seed=3)
    shipped = {
        "dataset": "retinamnist",
        "temperature": calibration.fit_temperature(*val),  # as core.trust ships it
        "bias": [0.0] * 5,
        "calibrator": "temperature",
        "calibration": {
            "test": {"raw": {"ece": 0.2}, "scaled": {"ece": 0.3}},
            "test_ece_bound_95": 0.05,
        },
    }
    s = cs.shift_study("m", {"val": val, "test": test}, shipped, n_resamples=100)
    assert s["t_val"] == pytest.approx(0.5, rel=0.15)
    assert s["t_test"] == pytest.approx(2.0, rel=0.15)
    assert not s["same_direction"] and not s["t_test_inside"]
    e = s["test_ece"]
    # scaling test with val's sharpening T makes it worse; test's own T makes it better
    assert e["t_val"] > e["raw"] > e["t_test"]
    assert e["shipped"] == pytest.approx(e["t_val"])
    assert s["goal_met"] is False and s["n"] == {"val": 1500, "test": 1500}


def test_cli_names_an_unknown_run(tmp_path, capsys) -> None:
    assert cs.main(["nope", "--registry", str(tmp_path), "--out", str(tmp_path / "o.json")]) == 2
    assert "no fitted run or ensemble named nope" in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()
