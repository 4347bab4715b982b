"""AgeEstimator on photos the tests compose from UTKFace chips: detection, rotation, boxes, crops, flags.
The model is the committed tests/data/tiny-age.onnx (fixture `tiny`): no torch needed."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from support.scenes import iou, noise_scene, paste

from agekit.crop import TEMPLATE_112, CropSpec, crop_face
from agekit.errors import AgekitError, ImageError
from agekit.runtime import AgeEstimator, FaceResult
from agekit.runtime import onnx_model as onnx_model_module
from agekit.runtime.crops import face_crops

pytestmark = pytest.mark.torchfree


@pytest.fixture(scope="module")
def est(tiny):
    try:
        estimator = AgeEstimator(tiny["onnx"], threads=1)
        estimator.detector
    except AgekitError as exc:
        pytest.skip(f"default face detector unavailable: {exc}")
    return estimator


def test_committed_tiny_model_carries_what_the_runtime_reads(tiny):
    from agekit.runtime import OnnxAgeModel

    meta = OnnxAgeModel(tiny["onnx"]).meta
    assert meta["format"] == "agekit-onnx-v1" and meta["backbone"] == "light_cnn64"
    assert meta["crop"]["rule"] == "align" and meta["crop"]["size"] == 32 and meta["views"] == [meta["crop"]]
    assert (meta["age_min"], meta["age_max"], meta["gender"], meta["embedding_size"]) == (0, 100, True, 256)
    c = meta["calibration"]
    assert c["method"] == "split-conformal" and c["n"] == 14 and c["q"] == c["quantiles"]["0.9"] > 0
    assert meta["checkpoint"]["steps"] == 2 and meta["quantization"] is None


def check_face(face: FaceResult, est):
    lo, hi = face.interval
    assert est.model.age_min <= lo <= face.age <= hi <= est.model.age_max
    assert face.level == 0.9 and face.std >= 0 and face.probs.shape == (101,)
    assert face.gender in ("female", "male") and 0.5 <= face.gender_prob <= 1
    assert face.gender_prob == pytest.approx(face.female_prob if face.gender == "female" else 1 - face.female_prob)
    assert face.embedding.shape == (256,)
    json.dumps(face.to_dict())                    # plain JSON types
    assert "probs" not in face.to_dict() and len(face.to_dict(probs=True)["probs"]) == 101


def test_several_faces_and_one_at_the_border(est, chips):
    scene = noise_scene(seed=11)
    truths = [paste(scene, chips[0], 40, 60, 190), paste(scene, chips[1], 330, 90, 150),
              paste(scene, chips[2], 520, 300, 170)]                # the third is cut by the right edge
    faces = est.predict(scene)
    assert len(faces) == 3
    assert sorted(max(range(3), key=lambda j: iou(f.box, truths[j])) for f in faces) == [0, 1, 2]
    assert all(max(iou(f.box, t) for t in truths) > 0.5 for f in faces)
    for f in faces:
        check_face(f, est)
        assert f.rotation == 0 and f.crop_from == "landmarks" and f.landmarks.shape == (5, 2) and f.score > 0
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
    # the batch call gives the same numbers and keeps images apart
    batch = est.predict_batch([scene, noise_scene(seed=3)])
    assert [len(b) for b in batch] == [3, 0]
    assert np.allclose([f.age for f in batch[0]], [f.age for f in faces], atol=1e-4)


def test_turned_photo_reports_the_rotation(est, chips):
    scene = noise_scene(seed=12)
    truth = paste(scene, chips[3], 220, 110, 200, quarter_turns=-1)   # face turned clockwise
    faces = est.predict(scene)
    assert len(faces) == 1 and faces[0].rotation == 90 and iou(faces[0].box, truth) > 0.5
    # the crop is upright: the same face pasted upright gives nearly the same crop
    upright = noise_scene(seed=12)
    paste(upright, chips[3], 220, 110, 200)
    ref = est.predict(upright)[0]
    assert abs(faces[0].age - ref.age) < 3


def test_user_boxes_pre_cropped_faces_and_aligned_crops(est, chips):
    scene = noise_scene(seed=13)
    truth = paste(scene, chips[0], 200, 100, 180)
    faces = est.predict(scene, boxes=[truth, (0, 0, 60, 60)])
    assert len(faces) == 2 and faces[0].crop_from == "box" and faces[0].landmarks is None
    assert faces[0].score is None and faces[0].box == pytest.approx(truth)
    check_face(faces[0], est)
    with pytest.raises(AgekitError, match="outside"):
        est.predict(scene, boxes=[(700, 10, 800, 100)])
    with pytest.raises(AgekitError, match="empty"):
        est.predict(scene, boxes=[(50, 50, 40, 90)])
    whole = est.predict_crops([chips[0], chips[1]], aligned=False)     # --no-detect: image = face box
    assert len(whole) == 2 and whole[0].box == (0.0, 0.0, 200.0, 200.0) and whole[0].crop_from == "image"
    spec = est.model.views[0]
    crops = np.stack([crop_face(c, spec, box=(0, 0, 200, 200)) for c in chips[:2]])
    aligned = est.predict_crops(crops)                                   # already in the model's framing
    assert [f.age for f in aligned] == pytest.approx([f.age for f in whole], abs=1e-4)
    with pytest.raises(AgekitError, match="aligned crops must be uint8"):
        est.predict_crops(np.zeros((1, 64, 64, 3), np.uint8))


def test_flags_mark_small_and_blurry_faces(est, chips):
    scene = noise_scene(seed=14)
    truth = paste(scene, chips[1], 100, 100, 200)
    sharp = est.predict(scene, boxes=[truth])[0]
    assert sharp.flags == []
    blurred = cv2.GaussianBlur(scene, (0, 0), 6)
    assert est.predict(blurred, boxes=[truth])[0].flags == ["blurry"]
    # a 16 px face: the 32 px crop (margin 0.4) enlarges it 32 / (16 * 1.4) = 1.43x -> not small; 12 px: 1.9x
    assert "small" not in est.predict(scene, boxes=[(300, 300, 316, 316)])[0].flags
    assert "small" in est.predict(scene, boxes=[(300, 300, 312, 312)])[0].flags


def test_age_probability_and_check_follow_the_calibrated_interval(est, chips):
    face = est.predict_crops([chips[2]], aligned=False)[0]
    probs = [est.age_probability(face, t) for t in (0, 10, 30, 60, 100)]
    assert probs == sorted(probs, reverse=True) and all(0 <= p <= 1 for p in probs)
    assert est.check_age(face, 0) == ("over", pytest.approx(est.age_probability(face, 0)))
    assert est.check_age(face, 101)[0] == "under"
    lo, hi = face.interval
    assert est.check_age(face, (lo + hi) / 2)[0] == "uncertain"
    assert est.check_age(face, lo)[1] >= 0.95 - 1e-6       # over at level 0.9 means P >= (1 + 0.9) / 2
    # another level: narrower intervals, same point estimate
    narrow = AgeEstimator(est.model.path, level=0.8, threads=1).predict_crops([chips[2]], aligned=False)[0]
    assert narrow.age == pytest.approx(face.age) and narrow.half_width <= face.half_width
    with pytest.raises(AgekitError, match="between 0 and 1"):
        AgeEstimator(est.model.path, level=90)


def test_bad_inputs_raise_one_line_errors(est, tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        est.predict(tmp_path / "empty.jpg")
    with pytest.raises(AgekitError, match="uint8"):
        est.predict(np.zeros((50, 50, 3), np.float32))
    assert est.predict(np.zeros((50, 50), np.uint8)) == []             # grayscale, no face


def test_missing_packaged_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_model_module, "default_model_path", lambda name="default": tmp_path / f"{name}.onnx")
    with pytest.raises(AgekitError, match="packaged model is missing"):
        AgeEstimator()
    with pytest.raises(AgekitError, match=r"packaged model is missing .*fast\.onnx"):
        AgeEstimator(model="fast")


def test_packaged_model_names_resolve_to_packaged_files(tmp_path, monkeypatch):
    from agekit.runtime.onnx_model import PACKAGED_MODELS, resolve_model

    assert resolve_model(None).name == PACKAGED_MODELS["default"] == "agekit-default.onnx"
    assert resolve_model("fast").name == "agekit-fast.onnx" and resolve_model("fast").parent.name == "weights"
    assert resolve_model("my.onnx") == Path("my.onnx")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fast").write_bytes(b"")  # a file of that name in the working folder is the user's
    assert resolve_model("fast") == Path("fast")


def test_runtime_crop_is_the_training_crop_and_pinned():
    """The runtime crops with `crop_face` itself (no second implementation), pinned on a fixed image."""
    yy, xx = np.mgrid[0:240, 0:320]
    image = np.stack([(xx * 255 // 319), (yy * 255 // 239), ((xx * 3 + yy * 5) % 256)], axis=2).astype(np.uint8)
    angle = np.deg2rad(12.0)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) * 1.3
    points = TEMPLATE_112 @ rot.T + [100.0, 50.0]
    spec = CropSpec(size=64, rule="align", margin=0.4)
    (crop,), magnification = face_crops(image, [spec], landmarks=points)
    assert np.array_equal(crop, crop_face(image, spec, landmarks=points))
    assert magnification == pytest.approx(64 / (112 * 1.4) / 1.3, rel=1e-3)
    # pinned values (changing the crop rule or its interpolation must be deliberate)
    assert crop.reshape(-1, 3).mean(0) == pytest.approx(PINNED_MEAN, abs=0.5)
    for (y, x), value in PINNED_PIXELS.items():
        assert np.abs(crop[y, x].astype(int) - value).max() <= 2, (y, x)


# Measured once (OpenCV 5.0); crop[32, 32] is the image at the face centre, template (56, 56) moved by the
# similarity: (156.1, 136.3), where the red and green ramps are 124.8 and 145.0.
PINNED_MEAN = (123.52, 143.10, 127.49)
PINNED_PIXELS = {(0, 0): (62, 16, 57), (10, 50): (181, 85, 57), (32, 32): (124, 146, 129), (50, 12): (65, 191, 120)}
