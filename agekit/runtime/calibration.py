"""Split-conformal prediction intervals for the age (pure numpy).

Score. On a held-out calibration set (the validation split) each face gets the normalised conformity score

    s_i = |y_i - mean_i| / max(std_i, STD_FLOOR)

where mean/std summarise the model's predictive distribution. Normalising by the predicted spread makes
the interval `mean +- q * std` adapt to the face: narrow where the model is sure (young children, whose
ages the model pins down to a year or two), wide where it is not (older adults, where errors of ten years
are common). An absolute score |y - mean| would give every face the same width, over-covering children and
under-covering the elderly, with the same marginal guarantee. STD_FLOOR (1 year) keeps the score finite for
methods that give no spread (regression: std = 0): their score is then the plain absolute error in years
and the interval `mean +- q` years, and it stops an overconfident distribution (std far below the label
resolution of 1 year) from producing huge scores.

Quantile. For n scores and level 1 - alpha, q is the k-th smallest score with k = ceil((n + 1)(1 - alpha))
(q = inf when k > n: too few samples for that level). If the calibration and test faces are exchangeable,
a new face's age lies in [mean - q std, mean + q std] with probability >= 1 - alpha (Vovk et al. 2005;
Lei et al. 2018; Romano et al. 2019 for the normalised score). Intervals are clipped to the model's age
range, which never removes a true age inside that range.

Calibrated probabilities. `prob_at_least` turns the empirical score distribution into P(age >= t): with
r = (y - mean) / scale and F the CDF of |r| (interpolated between stored quantiles), assuming r symmetric,
P(r >= z) = (1 - F(z)) / 2 for z >= 0 and 1 - (1 - F(-z)) / 2 for z < 0. It agrees with the intervals: when
the level-L interval's lower end is at or above t, P(age >= t) >= (1 + L) / 2.
"""
from __future__ import annotations

import math

import numpy as np

STD_FLOOR = 1.0  # years; see the module docstring
DEFAULT_LEVEL = 0.9
LEVELS = (0.8, 0.9, 0.95)  # stored so that users can change the level at run time
# Levels at which the score distribution is stored (for other levels and for probabilities).
GRID_LEVELS = tuple(round(0.05 * i, 2) for i in range(1, 20)) + (0.975, 0.99)
SCORE = "abs(y - mean) / max(std, std_floor)"


def conformity_scores(y, mean, std, std_floor: float = STD_FLOOR) -> np.ndarray:
    """Normalised scores |y - mean| / max(std, std_floor) of (N,) arrays."""
    y, mean, std = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (y, mean, std))
    if not (len(y) == len(mean) == len(std)):
        raise ValueError(f"y, mean and std must have the same length, got {len(y)}, {len(mean)}, {len(std)}")
    return np.abs(y - mean) / np.maximum(std, std_floor)


def check_level(level) -> float:
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1 (e.g. 0.9), got {level}")
    return level


def conformal_quantile(scores, level: float = DEFAULT_LEVEL) -> float:
    """The ceil((n + 1) * level)-th smallest score (1-based); inf when that exceeds n."""
    level = check_level(level)
    s = np.sort(np.asarray(scores, dtype=np.float64).reshape(-1))
    n = len(s)
    if n == 0:
        raise ValueError("no calibration scores")
    # round() first: (n + 1) * level in floating point can land a hair above an integer (e.g. 9.000000002)
    k = math.ceil(round((n + 1) * level, 9))
    return float(s[k - 1]) if k <= n else math.inf


def interval(mean, std, q: float, age_min=None, age_max=None, std_floor: float = STD_FLOOR):
    """(lo, hi) = mean -+ q * max(std, std_floor), clipped to [age_min, age_max]; arrays like mean."""
    mean = np.asarray(mean, dtype=np.float64)
    half = float(q) * np.maximum(np.asarray(std, dtype=np.float64), std_floor)
    lo, hi = mean - half, mean + half
    if age_min is not None or age_max is not None:
        lo, hi = np.clip(lo, age_min, age_max), np.clip(hi, age_min, age_max)
    return lo, hi


def coverage(y, lo, hi) -> float:
    """Fraction of the true ages y inside [lo, hi]."""
    y = np.asarray(y, dtype=np.float64)
    return float(np.mean((y >= np.asarray(lo)) & (y <= np.asarray(hi))))


