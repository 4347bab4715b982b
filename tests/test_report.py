"""The evaluation report on ~50 synthetic predictions with tiny images."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

from agekit.eval.error_analysis import ERROR_PLOT_TITLES

pytest.importorskip("matplotlib")

from agekit.eval.metrics import AGE_BAND_LABELS, compute_metrics  # noqa: E402
from agekit.eval.report import write_report  # noqa: E402

N = 50
PLOTS = ["pred_vs_true", "mae_by_age", "error_hist", "examples"]


@pytest.fixture
def predictions(tmp_path):
    """50 rows with 16x16 images; ages 1..95 so every band has samples.

    Row 3 is the worst prediction and its image is missing, so the examples grid must draw a grey tile.
    """
    rng = np.random.default_rng(0)
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    rows = []
    for i in range(N):
        path = image_dir / f"{i}.png"
        if i != 3:
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)
        true = float(1 + i * 94 // (N - 1))
        pred = true + (40 if i == 3 else rng.normal(0, 5))
        rows.append({"key": f"images/{i}.png", "path": str(path), "true_age": true, "pred_age": float(pred),
                     "pred_std": float(rng.uniform(2, 6)),
                     "gender": i % 2 if i % 7 else None, "gender_prob": float(rng.uniform()), "race": i % 5})
    return rows


def _metrics(rows):
    return compute_metrics([r["true_age"] for r in rows], [r["pred_age"] for r in rows],
                           gender=[r["gender"] for r in rows], gender_pred=[r["gender_prob"] for r in rows],
                           race=[r["race"] for r in rows], pred_std=[r["pred_std"] for r in rows])


PROTOCOL = {"dataset": "utkface", "split_file": "splits/utk_test.csv", "checkpoint": "runs/a|b/best.pt",
            "method": "dldl", "backbone": "resnet18", "input_size": 224}
COMPLEXITY = {"params": 11_689_512, "params_trainable": 11_689_512, "gmacs": 1.814, "input_size": 224,
              "latency_ms_median": 12.3, "latency_ms_p90": 14.1, "threads": 1, "torch": "2.x", "cpu": "test cpu"}


def test_write_report_files(tmp_path, predictions):
    out_dir = tmp_path / "report"
    metrics = _metrics(predictions)
    written = write_report(out_dir, metrics, predictions, title="Test run", protocol=PROTOCOL,
                           complexity=COMPLEXITY)

    assert set(written) == {"metrics", "predictions", "report", *PLOTS, *ERROR_PLOT_TITLES}
    # every file is in place and no temporary file is left over
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(p.name for p in written.values())
    for name in PLOTS:
        with Image.open(written[name]) as im:
            assert im.format == "PNG" and im.width > 0 and im.height > 0

    saved = json.loads(written["metrics"].read_text())
    assert saved == {"title": "Test run", "metrics": json.loads(json.dumps(metrics)), "protocol": PROTOCOL,
                     "complexity": COMPLEXITY}

    with open(written["predictions"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == N
    assert float(rows[0]["abs_error"]) == pytest.approx(abs(predictions[0]["pred_age"] - predictions[0]["true_age"]),
                                                       abs=1e-4)
    assert rows[7]["gender"] == ""  # None is written as an empty cell

    md = written["report"].read_text()
    assert md.startswith("# Test run\n")
    assert f"{metrics['mae']:.2f}" in md and f"{metrics['rmse']:.2f}" in md
    for band in AGE_BAND_LABELS:
        assert f"| {band} |" in md
    for text in ("utkface", "resnet18", "runs/a\\|b/best.pt", "Gender accuracy", "MAE by race", "Asian",
                 "female", "Coverage", "11.69 M", "test cpu"):
        assert text in md
    for name in PLOTS:
        assert f"]({name}.png)" in md


def test_report_without_paths_or_optional_parts(tmp_path, predictions):
    rows = [{"key": r["key"], "path": None, "true_age": r["true_age"], "pred_age": r["pred_age"]}
            for r in predictions[:10]]
    metrics = compute_metrics([r["true_age"] for r in rows], [r["pred_age"] for r in rows])
    written = write_report(tmp_path, metrics, rows, title="Minimal", protocol={"dataset": "x"}, complexity=None)

    assert "examples" not in written and not (tmp_path / "examples.png").exists()
    md = written["report"].read_text()
    assert "examples.png" not in md and "Model complexity" not in md and "Gender accuracy" not in md
    assert "| 60+ | 0 | – |" in md  # empty bands are still listed
    assert json.loads(written["metrics"].read_text())["complexity"] is None


def test_examples_use_loader_and_survive_failures(tmp_path, predictions):
    calls = []

    def loader(path):
        calls.append(path)
        if len(calls) == 1:
            raise OSError("boom")
        return np.zeros((40, 30, 3), dtype=np.uint8)

    written = write_report(tmp_path / "r", _metrics(predictions), predictions, title="t", protocol={},
                           complexity=None, image_loader=loader, error_analysis=False)
    assert len(calls) == 16  # 8 best + 8 worst
    with Image.open(written["examples"]) as im:
        assert im.width > 0
