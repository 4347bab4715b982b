"""Age-estimation metrics (pure numpy + scipy).

Conventions shared by every function here:
- Arrays are 1-D with one entry per test sample, shape (N,).
- `abs_err` is |pred_age - true_age| in years.
- Unknown labels (gender, race) are None, NaN or negative (-1); they are excluded, never counted as a class.
- A statistic over zero samples is None (JSON null), never NaN, so reports stay valid JSON.
"""
from __future__ import annotations

import math

import numpy as np

# Cumulative-score thresholds reported by compute_metrics (years).
CS_THETAS = tuple(range(1, 11))
# |err| <= theta is checked with this slack so that e.g. |31.1 - 30.1| = 1.0000000000000036 counts as 1 year.
CS_TOLERANCE = 1e-9

# (low, high) inclusive integer ages; None = open-ended.
AGE_BANDS = [(0, 12), (13, 19), (20, 39), (40, 59), (60, None)]
AGE_BAND_LABELS = ["0-12", "13-19", "20-39", "40-59", "60+"]

GENDER_NAMES = {0: "male", 1: "female"}  # agekit.data.records MALE, FEMALE
RACE_NAMES = {0: "White", 1: "Black", 2: "Asian", 3: "Indian", 4: "Others"}  # UTKFace codes

# pred +- 1.645 std is the central 90% interval of a Gaussian predictive distribution.
COVERAGE_Z = 1.645


def mae(true_age, pred_age) -> float:
    """Mean absolute error in years: mean(|pred - true|) over (N,) arrays, N >= 1."""
    return float(np.mean(np.abs(_floats(pred_age) - _floats(true_age))))


def rmse(true_age, pred_age) -> float:
    """Root mean squared error in years: sqrt(mean((pred - true)^2)) over (N,) arrays, N >= 1."""
    return float(np.sqrt(np.mean((_floats(pred_age) - _floats(true_age)) ** 2)))


def cs(abs_err, theta: float) -> float:
    """Cumulative score: fraction of the (N,) absolute errors with |err| <= theta years, N >= 1."""
    return float(np.mean(_floats(abs_err) <= theta + CS_TOLERANCE))


def cs_curve(abs_err, thetas=CS_THETAS) -> dict[int, float]:
    """Cumulative score at each theta (default 1..10 years): {theta: cs(abs_err, theta)}."""
    return {int(t): cs(abs_err, t) for t in thetas}


def epsilon_error(pred_age, mean_age, std_age):
    """ChaLearn LAP epsilon-error: mean over samples of 1 - exp(-(pred - mean)^2 / (2 std^2)).

    pred_age, mean_age, std_age: (N,) arrays; mean/std are the apparent-age label distribution.
    Samples whose std is <= 0 or missing (None/NaN) are excluded, since the Gaussian is undefined there.
    Returns None when no sample is left. 0 is perfect, 1 is worst.
    """
    pred, mean, std = _floats(pred_age), _floats(mean_age), _floats(std_age)
    keep = np.isfinite(std) & (std > 0)
    if not keep.any():
        return None
    z2 = (pred[keep] - mean[keep]) ** 2 / (2.0 * std[keep] ** 2)
    return float(np.mean(1.0 - np.exp(-z2)))


def age_band_index(true_age) -> np.ndarray:
    """Index into AGE_BANDS for each (N,) true age, by floor(age) (12.9 -> '0-12'); -1 for negative ages."""
    years = np.floor(_floats(true_age))
    index = np.full(years.shape, -1, dtype=np.int64)
    for i, (low, high) in enumerate(AGE_BANDS):
        inside = years >= low if high is None else (years >= low) & (years <= high)
        index[inside] = i
    return index


def mae_by_band(abs_err, true_age) -> dict[str, dict]:
    """MAE per true-age band: {label: {'n', 'mae'}} in AGE_BANDS order. Bands without samples are omitted."""
    err, band = _floats(abs_err), age_band_index(true_age)
    return {
        label: {"n": int((band == i).sum()), "mae": float(err[band == i].mean())}
        for i, label in enumerate(AGE_BAND_LABELS)
        if (band == i).any()
    }


def mae_by_group(abs_err, groups, names: dict | None = None) -> dict[str, dict]:
    """MAE per label: {name: {'n', 'mae'}}, ordered by label code.

    abs_err: (N,); groups: (N,) integer codes, unknown = None/NaN/negative (excluded).
    names maps a code to its printed name (GENDER_NAMES, RACE_NAMES); codes missing from it print as digits.
    Groups without samples are omitted, so all-unknown labels give {}.
    """
    err, codes = _floats(abs_err), label_codes(groups)
    names = names or {}
    return {
        names.get(int(c), str(int(c))): {"n": int((codes == c).sum()), "mae": float(err[codes == c].mean())}
        for c in np.unique(codes[codes >= 0])
    }


def gender_accuracy(pred_gender_or_prob, true_gender):
    """Fraction of samples whose predicted gender matches the label; None when no label is known.

    pred_gender_or_prob: (N,) hard codes 0/1 or P(female) in [0, 1]; both are thresholded at 0.5
    (0.5 itself counts as female). true_gender: (N,) codes 0 male / 1 female.
    Samples with an unknown label or a missing prediction (None/NaN) are ignored.
    """
    pred, true = _floats(pred_gender_or_prob), label_codes(true_gender)
    keep = (true >= 0) & np.isfinite(pred)
    if not keep.any():
        return None
    return float(np.mean((pred[keep] >= 0.5).astype(np.int64) == true[keep]))


