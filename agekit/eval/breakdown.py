"""Where the errors are (pure numpy): signed error and coverage per true-age band, MAE per group with
bootstrap intervals.

A model trained mostly on adults pulls every estimate toward the bulk of its training ages: children are
made older and the elderly younger ("everyone is 25-35"). The MAE alone hides that; the signed error
(mean of pred - true) per true-age band shows it, as a positive bias in the young bands and a negative
one in the old. Coverage per band shows where the calibrated interval fails.

Conventions as in agekit.eval.metrics: (N,) arrays, unknown labels None/NaN/negative, a statistic over
zero samples is None. A true age belongs to the band of floor(age).
"""
from __future__ import annotations

import numpy as np

from agekit.eval.metrics import AGE_BAND_LABELS, AGE_BANDS, _floats, bootstrap_ci, label_codes

# agekit.eval.metrics.AGE_BANDS with 0-12 split where a child's age changes the face fastest (infants,
# pre-school, school age); the coarse band would average a +5 bias at 2 with a -1 at 12.
FINE_AGE_BANDS = [(0, 2), (3, 6), (7, 12)] + [b for b in AGE_BANDS if b[0] >= 13]
FINE_AGE_BAND_LABELS = ["0-2", "3-6", "7-12"] + [lab for lab, b in zip(AGE_BAND_LABELS, AGE_BANDS) if b[0] >= 13]
COVERAGE_TOLERANCE = 1e-9  # an age on the interval's end counts as inside


def band_index(true_age, bands=FINE_AGE_BANDS) -> np.ndarray:
    """(N,) index into `bands` ((low, high) inclusive years, high None = open) by floor(age); -1 if none."""
    years = np.floor(_floats(true_age))
    index = np.full(years.shape, -1, dtype=np.int64)
    for i, (low, high) in enumerate(bands):
        inside = years >= low if high is None else (years >= low) & (years <= high)
        index[inside & (index < 0)] = i
    return index


def inside_interval(true_age, lo, hi) -> np.ndarray:
    """(N,) bool: lo <= true <= hi (ends included); False where an end is missing (NaN)."""
    y, lo, hi = _floats(true_age), _floats(lo), _floats(hi)
    return (y >= lo - COVERAGE_TOLERANCE) & (y <= hi + COVERAGE_TOLERANCE)


def band_table(true_age, pred_age, lo=None, hi=None, bands=FINE_AGE_BANDS, labels=FINE_AGE_BAND_LABELS) -> dict:
    """Per true-age band: {label: {'n', 'mean_true', 'mean_pred', 'signed_error', 'mae', 'coverage'}}.

    true_age, pred_age: (N,) years; lo, hi: (N,) interval ends (coverage None without them).
    signed_error = mean(pred - true) in the band (> 0: the model makes them older). Every band is listed,
    an empty one with n = 0 and None values, so a table always has the same rows.
    """
    true, pred = _floats(true_age), _floats(pred_age)
    covered = inside_interval(true, lo, hi) if lo is not None and hi is not None else None
    index = band_index(true, bands)
    out = {}
    for i, label in enumerate(labels):
        mask = index == i
        n = int(mask.sum())
        if n == 0:
            out[label] = {"n": 0, "mean_true": None, "mean_pred": None, "signed_error": None, "mae": None,
                          "coverage": None}
            continue
        err = pred[mask] - true[mask]
        out[label] = {"n": n, "mean_true": float(true[mask].mean()), "mean_pred": float(pred[mask].mean()),
                      "signed_error": float(err.mean()), "mae": float(np.abs(err).mean()),
                      "coverage": None if covered is None else float(covered[mask].mean())}
    return out


def interval_coverage(true_age, lo, hi, level: float) -> dict:
    """{'level', 'n', 'coverage', 'gap', 'mean_width'} of (N,) intervals [lo, hi]: coverage is the share of
    true ages inside, gap = coverage - level (negative: the interval is too narrow for these faces)."""
    true, lo, hi = _floats(true_age), _floats(lo), _floats(hi)
    if len(true) == 0:
        return {"level": float(level), "n": 0, "coverage": None, "gap": None, "mean_width": None}
    cov = float(inside_interval(true, lo, hi).mean())
    return {"level": float(level), "n": int(len(true)), "coverage": cov, "gap": cov - float(level),
            "mean_width": float(np.mean(hi - lo))}


def mae_by_group_ci(abs_err, groups, names: dict | None = None, n_boot: int = 1000, seed: int = 0) -> dict:
    """MAE per label with a percentile-bootstrap 95% interval: {name: {'n', 'mae', 'mae_ci95': [lo, hi]}}.

    abs_err: (N,) |pred - true|; groups: (N,) codes, unknown excluded; names: code -> printed name.
    Each group is resampled on its own (agekit.eval.metrics.bootstrap_ci, same seed), so its interval
    reflects its own size: a group of 30 gets a wide one. Ordered by code; empty groups are omitted.
    """
    err, codes = _floats(abs_err), label_codes(groups)
    names = names or {}
    out = {}
    for code in np.unique(codes[codes >= 0]):
        group = err[codes == code]
        out[names.get(int(code), str(int(code)))] = {"n": int(len(group)), "mae": float(group.mean()),
                                                     "mae_ci95": list(bootstrap_ci(group, n=n_boot, seed=seed))}
    return out
