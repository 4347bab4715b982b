import json
from pathlib import Path

import numpy as np
from PIL import Image

from agekit.data.cache import build_or_load, cache_key
from agekit.crop import CropSpec
from agekit.data.records import FaceRecord, read_dataset


def _dataset(tmp_path, n=5):
    records = []
    for i in range(n):
        path = tmp_path / f"{20 + i}_0_0_2017.jpg"
        Image.fromarray(np.full((40, 40, 3), 40 * i, np.uint8)).save(path, quality=95)
        records.append(FaceRecord(path=str(path), key=path.name, age=20.0 + i, dataset="t"))
    return records


def test_cache_builds_once_then_loads(tmp_path):
    records = _dataset(tmp_path)
    spec = CropSpec(size=16)
    first = build_or_load("t", records, spec, tmp_path / "cache", workers=1, progress=False)
    assert first.images.shape == (5, 16, 16, 3) and first.images.dtype == np.uint8
    assert abs(int(first.images[3].mean()) - 120) <= 2
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    key = cache_key("t", records, spec)
    assert files == [f"{key}.json", f"{key}.npy"]
    # the second call must read the array, not the JPEGs: delete the images to prove it
    for r in records:
        Path(r.path).unlink()
    second = build_or_load("t", records, spec, tmp_path / "cache", workers=1, progress=False)
    assert np.array_equal(first.images, second.images)


def test_cache_key_changes_with_selection_and_crop(tmp_path):
    records = _dataset(tmp_path)
    base = cache_key("t", records, CropSpec(size=16))
    assert base != cache_key("t", records[:4], CropSpec(size=16))
    assert base != cache_key("t", records, CropSpec(size=32))
    assert base != cache_key("t", records, CropSpec(size=16, rule="align"))


def test_unreadable_images_are_counted_and_dropped(tmp_path):
    records = _dataset(tmp_path)
    (tmp_path / "21_0_0_2017.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "22_0_0_2017.jpg").write_bytes(b"")
    cache = build_or_load("t", records, CropSpec(size=16), tmp_path / "cache", workers=2, progress=False)
    assert [r.age for r in cache.records] == [20.0, 23.0, 24.0]
    assert len(cache.images) == 3 and set(cache.failures) == {"21_0_0_2017.jpg", "22_0_0_2017.jpg"}
    meta = json.loads(next((tmp_path / "cache").glob("*.json")).read_text())
    assert "empty file" in meta["failures"]["22_0_0_2017.jpg"]


def test_parallel_build_matches_serial_on_real_fgnet(fgnet_root, tmp_path):
    records = read_dataset("fgnet", fgnet_root).records[:40]
    spec = CropSpec(size=48, rule="align")
    serial = build_or_load("fgnet", records, spec, tmp_path / "a", workers=1, progress=False)
    parallel = build_or_load("fgnet", records, spec, tmp_path / "b", workers=2, progress=False)
    assert np.array_equal(serial.images, parallel.images) and not serial.failures
    # every crop holds image content, not the zero fill of a failed read
    assert (serial.images.reshape(len(records), -1).std(axis=1) > 5).all()
