"""Age-check arithmetic (agekit.eval.thresholds) against numbers worked out by hand.

Wilson score interval, z = 1.959964 (z^2 = 3.841459):
    centre = (p + z^2/2n) / (1 + z^2/n),  half = z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2)
- 5/10: 1 + z^2/n = 1.384146, centre = 0.5, half = 1.416009 * sqrt(0.025 + 0.009604) = 0.263407
        -> (0.2366, 0.7634)
- 0/10: centre = 0.192073 / 1.384146 = 0.138767 = half -> (0, 0.2775)
- 1/3:  1 + z^2/n = 2.280486, centre = (0.333333 + 0.640243) / 2.280486 = 0.426915,
        half = 0.859450 * sqrt(0.074074 + 0.106707) = 0.365423 -> (0.0615, 0.7923)
- 0/3:  upper = (z^2/n) / (1 + z^2/n) = 1.280486 / 2.280486 = 0.5615
- 2/4:  1 + z^2/n = 1.960365, centre = 0.5, half = 0.999795 * sqrt(0.0625 + 0.060023) = 0.349961
        -> (0.1500, 0.8500)
"""
import pytest

from agekit.eval import thresholds as th

ABS = 1e-4  # hand values are worked to 4 decimals


@pytest.mark.parametrize("k,n,low,high", [
    (5, 10, 0.2366, 0.7634),
    (0, 10, 0.0, 0.2775),
    (10, 10, 0.7225, 1.0),
    (1, 3, 0.0615, 0.7923),
    (0, 3, 0.0, 0.5615),
    (2, 4, 0.1500, 0.8500),
])
def test_wilson_interval_hand_values(k, n, low, high):
    lo, hi = th.wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=ABS) and hi == pytest.approx(high, abs=ABS)


def test_wilson_interval_edges_are_exact_and_empty_is_none():
    assert th.wilson_interval(0, 7)[0] == 0.0 and th.wilson_interval(7, 7)[1] == 1.0
    assert th.wilson_interval(0, 0) == (None, None)
    assert th.share(0, 0) == {"k": 0, "n": 0, "share": None, "ci95": None}
    with pytest.raises(ValueError):
        th.wilson_interval(4, 3)


# Six people, threshold 18. floor(17.9) = 17 is under 18; 18 is not.
TRUE = [10, 15, 17.9, 18, 20, 30]
DECISIONS = ["under", "over", "uncertain", "under", "over", "over"]
GENDER = [0, 1, 0, 1, None, 0]


def test_threshold_outcomes_hand_counts():
    out = th.threshold_outcomes(TRUE, DECISIONS, 18)
    below, above = out["below"], out["at_or_above"]
    # below 18: 10 under (refused), 15 over (false pass), 17.9 uncertain
    assert below["n"] == 3
    for key in ("false_pass", "refused", "uncertain"):
        assert below[key]["k"] == 1 and below[key]["share"] == pytest.approx(1 / 3)
        assert below[key]["ci95"] == pytest.approx([0.0615, 0.7923], abs=ABS)
    # 18 and over: 18 under (false refuse), 20 and 30 over (passed), none uncertain
    assert above["n"] == 3
    assert above["false_refuse"]["k"] == 1 and above["false_refuse"]["ci95"] == pytest.approx([0.0615, 0.7923], abs=ABS)
    assert above["passed"]["k"] == 2 and above["passed"]["share"] == pytest.approx(2 / 3)
    assert above["uncertain"]["k"] == 0 and above["uncertain"]["ci95"] == pytest.approx([0.0, 0.5615], abs=ABS)
    assert out["threshold"] == 18.0


def test_threshold_report_by_group_and_keys():
    report = th.threshold_report(TRUE, {18: DECISIONS, 21.5: ["under"] * 6}, gender=GENDER)
    assert list(report) == ["18", "21.5"]
    entry = report["18"]
    assert set(entry) == {"overall", "by_gender", "by_race"} and entry["by_race"] == {}
    male, female = entry["by_gender"]["male"], entry["by_gender"]["female"]
    # male: 10 under, 17.9 uncertain (below); 30 over (above). female: 15 over (below); 18 under (above).
    assert male["below"]["n"] == 2 and male["below"]["refused"]["k"] == 1 and male["below"]["uncertain"]["k"] == 1
    assert male["at_or_above"]["n"] == 1 and male["at_or_above"]["passed"]["k"] == 1
    assert female["below"]["false_pass"]["k"] == 1 and female["at_or_above"]["false_refuse"]["k"] == 1
    # the unknown-gender person (20, over) is in the overall table only
    assert male["at_or_above"]["n"] + female["at_or_above"]["n"] == 2 < entry["overall"]["at_or_above"]["n"]
    # at 21.5 every answer is "under": all five below are refused, the one at 30 is a false refusal
    assert report["21.5"]["overall"]["below"]["refused"]["k"] == 5
    assert report["21.5"]["overall"]["at_or_above"]["false_refuse"]["share"] == 1.0


def test_threshold_outcomes_rejects_bad_input():
    with pytest.raises(ValueError, match="one of"):
        th.threshold_outcomes([10], ["maybe"], 18)
    with pytest.raises(ValueError, match="entries"):
        th.threshold_outcomes([10, 20], ["over"], 18)


def test_challenge25_hand_values():
    # aged 13-17 by floor: 13, 15, 17, 17.5 -> n = 4; estimated under 25: 20 and 24.9 -> k = 2
    out = th.challenge25([13, 15, 17, 17.5, 18, 12], [20, 26, 24.9, 30, 10, 5])
    assert out["n"] == 4 and out["k"] == 2 and out["share"] == 0.5
    assert out["ci95"] == pytest.approx([0.1500, 0.8500], abs=ABS)
    assert out["ages"] == [13, 17] and out["limit"] == 25.0
    assert th.challenge25([30, 40], [20, 20])["share"] is None


def test_threshold_key():
    assert th.threshold_key(18) == "18" == th.threshold_key(18.0) and th.threshold_key(17.5) == "17.5"
