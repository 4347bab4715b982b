"""Age-threshold checks scored against true ages (pure numpy): false pass / false refuse rates.

An age check (`AgeEstimator.check_age(face, T)`) answers "over", "under" or "uncertain" for a threshold T
(the buffer approach: "over" only when the whole calibrated interval lies at or above T). Against the
true ages that gives two populations with three outcomes each:

- true age < T (should be refused):  "over" = false pass, "under" = refused (correct), "uncertain";
- true age >= T (should pass):       "under" = false refuse, "over" = passed (correct), "uncertain".

Every share comes with a Wilson score 95% interval, which stays inside [0, 1] and behaves at 0/n and n/n,
where the normal approximation gives zero-width or negative intervals (Wilson 1927; Brown, Cai and
DasGupta 2001). "Uncertain" is reported on its own: it is neither a pass nor a refusal but a hand-off
to another check.

Also the Challenge-25 figure (UK retail practice: anyone who looks under 25 is asked for ID): the share
of 13-17 year olds whose estimated age is under 25, i.e. who would be challenged.

Conventions: arrays are (N,), one entry per face; a true age belongs to the integer year floor(age);
a statistic over zero people is None.
"""
from __future__ import annotations

import math

import numpy as np

from agekit.eval.metrics import GENDER_NAMES, RACE_NAMES, label_codes

DECISIONS = ("over", "under", "uncertain")
Z95 = 1.959963984540054  # two-sided 95% standard normal quantile
CHALLENGE_AGE = 25  # "Challenge 25": ask for ID from anyone who looks under 25
CHALLENGE_MINORS = (13, 17)  # inclusive true ages (years) the figure is about

# The outcome names per population: (key, decision that produces it).
BELOW_OUTCOMES = (("false_pass", "over"), ("refused", "under"), ("uncertain", "uncertain"))
ABOVE_OUTCOMES = (("false_refuse", "under"), ("passed", "over"), ("uncertain", "uncertain"))


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float] | tuple[None, None]:
    """Wilson score interval for a binomial share k/n: (low, high) in [0, 1]; (None, None) when n = 0.

    centre = (p + z^2 / 2n) / (1 + z^2 / n), half = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / 4n^2)
    with p = k / n. E.g. 5 of 10 -> (0.2366, 0.7634); 0 of 10 -> (0, 0.2775).
    """
    k, n = int(k), int(n)
    if n < 0 or not 0 <= k <= max(n, 0):
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return None, None
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n * n))
    # At k = 0 (k = n) the lower (upper) bound is exactly 0 (1); the formula leaves float dust there.
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def share(k: int, n: int) -> dict:
    """{'k', 'n', 'share', 'ci95'}: k of n with its Wilson 95% interval (share and ci95 None when n = 0)."""
    low, high = wilson_interval(k, n)
    return {"k": int(k), "n": int(n), "share": (k / n) if n else None,
            "ci95": None if low is None else [low, high]}


def threshold_outcomes(true_age, decisions, threshold: float) -> dict:
    """Outcome shares of one age check at `threshold` against the true ages.

    true_age: (N,) years; decisions: (N,) strings "over" / "under" / "uncertain" (check_age's answer).
    Returns {'threshold', 'below': {'n', 'false_pass', 'refused', 'uncertain'},
             'at_or_above': {'n', 'false_refuse', 'passed', 'uncertain'}}, each outcome a `share` dict.
    A person is below T when floor(true age) < T (a 17.9-year-old is 17, under 18).
    """
    years = np.floor(np.asarray(true_age, dtype=np.float64).reshape(-1))
    answers = np.asarray(decisions, dtype=object).reshape(-1)
    if len(answers) != len(years):
        raise ValueError(f"decisions has {len(answers)} entries, true_age has {len(years)}")
    unknown = set(answers.tolist()) - set(DECISIONS)
    if unknown:
        raise ValueError(f"decisions must be one of {DECISIONS}, got {sorted(map(str, unknown))}")
    below = years < threshold
    out = {"threshold": float(threshold)}
    for name, mask, outcomes in (("below", below, BELOW_OUTCOMES), ("at_or_above", ~below, ABOVE_OUTCOMES)):
        n = int(mask.sum())
        out[name] = {"n": n, **{key: share(int(np.sum(answers[mask] == d)), n) for key, d in outcomes}}
    return out


def threshold_report(true_age, decisions_by_threshold: dict, gender=None, race=None) -> dict:
    """Outcomes of every threshold, overall and per known gender / race.

    decisions_by_threshold: {T: (N,) decisions}. gender / race: (N,) codes, unknown = None/NaN/negative.
    Returns {str(T): {'overall': threshold_outcomes, 'by_gender': {name: ...}, 'by_race': {name: ...}}};
    the group dicts are empty when no label is known. T prints as '18' for whole numbers.
    """
    true = np.asarray(true_age, dtype=np.float64).reshape(-1)
    out = {}
    for threshold, decisions in decisions_by_threshold.items():
        decisions = np.asarray(decisions, dtype=object).reshape(-1)
        entry = {"overall": threshold_outcomes(true, decisions, threshold)}
        for key, labels, names in (("by_gender", gender, GENDER_NAMES), ("by_race", race, RACE_NAMES)):
            entry[key] = {}
            if labels is None:
                continue
            codes = label_codes(labels)
            for code in np.unique(codes[codes >= 0]):
                mask = codes == code
                entry[key][names.get(int(code), str(int(code)))] = threshold_outcomes(true[mask], decisions[mask],
                                                                                      threshold)
        out[threshold_key(threshold)] = entry
    return out


def threshold_key(threshold: float) -> str:
    """'18' for 18 or 18.0, '17.5' otherwise (the JSON key of a threshold)."""
    return f"{float(threshold):g}"


def challenge25(true_age, pred_age, minors=CHALLENGE_MINORS, limit: float = CHALLENGE_AGE) -> dict:
    """Share of people whose true age (floor, years) lies in `minors` (inclusive) and whose estimated age is
    under `limit`: those a Challenge-25 policy would ask for ID. true_age, pred_age: (N,).
    Returns {'ages': [low, high], 'limit', **share(k, n)}."""
    years = np.floor(np.asarray(true_age, dtype=np.float64).reshape(-1))
    pred = np.asarray(pred_age, dtype=np.float64).reshape(-1)
    if len(pred) != len(years):
        raise ValueError(f"pred_age has {len(pred)} entries, true_age has {len(years)}")
    low, high = minors
    minor = (years >= low) & (years <= high)
    return {"ages": [int(low), int(high)], "limit": float(limit),
            **share(int(np.sum(pred[minor] < limit)), int(minor.sum()))}
