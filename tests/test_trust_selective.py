"""Risk–coverage and the refer threshold on hand-built cases (no TensorFlow)."""

from __future__ import annotations

import numpy as np
import pytest

from core.trust import selective


def test_risk_coverage_keeps_the_most_certain_first():
    unc = np.array([0.1, 0.2, 0.3, 0.4])
    correct = np.array([1, 1, 0, 1])
    curve = selective.risk_coverage(unc, correct)
    np.testing.assert_allclose(curve["coverage"], [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(curve["accuracy"], [1.0, 1.0, 2 / 3, 0.75])
    np.testing.assert_allclose(curve["threshold"], unc)
    assert selective.aurc(curve) == pytest.approx(0.25 * (0 + 0 + 1 / 3 + 0.25))


def test_ties_are_kept_or_referred_together():
    curve = selective.risk_coverage([0.2, 0.2, 0.5], [1, 0, 1])
    np.testing.assert_allclose(curve["coverage"], [2 / 3, 1.0])
    np.testing.assert_allclose(curve["accuracy"], [0.5, 2 / 3])


def test_choose_threshold_takes_the_largest_coverage_reaching_the_target():
    unc = np.arange(10) / 10
    correct = np.array([1, 1, 1, 1, 1, 1, 1, 0, 0, 0])
    chosen = selective.choose_threshold(unc, correct, 0.8)
    # retaining 8 cases gives 7/8 = 0.875; 9 gives 7/9 = 0.78 < 0.8
    assert chosen["coverage"] == pytest.approx(0.8)
    assert chosen["threshold"] == pytest.approx(0.7)
    assert chosen["reached"]
    applied = selective.apply_threshold(unc, correct, chosen["threshold"])
    assert applied["accuracy"] == pytest.approx(7 / 8) and applied["n_retained"] == 8


def test_unreachable_target_is_reported():
    chosen = selective.choose_threshold([0.1, 0.2], [0, 1], 0.99)
    assert not chosen["reached"]
    assert chosen["coverage"] == pytest.approx(0.5)


def test_curve_to_json_thins_to_at_most_max_points():
    curve = selective.risk_coverage(np.random.default_rng(0).random(500), np.ones(500))
    thin = selective.curve_to_json(curve, max_points=11)
    assert len(thin["coverage"]) == 11 and thin["coverage"][-1] == 1.0
