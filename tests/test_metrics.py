"""Metrics checked against values worked out by hand on tiny arrays."""
import json
import math

import numpy as np
import pytest

from agekit.eval import metrics as m

TRUE = [10, 20, 30, 65]
PRED = [12, 20, 25, 60]
# signed errors: +2, 0, -5, -5 -> abs errors 2, 0, 5, 5
ABS = [2.0, 0.0, 5.0, 5.0]


def test_mae_and_rmse():
    # MAE = (2 + 0 + 5 + 5) / 4 = 3
    assert m.mae(TRUE, PRED) == pytest.approx(3.0)
    # RMSE = sqrt((4 + 0 + 25 + 25) / 4) = sqrt(13.5)
    assert m.rmse(TRUE, PRED) == pytest.approx(math.sqrt(13.5))


def test_cs_and_curve():
    # |err| <= 2: {2, 0} -> 2/4; <= 5: all -> 1; <= 1: {0} -> 1/4
    assert m.cs(ABS, 2) == 0.5
    assert m.cs(ABS, 5) == 1.0
    curve = m.cs_curve(ABS)
    assert list(curve) == list(range(1, 11))
    assert [curve[t] for t in (1, 2, 3, 4, 5, 10)] == [0.25, 0.5, 0.5, 0.5, 1.0, 1.0]


def test_cs_counts_float_noise_as_on_the_threshold():
    # |31.1 - 30.1| is 1.0000000000000036 in floating point; it is an error of exactly one year.
    assert m.cs([abs(31.1 - 30.1)], 1) == 1.0


def test_epsilon_error_excludes_non_positive_and_missing_std():
    # sample 0: 1 - exp(-(12-10)^2 / (2*1^2)) = 1 - exp(-2); sample 1: 1 - exp(0) = 0
    # samples 2 (std 0) and 3 (std None) are excluded -> mean of two
    eps = m.epsilon_error(PRED, TRUE, [1.0, 2.0, 0.0, None])
    assert eps == pytest.approx((1 - math.exp(-2)) / 2)
    assert m.epsilon_error([1.0], [1.0], [0.0]) is None


def test_age_bands_use_floor_of_true_age():
    # 12.9 -> 12 -> '0-12'; 13 -> '13-19'; 19.99 -> 19 -> '13-19'; 39.5 -> '20-39'; 59.9 -> '40-59'; 60 -> '60+'
    idx = m.age_band_index([0, 12.9, 13, 19.99, 39.5, 59.9, 60, 101, -1])
    assert idx.tolist() == [0, 0, 1, 1, 2, 3, 4, 4, -1]


def test_mae_by_band_omits_empty_bands():
    # bands: 10 -> '0-12' (err 2); 20, 30 -> '20-39' (errs 0, 5 -> 2.5); 65 -> '60+' (err 5)
    out = m.mae_by_band(ABS, TRUE)
    assert out == {"0-12": {"n": 1, "mae": 2.0}, "20-39": {"n": 2, "mae": 2.5}, "60+": {"n": 1, "mae": 5.0}}
    assert "13-19" not in out and "40-59" not in out


def test_mae_by_group_names_and_unknowns():
    # gender 0 -> errs {2, 5} -> 3.5; gender 1 -> {0} -> 0; None and -1 excluded
    out = m.mae_by_group([2, 0, 5, 7, 9], [0, 1, 0, None, -1], m.GENDER_NAMES)
    assert out == {"male": {"n": 2, "mae": 3.5}, "female": {"n": 1, "mae": 0.0}}
    # race codes print with UTKFace names; NaN is unknown
    out = m.mae_by_group([1, 3, 4], np.array([2, 4, np.nan]), m.RACE_NAMES)
    assert out == {"Asian": {"n": 1, "mae": 1.0}, "Others": {"n": 1, "mae": 3.0}}
    assert m.mae_by_group([1.0, 2.0], [None, -1], m.GENDER_NAMES) == {}


def test_gender_accuracy_thresholds_probabilities_and_ignores_unknown():
    # probs 0.2 -> male(0) ok; 0.5 -> female(1) ok; 0.9 -> female vs male wrong; label None ignored
    assert m.gender_accuracy([0.2, 0.5, 0.9, 0.1], [0, 1, 0, None]) == pytest.approx(2 / 3)
    # hard codes work the same: 1 of 2 known correct
    assert m.gender_accuracy([0, 1, 1], [0, 0, -1]) == 0.5
    assert m.gender_accuracy([0, 1], [None, None]) is None


