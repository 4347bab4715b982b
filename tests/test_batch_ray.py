"""Batch prediction on Ray Data (agekit.batch): the example script on a local Ray instance, folder -> Parquet,
checked against AgeEstimator.predict on the same files; the per-batch predictor without Ray."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pa = pytest.importorskip("pyarrow")
pytest.importorskip("ray")

from agekit import AgeEstimator
from agekit.batch.predictor import COLUMNS, FacePredictor
from agekit.errors import AgekitError

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "examples" / "astronaut.jpg"
BROKEN = "not a readable image (UnidentifiedImageError)"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-photos")
    image = Image.open(ASTRONAUT).convert("RGB")
    w, h = image.size
    image.save(root / "astronaut.jpg", quality=92)
    image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / "flipped.jpg", quality=92)
    (root / "sub").mkdir()
    image.resize((w * 3 // 4, h * 3 // 4)).save(root / "sub" / "small.png")
    (root / "broken.jpg").write_text("this is not an image\n")
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(root / "noise.png")
    return root


@pytest.fixture(scope="module")
def estimator():
    return AgeEstimator(threads=1)


def _expected(estimator, path: Path):
    return [(f.age, f.std, f.interval[0], f.interval[1], f.gender, *f.box) for f in estimator.predict(path)]


def _rows(table) -> dict:
    """path -> [row dict, ...] in face order (table: an Arrow table or a list of row dicts)."""
    out: dict = {}
    rows = table.to_pylist() if hasattr(table, "to_pylist") else table
    for row in sorted(rows, key=lambda r: (r["path"], r["face"] or 0)):
        out.setdefault(row["path"], []).append(row)
    return out


def _check_rows(rows, photos, estimator, name_of):
    names = {name_of(p): p for p in rows}
    assert set(names) == {"astronaut.jpg", "flipped.jpg", "sub/small.png", "broken.jpg", "noise.png"}
    for name in ("astronaut.jpg", "flipped.jpg", "sub/small.png"):
        got = rows[names[name]]
        want = _expected(estimator, photos / name)
        assert [r["face"] for r in got] == list(range(1, len(want) + 1)) and got[0]["error"] is None
        for r, w in zip(got, want):
            values = (r["age"], r["std"], r["lo"], r["hi"], r["gender"], r["x1"], r["y1"], r["x2"], r["y2"])
            assert values[4] == w[4] and r["level"] == 0.9 and r["rotation"] == 0
            assert np.allclose([v for i, v in enumerate(values) if i != 4],
                               [v for i, v in enumerate(w) if i != 4], atol=0.005), name  # same to rounding
    for name, error in (("broken.jpg", BROKEN), ("noise.png", "no face found")):
        (row,) = rows[names[name]]
        assert row["error"] == error and row["face"] is None and row["age"] is None


def test_predictor_rows_without_ray(photos, estimator):
    """One batch mixing relative paths (under root), bytes already read and files that fail."""
    predictor = FacePredictor(root=str(photos), threads=1)
    batch = {"path": np.array(["astronaut.jpg", "flipped.jpg", "sub/small.png", "broken.jpg", "noise.png",
                               "missing.jpg"]),
             "bytes": np.array([None, (photos / "flipped.jpg").read_bytes(), None, None, None, None], dtype=object)}
    table = predictor(batch)
    assert table.schema.names == [name for name, _ in COLUMNS]
    rows = _rows(table)
    assert rows.pop("missing.jpg")[0]["error"] == "file not found"
    _check_rows(rows, photos, estimator, name_of=lambda p: p)


def test_output_folder_is_never_overwritten(tmp_path, photos):
    from agekit.batch.ray_data import predict_dataset

    out = tmp_path / "ages.parquet"
    out.mkdir()
    (out / "old.parquet").write_bytes(b"earlier results")
    with pytest.raises(AgekitError, match="already exists and is not an empty folder"):
        predict_dataset(photos, out)
    assert (out / "old.parquet").read_bytes() == b"earlier results"


def test_usage_errors_come_before_ray(tmp_path, photos):
    """A model that is not ONNX or an unknown detector is one AgekitError on the driver, not dying actors."""
    from agekit.batch.ray_data import predict_dataset

    (tmp_path / "bad.onnx").write_text("not a model\n")
    out = tmp_path / "ages.parquet"
    with pytest.raises(AgekitError, match="bad.onnx: not a readable ONNX model"):
        predict_dataset(photos, out, model=str(tmp_path / "bad.onnx"))
    with pytest.raises(AgekitError, match="face detector 'no-such' unknown"):
        predict_dataset(photos, out, detector="no-such")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.onnx"]


def test_ray_example_folder_to_parquet(photos, estimator, tmp_path):
    """examples/ray_batch.py on a local 2-CPU Ray instance, one model actor, batches of 2 files."""
    import pyarrow.dataset as pads

    out = tmp_path / "ages.parquet"
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "ray_batch.py"), str(photos), str(out),
                           "--num-cpus", "2", "--concurrency", "1", "--batch-size", "2"],
                          check=False, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 1, done.stderr[-3000:]  # 1: some files failed, as agekit predict
    assert f"5 files, 2 failed, 3 faces -> {out}" in done.stdout
    assert not list(tmp_path.glob(".ages.parquet.partial-*"))  # written there, then renamed to OUT
    table = pads.dataset(out, format="parquet").to_table()
    assert table.schema.names == [name for name, _ in COLUMNS]
    _check_rows(_rows(table), photos, estimator, name_of=lambda p: Path(p).relative_to(photos).as_posix())


def test_spark_recipes_of_the_docs(photos, estimator, tmp_path, monkeypatch):
    """The two code blocks of docs/batch.md's Spark section, run as written on a local 2-core Spark."""
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("Spark needs Java")
    from pyspark.sql import SparkSession

    text = (ROOT / "docs" / "batch.md").read_text()
    blocks = re.findall(r"```python\n(.+?)```", text[text.index("\n## Spark"):], re.DOTALL)
    assert len(blocks) == 2
    names = ["astronaut.jpg", "flipped.jpg", "sub/small.png", "broken.jpg", "noise.png"]
    (tmp_path / "manifest.txt").write_text("".join(f"{photos / n}\n" for n in names))
    monkeypatch.chdir(tmp_path)  # the blocks read manifest.txt and write beside it
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    spark = SparkSession.builder.master("local[2]").config("spark.ui.enabled", "false").getOrCreate()
    try:
        namespace = {"spark": spark, "__name__": "docs_batch_spark"}
        for block in blocks:
            exec(compile(block, "docs/batch.md", "exec"), namespace)  # noqa: S102 (the documented code itself)
        best = {r["path"]: r.asDict() for r in spark.read.parquet("best_face.parquet").collect()}
        faces = [r.asDict() for r in spark.read.parquet("faces.parquet").collect()]
    finally:
        spark.stop()
    _check_rows(_rows(faces), photos, estimator, name_of=lambda p: Path(p).relative_to(photos).as_posix())
    first = _expected(estimator, photos / "astronaut.jpg")[0]
    row = best[str(photos / "astronaut.jpg")]
    assert row["faces"] == 1 and row["error"] is None and abs(row["age"] - first[0]) < 0.005
    assert best[str(photos / "broken.jpg")]["error"] == BROKEN and best[str(photos / "broken.jpg")]["faces"] == 0
    assert best[str(photos / "noise.png")]["error"] == "no face found" and best[str(photos / "noise.png")]["age"] is None
