"""agekit eval MODEL.onnx: the breakdown arithmetic against hand-computed numbers, the protocol helpers, and
end-to-end runs of the shipped model through the real predict pipeline on real FG-NET / UTKFace images
(no mocks: detector, alignment and model all run)."""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from agekit.cli import main
from agekit.data.splits import seeded_subset
from agekit.errors import AgekitError
from agekit.eval import breakdown as bd
from agekit.eval import pipeline as pl
from agekit.eval.shift import SHIFTS

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "agekit" / "weights" / "agekit-default.onnx"


# ------------------------------------------------------------------------------- breakdown, by hand
# true, pred, lo, hi; band by floor(true):
#   1 -> 4 [0, 3] in        2.5 -> 5.5 [3, 8] out      : 0-2   n 2, true 1.75, pred 4.75, signed +3, MAE 3, cov 1/2
#   5 -> 5 [5, 5] in (edge)                              : 3-6   n 1, signed 0, MAE 0, cov 1
#   10 -> 8 [6, 10] in (edge)  12 -> 16 [13, 20] out     : 7-12  n 2, true 11, pred 12, signed +1, MAE 3, cov 1/2
#   30 -> 28 [20, 35] in                                 : 20-39 n 1, signed -2
#   70 -> 60 [45, 69.9] out                              : 60+   n 1, signed -10, cov 0
TRUE = [1, 2.5, 5, 10, 12, 30, 70]
PRED = [4, 5.5, 5, 8, 16, 28, 60]
LO = [0, 3, 5, 6, 13, 20, 45]
HI = [3, 8, 5, 10, 20, 35, 69.9]


def test_band_table_hand_values():
    t = bd.band_table(TRUE, PRED, LO, HI)
    assert list(t) == ["0-2", "3-6", "7-12", "13-19", "20-39", "40-59", "60+"]
    assert t["0-2"] == pytest.approx({"n": 2, "mean_true": 1.75, "mean_pred": 4.75, "signed_error": 3.0, "mae": 3.0,
                                      "coverage": 0.5})
    assert t["3-6"] == pytest.approx({"n": 1, "mean_true": 5, "mean_pred": 5, "signed_error": 0.0, "mae": 0.0,
                                      "coverage": 1.0})
    assert t["7-12"] == pytest.approx({"n": 2, "mean_true": 11, "mean_pred": 12, "signed_error": 1.0, "mae": 3.0,
                                       "coverage": 0.5})
    assert t["20-39"]["signed_error"] == -2.0 and t["60+"]["signed_error"] == -10.0 and t["60+"]["coverage"] == 0.0
    assert t["13-19"] == {"n": 0, "mean_true": None, "mean_pred": None, "signed_error": None, "mae": None,
                          "coverage": None}
    assert bd.band_table(TRUE, PRED)["0-2"]["coverage"] is None  # no interval given


def test_band_index_edges():
    ages = [0, 2.99, 3, 6.5, 7, 12.99, 13, 59.9, 60, 99, -1]
    assert bd.band_index(ages).tolist() == [0, 0, 1, 1, 2, 2, 3, 5, 6, 6, -1]


def test_interval_coverage_hand_values():
    c = bd.interval_coverage(TRUE, LO, HI, 0.9)
    # inside: 1, 5, 10, 30 -> 4 of 7; widths 3 + 5 + 0 + 4 + 7 + 15 + 24.9 = 58.9 -> 8.4143
    assert c["n"] == 7 and c["coverage"] == pytest.approx(4 / 7) and c["gap"] == pytest.approx(4 / 7 - 0.9)
    assert c["mean_width"] == pytest.approx(58.9 / 7)


def test_mae_by_group_ci_hand_values():
    # male errors 2, 2, 2: every resample has mean 2 -> CI [2, 2].
    # female errors 0, 1: resample means 0 / 0.5 / 1 with probability 1/4, 1/2, 1/4; 2.5% and 97.5% fall
    # inside the first and last quarter -> CI [0, 1]. The unknown-gender error (5) is left out.
    out = bd.mae_by_group_ci([2, 2, 2, 0, 1, 5], [0, 0, 0, 1, 1, None], {0: "male", 1: "female"})
    assert list(out) == ["male", "female"]
    assert out["male"] == {"n": 3, "mae": 2.0, "mae_ci95": [2.0, 2.0]}
    assert out["female"] == {"n": 2, "mae": 0.5, "mae_ci95": [0.0, 1.0]}
    assert bd.mae_by_group_ci([1, 2], [None, -1]) == {}


# ------------------------------------------------------------------------------- pipeline, pure parts
def _row(key, true, pred=None, lo=None, hi=None, female=None, gender=None, race=None, decision="uncertain",
         flags=()):
    base = {"key": key, "path": f"/x/{key}", "true_age": float(true), "gender": gender, "race": race}
    if pred is None:
        return {**base, "found": False, "reason": "no face found"}
    return {**base, "found": True, "pred_age": float(pred), "pred_std": 3.0, "lo": float(lo), "hi": float(hi),
            "female_prob": female, "flags": list(flags), "face_width": 50.0, "rotation": 0,
            "checks": {"18": {"decision": decision, "p_over": 0.5}}}