def calibrate(y, mean, std, level: float = DEFAULT_LEVEL, age_min=None, age_max=None,
              std_floor: float = STD_FLOOR) -> dict:
    """Fit split-conformal intervals on calibration faces. Returns a JSON-ready dict:
    method, score, std_floor, level, q, n, coverage (empirical, on these faces), quantiles {level: q} for
    LEVELS and the chosen level, and score_quantiles (levels, q) on GRID_LEVELS for other levels and for
    `prob_at_least`. Levels the sample is too small for are left out (their q would be infinite)."""
    level = check_level(level)
    scores = conformity_scores(y, mean, std, std_floor)
    q = conformal_quantile(scores, level)
    lo, hi = interval(mean, std, q, age_min, age_max, std_floor)
    named = {f"{lv:g}": conformal_quantile(scores, lv) for lv in sorted({*LEVELS, level})}
    grid = [(lv, conformal_quantile(scores, lv)) for lv in sorted({*GRID_LEVELS, *LEVELS, level})]
    grid = [(lv, qv) for lv, qv in grid if math.isfinite(qv)]
    return {
        "method": "split-conformal",
        "score": SCORE,
        "std_floor": float(std_floor),
        "level": level,
        "q": q if math.isfinite(q) else None,
        "n": int(len(scores)),
        "coverage": coverage(y, lo, hi),
        "quantiles": {k: (v if math.isfinite(v) else None) for k, v in named.items()},
        "score_quantiles": {"levels": [lv for lv, _ in grid], "q": [qv for _, qv in grid]},
    }


def quantile_for_level(calibration: dict, level: float) -> float:
    """q for `level` from a `calibrate` dict: the stored value, else interpolated on the stored grid
    (inf above the largest stored level)."""
    level = check_level(level)
    stored = calibration.get("quantiles", {}).get(f"{level:g}")
    if stored is not None:
        return float(stored)
    levels = np.asarray(calibration["score_quantiles"]["levels"], dtype=np.float64)
    qs = np.asarray(calibration["score_quantiles"]["q"], dtype=np.float64)
    if len(levels) == 0 or level > levels[-1]:
        return math.inf
    return float(np.interp(level, np.concatenate([[0.0], levels]), np.concatenate([[0.0], qs])))


def prob_at_least(threshold, mean, std, calibration: dict):
    """Calibrated P(age >= threshold) for predictions (mean, std) (scalars or arrays), from the stored
    distribution of the conformity scores (see the module docstring). Saturates at
    (1 -+ largest stored level) / 2 (0.005 and 0.995 with the default grid)."""
    floor = float(calibration.get("std_floor", STD_FLOOR))
    levels = np.asarray(calibration["score_quantiles"]["levels"], dtype=np.float64)
    qs = np.asarray(calibration["score_quantiles"]["q"], dtype=np.float64)
    z = (float(threshold) - np.asarray(mean, dtype=np.float64)) / np.maximum(np.asarray(std, np.float64), floor)
    cdf = np.interp(np.abs(z), np.concatenate([[0.0], qs]), np.concatenate([[0.0], levels]))  # F(|z|)
    tail = (1.0 - cdf) / 2.0
    p = np.where(z >= 0, tail, 1.0 - tail)
    return float(p) if p.ndim == 0 else p


# ---- fallbacks for models exported without calibration: the model's own distribution ---------------
def distribution_interval(probs, ages, level: float = DEFAULT_LEVEL):
    """Central `level` interval of distributions over integer ages: (lo, hi) arrays for probs (N, K).

    lo is the smallest age whose CDF reaches (1 - level) / 2, hi the smallest whose CDF reaches (1 + level) / 2.
    """
    level = check_level(level)
    probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    ages = np.asarray(ages, dtype=np.float64)
    cdf = np.cumsum(probs, axis=1) / np.maximum(probs.sum(axis=1, keepdims=True), 1e-30)
    lo = ages[np.argmax(cdf >= (1.0 - level) / 2.0 - 1e-12, axis=1)]
    hi = ages[np.argmax(cdf >= (1.0 + level) / 2.0 - 1e-12, axis=1)]
    return lo, hi


def distribution_prob_at_least(probs, ages, threshold):
    """P(age >= threshold) under distributions over integer ages: (N,) for probs (N, K)."""
    probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
    ages = np.asarray(ages, dtype=np.float64)
    return (probs * (ages[None, :] >= float(threshold) - 1e-9)).sum(axis=1) / np.maximum(probs.sum(axis=1), 1e-30)
