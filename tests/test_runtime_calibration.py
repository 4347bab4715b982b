"""Split-conformal calibration (agekit.runtime.calibration) against values computed by hand."""
import math

import numpy as np
import pytest

from agekit.runtime import calibration as cal

pytestmark = pytest.mark.torchfree


def test_scores_are_normalised_by_the_floored_std():
    # |10-12|/2 = 1; |20-20|/max(0.5, 1) = 0; |30-27|/3 = 1; |5-8|/max(0, 1) = 3 (regression: std 0)
    s = cal.conformity_scores([10, 20, 30, 5], [12, 20, 27, 8], [2, 0.5, 3, 0])
    assert s.tolist() == [1.0, 0.0, 1.0, 3.0]
    assert cal.conformity_scores([10], [12], [0.5], std_floor=0.25).tolist() == [4.0]
    with pytest.raises(ValueError, match="same length"):
        cal.conformity_scores([1, 2], [1], [1])


@pytest.mark.parametrize("n, level, k", [
    (10, 0.9, 10),   # ceil(11 * 0.9) = ceil(9.9) = 10
    (10, 0.8, 9),    # ceil(8.8) = 9
    (10, 0.5, 6),    # ceil(5.5) = 6
    (9, 0.9, 9),     # ceil(10 * 0.9) = 9 exactly (no floating-point overshoot to 10)
    (19, 0.95, 19),  # ceil(20 * 0.95) = 19
    (99, 0.9, 90),   # ceil(100 * 0.9) = 90
])
def test_finite_sample_quantile_is_the_kth_smallest(n, level, k):
    scores = np.random.default_rng(n).permutation(np.arange(1, n + 1) * 0.5)  # sorted: 0.5, 1.0, ...
    assert cal.conformal_quantile(scores, level) == k * 0.5


def test_too_few_scores_give_an_infinite_quantile():
    assert cal.conformal_quantile(np.arange(10.0), 0.95) == math.inf  # ceil(11 * 0.95) = 11 > 10
    with pytest.raises(ValueError):
        cal.conformal_quantile([], 0.9)
    with pytest.raises(ValueError, match="between 0 and 1"):
        cal.conformal_quantile([1.0], 1.5)


def test_interval_and_coverage_by_hand():
    lo, hi = cal.interval([50.0, 2.0, 30.0], [4.0, 4.0, 0.2], q=1.5, age_min=0, age_max=100)
    # 50 -+ 6; 2 -+ 6 clipped at 0; std 0.2 floored to 1: 30 -+ 1.5
    assert lo.tolist() == [44.0, 0.0, 28.5] and hi.tolist() == [56.0, 8.0, 31.5]
    assert cal.coverage([44.0, 9.0, 30.0], lo, hi) == pytest.approx(2 / 3)  # ends count as inside


def test_calibrate_stores_levels_quantiles_and_coverage():
    y = np.array([10.0, 20, 30, 40, 50, 60, 70, 80, 90, 15])
    mean = y + np.array([1.0, -2, 3, -4, 5, -6, 7, -8, 9, -10])
    std = np.full(10, 2.0)
    # scores |y - mean| / 2 = 0.5, 1, 1.5, ..., 5
    c = cal.calibrate(y, mean, std, level=0.9, age_min=0, age_max=100)
    assert c["n"] == 10 and c["level"] == 0.9 and c["std_floor"] == 1.0
    assert c["q"] == 5.0                                   # the 10th smallest
    assert c["quantiles"] == {"0.8": 4.5, "0.9": 5.0, "0.95": None}
    assert c["coverage"] == 1.0
    levels, qs = c["score_quantiles"]["levels"], c["score_quantiles"]["q"]
    assert levels == sorted(levels) and qs == sorted(qs) and 0.95 not in levels
    assert qs[levels.index(0.5)] == 3.0                    # ceil(11 * 0.5) = 6th smallest
    assert cal.quantile_for_level(c, 0.9) == 5.0
    assert cal.quantile_for_level(c, 0.85) == 5.0                  # a grid level: ceil(11 * 0.85) = 10th
    assert cal.quantile_for_level(c, 0.82) == pytest.approx(4.7)   # interpolated between 0.8 and 0.85
    assert cal.quantile_for_level(c, 0.95) == math.inf


