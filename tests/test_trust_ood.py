"""OOD detectors and thresholds on synthetic data with known answers (no TensorFlow)."""

from __future__ import annotations

import numpy as np
import pytest

from core.trust import foreign, ood


def test_threshold_is_the_conformal_quantile():
    scores = np.arange(100, dtype=float)
    thr = ood.threshold_for(scores, 0.05)
    assert thr == 95.0  # the ceil(0.95 * 101) = 96th smallest
    assert ood.flag_rate(scores, thr) == pytest.approx(0.04)
    assert ood.flag_rate(np.arange(7.0), ood.threshold_for(np.arange(7.0), 0.05)) == 0.0


def test_threshold_keeps_new_false_alarms_at_the_rate_on_average():
    """Simulated val/test draws of one distribution: the mean false-alarm rate on new images
    stays at or under 5 % (the plain empirical quantile gives about 5.8 % at n = 120)."""
    rng = np.random.default_rng(0)
    rates, plain = [], []
    for _ in range(4000):
        val, test = rng.normal(size=120), rng.normal(size=400)
        rates.append(ood.flag_rate(test, ood.threshold_for(val, 0.05)))
        plain.append(ood.flag_rate(test, np.sort(val)[120 - 1 - 6]))  # floor(0.05 * 120) = 6
    assert np.mean(rates) <= 0.0505  # E = 6 / 121 = 0.0496; the margin is sampling error
    assert np.mean(plain) > 0.055  # what the old rule promised and did not keep


def test_mahalanobis_separates_a_shifted_cluster_that_energy_cannot_see():
    rng = np.random.default_rng(0)
    cov = np.diag([1.0, 0.01])  # narrow along the second axis: shared covariance matters
    train = np.r_[
        rng.multivariate_normal([0, 0], cov, 500), rng.multivariate_normal([4, 0], cov, 500)
    ]
    labels = np.r_[np.zeros(500), np.ones(500)]
    stats = ood.fit_mahalanobis(train, labels)
    np.testing.assert_allclose(stats["means"], [[0, 0], [4, 0]], atol=0.1)
    val = rng.multivariate_normal([0, 0], cov, 400)
    shifted = rng.multivariate_normal([2, 0.5], cov, 200)  # between the means, off-axis
    thr = ood.threshold_for(ood.mahalanobis_score(val, stats))
    assert ood.flag_rate(ood.mahalanobis_score(shifted, stats), thr) > 0.95
    # an Euclidean distance would rank (2, 0.5) as closer than in-distribution spread along x
    assert (
        ood.auroc(ood.mahalanobis_score(val, stats), ood.mahalanobis_score(shifted, stats)) > 0.99
    )


def test_energy_and_msp_rank_flat_logits_as_foreign():
    sharp = np.array([[8.0, 0.0, 0.0]])
    flat = np.array([[0.1, 0.0, 0.05]])
    assert ood.energy_score(flat)[0] > ood.energy_score(sharp)[0]
    assert ood.msp_score(flat)[0] > ood.msp_score(sharp)[0]


def test_choose_detector_prefers_the_one_that_catches_every_foreign_set():
    rng = np.random.default_rng(1)
    val_in = {"a": rng.normal(0, 1, 200), "b": rng.normal(0, 1, 200)}
    val_foreign = {
        "a": {"x": rng.normal(5, 1, 100), "y": rng.normal(0, 1, 100)},  # misses y
        "b": {"x": rng.normal(4, 1, 100), "y": rng.normal(4, 1, 100)},
    }
    choice = ood.choose_detector(val_in, val_foreign)
    assert choice["detector"] == "b"
    assert choice["table"]["a"]["worst"] < 0.2 < 0.8 < choice["table"]["b"]["worst"]


def test_input_statistics_see_colour_and_blur():
    rng = np.random.default_rng(2)
    rgb = rng.random((4, 28, 28, 3)).astype(np.float32)
    grey = foreign.conform(rgb.mean(axis=-1, keepdims=True), (28, 28, 3))
    s_rgb, s_grey = ood.input_statistics(rgb), ood.input_statistics(grey)
    sat = 6  # after 3 means and 3 stds
    assert (s_grey[:, sat] == 0).all() and (s_rgb[:, sat] > 0.1).all()
    blurred = foreign.synthetic("blurred", rgb)
    assert (ood.input_statistics(blurred)[:, sat + 1] < s_rgb[:, sat + 1] / 3).all()


def test_conform_converts_grey_to_rgb_and_resizes_2d_and_3d():
    assert foreign.conform(np.zeros((2, 28, 28, 1)), (32, 32, 3)).shape == (2, 32, 32, 3)
    assert foreign.conform(np.zeros((1, 14, 14, 14, 1)), (28, 28, 28, 1)).shape == (
        1,
        28,
        28,
        28,
        1,
    )
    with pytest.raises(ValueError, match="3D volumes"):
        foreign.conform(np.zeros((1, 28, 28, 1)), (28, 28, 28, 1))