ROWS = [_row("a", 10, 14, 8, 20, 0.9, 1, 0, "uncertain"),
        _row("b", 16, 26, 19, 33, 0.2, 0, 1, "over", flags=["blurry"]),
        _row("c", 40, 34, 25, 43, 0.3, 0, 0, "over"),
        _row("d", 25)]


def test_summarise_hand_rows():
    m = pl.summarise(ROWS, 0.9, thresholds=(18,))
    assert (m["images"], m["found"], m["misses"], m["miss_rate"]) == (4, 3, 1, 0.25)
    assert m["missed"] == [{"key": "d", "reason": "no face found"}]
    # errors +4, +10, -6: MAE 20/3, signed +8/3; coverage: 10 in [8, 20], 16 out of [19, 33], 40 in [25, 43]
    assert m["n"] == 3 and m["mae"] == pytest.approx(20 / 3) and m["signed_error"] == pytest.approx(8 / 3)
    assert m["coverage"]["coverage"] == pytest.approx(2 / 3)
    assert m["gender_accuracy"] == 1.0  # female 0.9 -> female, 0.2 and 0.3 -> male: all right
    assert m["mae_by_gender_ci"]["male"]["mae"] == 8.0 and m["mae_by_race_ci"]["Black"]["n"] == 1
    # age 16 answered "over" at 18: a false pass; age 40 "over": passed
    t = m["thresholds"]["18"]["overall"]
    assert t["below"]["n"] == 2 and t["below"]["false_pass"]["k"] == 1 and t["below"]["uncertain"]["k"] == 1
    assert t["at_or_above"]["passed"]["k"] == 1
    assert m["challenge25"]["n"] == 1 and m["challenge25"]["k"] == 0  # the 16-year-old looks 26
    with pytest.raises(AgekitError, match="no face found in any"):
        pl.summarise([ROWS[3]], 0.9)


def test_condition_summary_counts_common_faces():
    shifted = [_row("a", 10, 12, 8, 20, 0.9, 1, 0), _row("b", 16), ROWS[2], _row("d", 25, 30, 20, 40, 0.5)]
    s = pl.condition_summary(shifted, ROWS)
    assert (s["images"], s["found"], s["misses"]) == (4, 3, 1)
    # found: a (+2), c (-6), d (+5): MAE 13/3, signed +1/3; gender known for a (right) and c (right)
    assert s["mae"] == pytest.approx(13 / 3) and s["signed_error"] == pytest.approx(1 / 3)
    assert s["gender_accuracy"] == 1.0 and s["flagged"] == 0.0
    # same faces (found clean too): a and c. Shifted |+2|, |-6| -> 4; clean |+4|, |-6| -> 5; change -1
    assert s["n_common"] == 2 and s["mae_common"] == pytest.approx(4.0)
    assert s["clean_mae_common"] == pytest.approx(5.0) and s["delta_mae_common"] == pytest.approx(-1.0)
    assert pl.condition_summary([_row("z", 3)])["mae"] is None


def test_resolve_split_defaults():
    assert pl.resolve_split("fgnet", None, None) == ("test", {"kind": "file", "file": "fgnet_dev_v1"})
    assert pl.resolve_split("utkface", None, None) == ("test", {"kind": "file", "file": "utkface_v1"})
    assert pl.resolve_split("utkface", "val", "mine.csv") == ("val", {"kind": "file", "file": "mine.csv"})
    assert pl.resolve_split("fgnet", "all", None) == ("all", None)
    assert pl.resolve_split("afad", None, None) == ("all", None)
    assert pl.resolve_split("afad", "test", None) == ("test", pl.RANDOM_SPLIT)
    with pytest.raises(AgekitError, match="unknown split"):
        pl.resolve_split("afad", "holdout", None)


def test_seeded_subset_is_nested_and_sorted():
    from agekit.data.records import FaceRecord

    records = [FaceRecord(path=f"/p/{i}.jpg", key=f"{i:03d}.jpg", age=i, dataset="x") for i in range(50)]
    small, large = seeded_subset(records, 5), seeded_subset(records, 20)
    assert len(small) == 5 and {r.key for r in small} <= {r.key for r in large}
    assert [r.key for r in large] == sorted(r.key for r in large)
    assert seeded_subset(records, None) == records == seeded_subset(records, 99)


def test_labelled_face_prefers_the_large_central_face():
    class F:
        def __init__(self, box):
            self.box = box

    small_centre, big_centre, big_corner = F((45, 45, 55, 55)), F((30, 30, 70, 70)), F((0, 0, 45, 45))
    assert pl.labelled_face([small_centre, big_corner, big_centre], (100, 100, 3)) is big_centre
    assert pl.labelled_face([], (100, 100, 3)) is None


