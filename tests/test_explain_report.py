"""The error-analysis pages of `agekit eval` reports (agekit.eval.error_analysis via write_report), against
hand-computed values."""
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("matplotlib")

from agekit.eval.error_analysis import (
    ERROR_PLOT_TITLES,
    band_confusion,
    best_and_worst,
    error_summary,
    gender_reliability,
    interval_reliability,
)
from agekit.eval.metrics import compute_metrics
from agekit.eval.report import write_report


def test_band_confusion_by_hand():
    m = band_confusion(np.array([5, 15, 25, 45, 70, 12.9]), np.array([5, 25, 25, 70, 50, -3]))
    expected = np.zeros((5, 5), int)
    for t, p in ((0, 0), (1, 2), (2, 2), (3, 4), (4, 3), (0, 0)):  # a negative prediction counts as 0-12
        expected[t, p] += 1
    assert np.array_equal(m, expected)


def test_best_and_worst_never_show_a_face_twice():
    rows = [{"key": k, "true_age": 30.0, "pred_age": 30.0 + e} for k, e in zip("abcdefgh", [1, -7, 3, 0, 5, -2, 9, 4])]
    best, worst = best_and_worst(rows, 3)
    assert [r["key"] for r in best] == ["d", "a", "f"] and [r["key"] for r in worst] == ["g", "b", "e"]
    best, worst = best_and_worst(rows[:3], 3)  # 3 rows: 2 best, 1 worst
    assert [r["key"] for r in best] == ["a", "c"] and [r["key"] for r in worst] == ["b"]
    assert best_and_worst(rows[:1], 3) == ([rows[0]], [])


def test_gender_reliability_by_hand():
    rel = gender_reliability(np.array([0.05, 0.05, 0.95, 0.95]), np.array([0, 1, 1, 1]))
    assert rel["count"][0] == 2 and rel["count"][9] == 2 and rel["count"][1:9].sum() == 0
    assert rel["observed"][0] == 0.5 and rel["observed"][9] == 1.0
    assert rel["ece"] == pytest.approx((2 * 0.45 + 2 * 0.05) / 4)


def test_interval_reliability_by_hand():
    levels = dict(interval_reliability(np.zeros(3), np.array([0.5, 1.5, 3.0]), np.ones(3)))
    assert levels[0.9] == pytest.approx(2 / 3)  # z = 1.645: 0.5 and 1.5 inside
    assert levels[0.5] == pytest.approx(1 / 3)  # z = 0.674: only 0.5


def test_error_summary_finds_regression_to_the_mean():
    true = np.arange(1.0, 91.0)
    rows = [{"true_age": t, "pred_age": t + 0.5 * (40 - t), "pred_std": 3.0} for t in true]
    s = error_summary(rows)
    assert s["slope"] == pytest.approx(-0.5)
    assert s["young_bias"] == pytest.approx(np.mean(0.5 * (40 - true[true < 20])))
    assert s["old_bias"] == pytest.approx(np.mean(0.5 * (40 - true[true >= 60])))
    assert "gender_ece" not in s


def _rows(tmp_path, n=60):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(path)
        true = float(1 + i * 90 // (n - 1))
        rows.append({"key": str(i), "path": str(path), "true_age": true, "pred_age": true + rng.normal(0, 4),
                     "pred_std": 4.0, "gender": i % 2, "gender_prob": float(rng.uniform()), "race": i % 5})
    return rows


def test_write_report_adds_the_error_pages_unless_turned_off(tmp_path):
    rows = _rows(tmp_path)
    metrics = compute_metrics([r["true_age"] for r in rows], [r["pred_age"] for r in rows])
    plain = write_report(tmp_path / "plain", metrics, rows, title="t", protocol={}, complexity=None,
                         error_analysis=False)
    assert not set(ERROR_PLOT_TITLES) & set(plain) and "Error analysis" not in plain["report"].read_text()

    written = write_report(tmp_path / "full", metrics, rows, title="t", protocol={}, complexity=None)
    md = written["report"].read_text()
    assert "## Error analysis" in md
    for name in ERROR_PLOT_TITLES:
        assert f"]({name}.png)" in md
        with Image.open(written[name]) as im:
            assert im.format == "PNG" and im.width > 200
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == sorted(p.name for p in written.values())
    assert f"{error_summary(rows)['slope']:+.3f}" in md


def test_error_pages_without_paths_std_or_gender(tmp_path):
    rows = [{"key": str(i), "path": None, "true_age": float(i), "pred_age": float(i) + 2} for i in range(1, 30)]
    metrics = compute_metrics([r["true_age"] for r in rows], [r["pred_age"] for r in rows])
    written = write_report(tmp_path, metrics, rows, title="t", protocol={}, complexity=None, error_analysis=True)
    assert {"signed_error_by_age", "band_confusion"} <= set(written)
    assert not {"reliability", "examples_by_band", "examples_by_race"} & set(written)