def test_bootstrap_ci_contains_mean_and_is_deterministic():
    err = np.random.default_rng(1).gamma(2.0, 2.0, size=200)
    low, high = m.bootstrap_ci(err, n=500, seed=3)
    assert low < err.mean() < high
    assert (low, high) == m.bootstrap_ci(err, n=500, seed=3)
    assert (low, high) != m.bootstrap_ci(err, n=500, seed=4)
    # a constant error has a zero-width interval
    assert m.bootstrap_ci([2.0, 2.0, 2.0], n=50) == (2.0, 2.0)


def test_uncertainty_summary():
    # stds 1, 2, 3 vs abs errs 2, 0, 5: ranks (1,2,3) vs (2,1,3) -> rho = 1 - 6*(1+1+0)/(3*8) = 0.5
    # coverage: 2 <= 1.645? no; 0 <= 3.29 yes; 5 <= 4.935 no -> 1/3; missing std excluded
    out = m.uncertainty_summary(ABS, [1.0, 2.0, 3.0, None])
    assert out["n"] == 3
    assert out["mean_pred_std"] == pytest.approx(2.0)
    assert out["spearman_std_vs_abs_err"] == pytest.approx(0.5)
    assert out["coverage_90"] == pytest.approx(1 / 3)
    # constant std: correlation undefined -> None, not NaN
    assert m.uncertainty_summary([1.0, 2.0], [1.0, 1.0])["spearman_std_vs_abs_err"] is None


def test_compute_metrics_full():
    out = m.compute_metrics(TRUE, PRED, gender=[0, 1, None, -1], gender_pred=[0.2, 0.4, 0.9, 0.1],
                            race=[0, 1, 2, None], age_std=[1, 2, 0, None], pred_std=[1, 2, 3, None])
    assert out["n"] == 4
    assert out["mae"] == pytest.approx(3.0)
    assert out["mae_ci95"][0] <= 3.0 <= out["mae_ci95"][1]
    assert out["cs"]["1"] == 0.25 and out["cs"]["10"] == 1.0 and len(out["cs"]) == 10
    assert out["epsilon_error"] == pytest.approx((1 - math.exp(-2)) / 2)
    assert list(out["mae_by_band"]) == ["0-12", "20-39", "60+"]
    assert out["mae_by_gender"] == {"male": {"n": 1, "mae": 2.0}, "female": {"n": 1, "mae": 0.0}}
    assert list(out["mae_by_race"]) == ["White", "Black", "Asian"]
    # 0.2 -> male ok, 0.4 -> male vs female wrong
    assert out["gender_accuracy"] == 0.5
    assert out["uncertainty"]["n"] == 3
    assert json.loads(json.dumps(out)) == out  # plain JSON types only


def test_compute_metrics_minimal_and_all_unknown_labels():
    out = m.compute_metrics(TRUE, PRED, gender=[None] * 4, gender_pred=[0, 1, 0, 1], race=[-1] * 4)
    for key in ("epsilon_error", "mae_by_gender", "mae_by_race", "gender_accuracy", "uncertainty"):
        assert key not in out
    assert set(out) == {"n", "mae", "mae_ci95", "rmse", "cs", "mae_by_band"}


def test_compute_metrics_rejects_bad_input():
    with pytest.raises(ValueError, match="no samples"):
        m.compute_metrics([], [])
    with pytest.raises(ValueError, match="entries"):
        m.compute_metrics([1, 2], [1])
    with pytest.raises(ValueError, match="gender"):
        m.compute_metrics([1, 2], [1, 2], gender=[0])
    with pytest.raises(ValueError, match="finite"):
        m.compute_metrics([1, 2], [1, float("nan")])


def test_spearman_with_ties_by_hand():
    from agekit.eval.metrics import average_ranks, spearman

    # x ranks [1, 2.5, 2.5, 4], y ranks [1, 3, 2, 4]; centred: [-1.5, 0, 0, 1.5] and [-1.5, .5, -.5, 1.5]
    # r = 4.5 / sqrt(4.5 * 5) = 0.948683
    assert average_ranks([1, 2, 2, 3]).tolist() == [1.0, 2.5, 2.5, 4.0]
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(0.948683, abs=1e-6)
    assert spearman([1, 1, 1], [1, 2, 3]) is None and spearman([1], [2]) is None