# ------------------------------------------------------------------------------- errors (one line, exit 2)
def _one_line_error(capsys, argv, needle):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("agekit: error:") and needle in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_errors_without_data(capsys, tmp_path):
    _one_line_error(capsys, ["eval", str(tmp_path / "nope.onnx"), "--dataset", "fgnet"], "model file not found")
    _one_line_error(capsys, ["eval", str(MODEL), "--dataset", "lfw", "--threads", "1"], "unknown dataset 'lfw'")
    _one_line_error(capsys, ["eval", str(MODEL), "--thresholds", "18,x"], "--thresholds")
    _one_line_error(capsys, ["eval", str(tmp_path / "run.pt"), "--limit", "5"], "only for .onnx models")


def test_cli_error_on_an_empty_split(capsys, tmp_path, fgnet_root):
    split = tmp_path / "none.csv"
    split.write_text("key,split\nimages/999A01.JPG,test\n")
    _one_line_error(capsys, ["eval", str(MODEL), "--dataset", "fgnet", "--data", str(fgnet_root), "--split-file",
                             str(split), "--threads", "1", "--out", str(tmp_path / "out")], "is empty")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------- end to end, real images
def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_fgnet_end_to_end_through_the_cli(tmp_path, capsys, fgnet_root):
    out = tmp_path / "tmp"
    code = main(["eval", str(MODEL), "--dataset", "fgnet", "--data", str(fgnet_root), "--split", "all", "--limit", "12",
                 "--thresholds", "18", "--out", str(out), "--threads", "1", "--no-progress"])
    stdout = capsys.readouterr().out
    assert code == 0 and "fgnet all: 12 images" in stdout
    for name in ("metrics.json", "predictions.csv", "report.md"):
        assert (out / name).is_file(), name
    report = json.loads((out / "metrics.json").read_text())
    m, p = report["metrics"], report["protocol"]
    assert m["n"] + m["misses"] == 12 == m["images"] == p["n_images"]
    assert math.isfinite(m["mae"]) and m["mae"] < 30
    assert len(_read_csv(out / "predictions.csv")) == m["n"]
    t18 = m["thresholds"]["18"]
    assert set(t18) == {"overall", "by_gender", "by_race"}
    assert set(t18["overall"]) == {"threshold", "below", "at_or_above"}
    assert set(t18["overall"]["below"]) == {"n", "false_pass", "refused", "uncertain"}
    assert set(t18["overall"]["at_or_above"]) == {"n", "false_refuse", "passed", "uncertain"}
    assert t18["overall"]["below"]["n"] + t18["overall"]["at_or_above"]["n"] == m["n"]
    assert set(m["by_band"]) == set(bd.FINE_AGE_BAND_LABELS) and 0 <= m["coverage"]["coverage"] <= 1
    assert p["dataset"] == "fgnet" and p["split"] == "all" and p["limit"] == 12 and "--limit 12" in p["command"]
    text = (out / "report.md").read_text()
    for heading in ("## Faces found", "## By true-age band", "## Interval coverage", "## Age checks", "### T = 18"):
        assert heading in text


def test_utkface_shift_end_to_end(tmp_path, capsys, utkface_root):
    out = tmp_path / "shift"
    code = main(["eval", str(MODEL), "--dataset", "utkface", "--data", str(utkface_root), "--shift", "--limit", "8",
                 "--out", str(out), "--threads", "1", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())["metrics"]
    assert m["images"] == 8 and "gender_accuracy" in m and "mae_by_race_ci" in m
    assert list(m["shift"]) == ["clean", *SHIFTS]
    assert m["shift"]["clean"]["mae"] == pytest.approx(m["mae"])
    for name, s in m["shift"].items():
        assert s["images"] == 8 and s["found"] + s["misses"] == 8, name
        assert s["mae"] is None or 0 <= s["mae"] < 60
    rows = _read_csv(out / "shift_predictions.csv")
    assert len(rows) == 8 * len(SHIFTS) and {r["shift"] for r in rows} == set(SHIFTS)
    assert "## Image shifts" in (out / "report.md").read_text()


def test_misses_are_counted_with_their_reasons(tmp_path, utkface_root):
    """A blank image (no face) and a broken file are misses; the real face is scored."""
    from PIL import Image

    face = next(iter(sorted(utkface_root.glob("3*_1_2_*.jpg.chip.jpg"))))
    Image.fromarray(np.full((120, 160, 3), 128, dtype=np.uint8)).save(tmp_path / "blank.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "set.csv").write_text(f"path,age,gender\nblank.jpg,30,0\nbroken.jpg,40,1\n{face},35,1\n")
    result = pl.evaluate_onnx(MODEL, "csv", root=tmp_path / "set.csv", thresholds=(18,), threads=1, progress=False,
                              out_dir=tmp_path / "out")
    m = result["metrics"]
    assert (m["images"], m["found"], m["misses"]) == (3, 1, 2) and result["protocol"]["split"] == "all"
    reasons = {Path(x["key"]).name: x["reason"] for x in m["missed"]}
    assert reasons["blank.jpg"] == "no face found" and reasons["broken.jpg"].startswith("unreadable")
    assert "blank.jpg" in (tmp_path / "out" / "report.md").read_text()