def test_marginal_coverage_holds_on_fresh_data():
    """Heteroscedastic errors: the normalised score gives ~90% coverage on new faces, at every spread."""
    rng = np.random.default_rng(0)

    def sample(n):
        std = rng.uniform(1, 10, n)
        mean = rng.uniform(10, 80, n)
        return mean + std * rng.standard_normal(n), mean, std

    c = cal.calibrate(*sample(2000), level=0.9)
    y, mean, std = sample(20000)
    lo, hi = cal.interval(mean, std, c["q"])
    assert abs(cal.coverage(y, lo, hi) - 0.9) < 0.015
    narrow, wide = std < 3, std > 8
    assert abs(cal.coverage(y[narrow], lo[narrow], hi[narrow]) - 0.9) < 0.03
    assert abs(cal.coverage(y[wide], lo[wide], hi[wide]) - 0.9) < 0.03
    assert c["q"] == pytest.approx(1.645, abs=0.1)         # the Gaussian's 95th percentile


def test_calibrated_probability_by_hand():
    c = {"std_floor": 1.0, "score_quantiles": {"levels": [0.5, 0.9], "q": [1.0, 2.0]}}
    # z = (t - mean) / std; F(|z|) interpolates (0, 0), (1, 0.5), (2, 0.9)
    assert cal.prob_at_least(30.0, 30.0, 5.0, c) == pytest.approx(0.5)    # z = 0
    assert cal.prob_at_least(35.0, 30.0, 5.0, c) == pytest.approx(0.25)   # z = 1: (1 - 0.5) / 2
    assert cal.prob_at_least(37.5, 30.0, 5.0, c) == pytest.approx(0.15)   # z = 1.5: F = 0.7
    assert cal.prob_at_least(20.0, 30.0, 5.0, c) == pytest.approx(0.95)   # z = -2: 1 - (1 - 0.9) / 2
    assert cal.prob_at_least(0.0, 30.0, 5.0, c) == pytest.approx(0.95)    # saturates beyond the grid
    assert cal.prob_at_least(30.5, 30.0, 0.1, c) == pytest.approx(0.375)  # std floored to 1: z = 0.5
    p = cal.prob_at_least(18.0, np.array([10.0, 18.0, 40.0]), np.array([4.0, 4.0, 4.0]), c)
    assert p.shape == (3,) and p[0] < 0.5 < p[2] and p[1] == pytest.approx(0.5)


def test_probability_agrees_with_the_interval_decision():
    rng = np.random.default_rng(1)
    c = cal.calibrate(rng.normal(40, 5, 500), np.full(500, 40.0), np.full(500, 5.0), level=0.9)
    mean, std = rng.uniform(10, 60, 200), rng.uniform(1, 8, 200)
    lo, _ = cal.interval(mean, std, c["q"])
    over = lo >= 18
    p = cal.prob_at_least(18, mean, std, c)
    assert (p[over] >= 0.95 - 1e-9).all() and (p[~over] < 0.95 + 1e-9).all()


def test_uncalibrated_fallback_uses_the_models_distribution():
    probs = np.array([[0.1, 0.2, 0.4, 0.2, 0.1]])  # ages 0..4
    lo, hi = cal.distribution_interval(probs, np.arange(5), level=0.8)
    assert (lo[0], hi[0]) == (0, 3)  # CDF 0.1 reaches 0.1 at age 0; reaches 0.9 at age 3
    lo, hi = cal.distribution_interval(probs, np.arange(5), level=0.2)
    assert (lo[0], hi[0]) == (2, 2)
    assert cal.distribution_prob_at_least(probs, np.arange(5), 3)[0] == pytest.approx(0.3)
    assert cal.distribution_prob_at_least(probs, np.arange(5), 2.5)[0] == pytest.approx(0.3)
