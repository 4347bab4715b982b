"""Training crops from the face detector (data.landmarks=detect): the crop predict makes."""
import shutil

import cv2
import numpy as np
import pytest

from agekit.config import load_config
from agekit.data.detected import attach_detections, main_face
from agekit.crop import CropSpec, crop_face
from agekit.data.records import read_dataset
from agekit.detect import Face, create_detector, detect_with_rotation
from agekit.errors import AgekitError
from agekit.io import load_image


def _face(x1, y1, x2, y2, score=0.9):
    return Face(box=(x1, y1, x2, y2), landmarks=np.zeros((5, 2)), score=score)


def test_main_face_prefers_large_central_face():
    central = _face(80, 80, 140, 140)            # 60 px, at the centre of a 220x220 image
    edge_big = _face(150, 0, 220, 70)            # larger, but in the corner
    assert main_face([edge_big, central], (220, 220, 3)) is central
    assert main_face([], (10, 10)) is None
    # Same distance from the centre: the larger wins.
    assert main_face([_face(90, 90, 130, 130), _face(80, 80, 140, 140)], (220, 220)).width == 60


def test_detect_landmarks_need_align_rule():
    with pytest.raises(AgekitError, match="data.landmarks=detect needs data.crop.rule=align"):
        load_config(None, ["data.landmarks=detect", "data.crop.rule=full"])
    with pytest.raises(AgekitError, match="data.landmarks"):
        load_config(None, ["data.landmarks=guess"])


def test_attach_detections_on_utkface_matches_predict_crop(utkface_root, tmp_path):
    root = tmp_path / "utk"
    root.mkdir()
    names = sorted(p.name for p in utkface_root.glob("*.jpg"))[:6]
    for name in names:
        shutil.copy(utkface_root / name, root / name)
    (root / "broken_1_0_20170101.jpg.chip.jpg").write_bytes(b"not a jpeg")
    blank = np.full((200, 200, 3), 128, np.uint8)
    cv2.imwrite(str(root / "30_0_0_20170101000000001.jpg.chip.jpg"), blank)  # no face in it
    records = read_dataset("utkface", root).records
    kept, dropped = attach_detections("utkface", records, cache_dir=tmp_path / "cache", progress=False)
    assert {k for k, _ in dropped} >= {"30_0_0_20170101000000001.jpg.chip.jpg"}
    assert len(kept) >= 5 and all(r.landmarks.shape == (5, 2) and r.box is not None for r in kept)
    # The crop training caches equals the crop predict makes from the same image with the same detector.
    spec = CropSpec(size=64, rule="align", margin=0.4)
    r = kept[0]
    image = load_image(r.path)
    faces, _ = detect_with_rotation(create_detector(), image)
    live = crop_face(image, spec, landmarks=main_face(faces, image.shape).landmarks)
    cached = crop_face(image, spec, landmarks=r.face_points(), box=r.box)
    assert np.abs(live.astype(int) - cached.astype(int)).max() <= 2  # landmarks are stored to 0.01 px
    # Second call reads the detection cache (no detector needed): same result.
    again, _ = attach_detections("utkface", records, cache_dir=tmp_path / "cache", progress=False)
    assert [a.key for a in again] == [k.key for k in kept]
    assert np.allclose(again[0].landmarks, kept[0].landmarks)