def bootstrap_ci(abs_err, n: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) confidence interval of mean(abs_err) over (N,) errors, N >= 1.

    Draws n resamples of size N with replacement; deterministic for a given seed.
    """
    err = _floats(abs_err)
    rng = np.random.default_rng(seed)
    # Resample in chunks so N x n indices never sit in memory at once (N can be tens of thousands).
    chunk = max(1, 2_000_000 // len(err))
    means = np.concatenate([
        err[rng.integers(0, len(err), size=(min(chunk, n - start), len(err)))].mean(axis=1)
        for start in range(0, n, chunk)
    ])
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def average_ranks(x) -> np.ndarray:
    """Ranks 1..n of x, ties sharing their average rank (what Spearman's correlation uses)."""
    x = np.asarray(x, dtype=np.float64)
    ranks = np.empty(len(x))
    ranks[np.argsort(x, kind="mergesort")] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=ranks) / counts)[inverse]


def spearman(a, b) -> float | None:
    """Spearman's rank correlation (Pearson's on average ranks); None when undefined (n < 2 or a
    constant input). numpy only, so torch-free evaluation needs no scipy."""
    ra, rb = average_ranks(a), average_ranks(b)
    if len(ra) < 2:
        return None
    da, db = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((da * da).sum()) * float((db * db).sum()))
    return float((da * db).sum()) / denom if denom > 0 else None


def uncertainty_summary(abs_err, pred_std) -> dict:
    """How well a predicted std (N,) tracks the absolute error (N,).

    Returns {'n', 'mean_pred_std', 'spearman_std_vs_abs_err', 'coverage_90'}: coverage is the fraction with
    |err| <= 1.645 * std (the nominal 90% Gaussian interval). Samples with a missing/non-finite std are
    excluded; the Spearman correlation is None when undefined (fewer than 2 samples or constant input).
    """
    err, std = _floats(abs_err), _floats(pred_std)
    keep = np.isfinite(std)
    if not keep.any():
        return {"n": 0, "mean_pred_std": None, "spearman_std_vs_abs_err": None, "coverage_90": None}
    err, std = err[keep], std[keep]
    rho = None
    if len(err) >= 2:
        rho = spearman(std, err)
    return {
        "n": int(len(err)),
        "mean_pred_std": float(std.mean()),
        "spearman_std_vs_abs_err": rho,
        "coverage_90": float(np.mean(err <= COVERAGE_Z * std + CS_TOLERANCE)),
    }


def compute_metrics(true_age, pred_age, *, gender=None, gender_pred=None, race=None, age_std=None,
                    pred_std=None, seed: int = 0) -> dict:
    """All metrics for one evaluation as a JSON-serialisable dict.

    true_age, pred_age: (N,) ages in years, N >= 1, finite. Optional (N,) arrays: gender codes, gender_pred
    (codes or P(female)), race codes, age_std (apparent-age label std), pred_std (model's predicted std).
    Keys: 'n', 'mae', 'mae_ci95' [low, high], 'rmse', 'cs' {'1'..'10'}, 'mae_by_band'; when available:
    'epsilon_error' (age_std given), 'mae_by_gender' / 'mae_by_race' (some label known),
    'gender_accuracy' (gender and gender_pred given, some label known), 'uncertainty' (pred_std given).
    """
    true, pred = _floats(true_age), _floats(pred_age)
    _check_inputs(true, pred, gender=gender, gender_pred=gender_pred, race=race, age_std=age_std,
                  pred_std=pred_std)
    abs_err = np.abs(pred - true)
    out = {
        "n": int(len(true)),
        "mae": mae(true, pred),
        "mae_ci95": list(bootstrap_ci(abs_err, seed=seed)),
        "rmse": rmse(true, pred),
        "cs": {str(t): v for t, v in cs_curve(abs_err).items()},
    }
    if age_std is not None:
        out["epsilon_error"] = epsilon_error(pred, true, age_std)
    out["mae_by_band"] = mae_by_band(abs_err, true)
    for key, labels, names in (("mae_by_gender", gender, GENDER_NAMES), ("mae_by_race", race, RACE_NAMES)):
        groups = mae_by_group(abs_err, labels, names) if labels is not None else {}
        if groups:
            out[key] = groups
    if gender is not None and gender_pred is not None:
        accuracy = gender_accuracy(gender_pred, gender)
        if accuracy is not None:
            out["gender_accuracy"] = accuracy
    if pred_std is not None:
        out["uncertainty"] = uncertainty_summary(abs_err, pred_std)
    return out


def label_codes(labels) -> np.ndarray:
    """(N,) labels with None/NaN/negative for unknown -> int64 codes with -1 for unknown."""
    values = _floats(labels)
    codes = np.full(values.shape, -1, dtype=np.int64)
    known = np.isfinite(values) & (values >= 0)
    codes[known] = values[known].astype(np.int64)
    return codes


def _floats(values) -> np.ndarray:
    """Any 1-D sequence (lists may hold None) -> float64 array with None as NaN."""
    arr = np.asarray(values)
    if arr.dtype == object:  # a list holding None
        arr = np.array([np.nan if v is None else v for v in arr.ravel()], dtype=np.float64)
    return arr.astype(np.float64).reshape(-1)


def _check_inputs(true: np.ndarray, pred: np.ndarray, **optional) -> None:
    """Raise ValueError for empty, mismatched or non-finite inputs (a caller bug, not a user error)."""
    if len(true) == 0:
        raise ValueError("no samples to evaluate")
    if len(pred) != len(true):
        raise ValueError(f"pred_age has {len(pred)} entries, true_age has {len(true)}")
    if not (np.isfinite(true).all() and np.isfinite(pred).all()):
        raise ValueError("true_age and pred_age must be finite")
    for name, values in optional.items():
        if values is not None and len(values) != len(true):
            raise ValueError(f"{name} has {len(values)} entries, true_age has {len(true)}")
