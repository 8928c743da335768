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


def test_confident_threshold_keeps_the_rate_for_nine_in_ten_validation_draws():
    """Normal scores: a threshold's true false-alarm rate is norm.sf(threshold). With
    confidence 0.9 at most ~10 % of validation draws ship a guard above 5 %; the average-rate
    conformal quantile ships one above 5 % about 40 % of the time (n = 120)."""
    from scipy.stats import norm

    rng = np.random.default_rng(3)
    draws = [rng.normal(size=120) for _ in range(3000)]
    pac = np.array([norm.sf(ood.threshold_for(v, 0.05, confidence=0.9)) for v in draws])
    avg = np.array([norm.sf(ood.threshold_for(v, 0.05)) for v in draws])
    assert (pac > 0.05).mean() <= 0.11  # 0.1 plus Monte Carlo error (sd 0.005)
    assert (avg > 0.05).mean() > 0.3
    assert 0.01 < pac.mean() < avg.mean() <= 0.0505
    # known order statistics: n = 100 takes the 99th smallest (Beta(2, 99) > 0.05 w.p. 0.037;
    # the 98th would be Beta(3, 98): 0.118 > 0.1)
    assert ood.threshold_for(np.arange(100.0), 0.05, confidence=0.9) == 98.0
    # too few scores to promise it: the largest score, nothing seen so far flagged
    assert ood.threshold_for(np.arange(10.0), 0.05, confidence=0.9) == 9.0
    with pytest.raises(ValueError, match="confidence"):
        ood.threshold_for(np.arange(10.0), 0.05, confidence=1.0)


def _ball_and_tube(size: int = 20) -> tuple[np.ndarray, np.ndarray]:
    c = np.indices((size,) * 3) - size // 2
    ball = ((c**2).sum(0) <= 36).astype(np.float32)  # radius 6
    tube = np.zeros((size,) * 3, np.float32)
    tube[2:-2, size // 2, size // 2] = 1.0  # a one-voxel line along the first axis
    tube[2:-2, 3, 3] = 1.0  # and a second, separate one
    return ball, tube


def test_shape_statistics_tell_a_compact_gland_from_thin_vessels():
    ball, tube = _ball_and_tube()
    s = ood.shape_statistics(np.stack([ball, tube, np.zeros_like(ball)]))
    assert s.shape == (3, 5)  # erosion, components, largest share, two elongation ratios (3D)
    assert s[0, 0] > 0.5 and s[1, 0] == 0.0  # a line does not survive an erosion
    assert s[0, 1] == pytest.approx(np.log(2)) and s[1, 1] == pytest.approx(np.log(3))
    assert s[0, 2] == 1.0 and s[1, 2] == pytest.approx(0.5)
    assert np.abs(s[0, 3:]).max() < 0.05 and s[1, 3:].max() > 2  # a sphere is round, lines flat
    np.testing.assert_array_equal(s[2], 0.0)  # empty: zeros, no error
    assert ood.shape_statistics(ball[None, :, :, 10]).shape == (1, 4)  # 2D: one ratio
    full = ood.input_statistics(np.stack([ball, tube])[..., None])
    np.testing.assert_allclose(full[:, -5:], s[:2])  # appended last


def test_an_ood_file_fitted_before_the_shape_statistics_still_scores():
    """A run fitted before the shape columns existed stores a narrower input Gaussian: its
    score is that Gaussian on the leading columns, as when it was fitted."""
    from core.trust.predictor import component_score

    rng = np.random.default_rng(4)
    x = rng.random((30, 16, 16, 16, 1)).astype(np.float32)
    stats_now = ood.input_statistics(x)
    old = stats_now[:, :-5]
    fitted = ood.fit_mahalanobis(old, np.zeros(len(old)))
    stats = {f"input_{k}": v for k, v in fitted.items()}
    (got,) = component_score("input", {"input_stats": stats_now}, stats)
    np.testing.assert_allclose(got, ood.mahalanobis_score(old, fitted))


def test_sharpness_statistics_see_blur_whatever_the_brightness():
    """A blurred image has less fine detail for its contrast; dimming an image (a dark but
    sharp fundus photograph) leaves its sharpness unchanged. 2D inputs carry these columns,
    3D ones do not."""
    rng = np.random.default_rng(5)
    sharp = rng.random((3, 28, 28)).astype(np.float32)
    from scipy import ndimage

    blurred = np.stack([ndimage.gaussian_filter(im, 3.0) for im in sharp])
    s, b, dim = (ood.sharpness_statistics(v) for v in (sharp, blurred, 0.3 * sharp))
    assert s.shape == (3, 4)
    assert (b[:, 1:] < s[:, 1:] - 1.0).all()  # log ratios: several times less detail
    np.testing.assert_allclose(dim, s, atol=0.05)
    n2d = ood.input_statistics(sharp[..., None]).shape[1]
    n3d = ood.input_statistics(np.zeros((1, 8, 8, 8, 1))).shape[1]
    # 2D: 1+1+1+2+1 + 4 moments + 8 bins + 4 sharpness + 4 shape; 3D: 6 moments, 5 shape
    assert (n2d, n3d) == (26, 25)
