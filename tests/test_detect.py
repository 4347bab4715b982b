"""Face detection: interface, registry, rotation retry, and the default backend on composed scenes.

Scenes are composed in memory from UTKFace chips (tests/support/scenes.py; skipped without ../shared/data).
Run with OMP_NUM_THREADS=1 like CI; the default detector takes about 0.1 s per 640x480 image there.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
from support.scenes import iou, noise_scene, paste

from agekit.detect import (DEFAULT_DETECTOR, Detector, Face, create_detector, detect_with_rotation, face_roll,
                           list_detectors)
from agekit.detect.base import as_rgb, rotate_image, unrotate_face
from agekit.errors import AgekitError


@pytest.fixture(scope="module")
def detector():
    try:
        return create_detector(threads=1)
    except AgekitError as exc:  # the detector package is not installed
        pytest.skip(f"default face detector unavailable: {exc}")


# ------------------------------------------------------------------------------------ interface, no model
def test_registry_lists_backends_and_rejects_unknown():
    assert {"centerface", "yunet", "dlib-hog"} <= set(list_detectors())
    assert DEFAULT_DETECTOR in list_detectors()
    with pytest.raises(AgekitError, match="unknown"):
        create_detector("no-such-detector")


def test_yunet_missing_model_is_a_clear_error(tmp_path):
    missing = tmp_path / "face_detection_yunet_2023mar.onnx"
    with pytest.raises(AgekitError, match=re.escape(str(missing))):
        create_detector("yunet", model_path=missing)
    with pytest.raises(AgekitError, match="model_path"):
        create_detector("yunet")


def test_face_normalises_fields():
    face = Face(box=[1, 2, 11, 32], landmarks=np.arange(10), score=np.float32(0.5))
    assert face.box == (1.0, 2.0, 11.0, 32.0) and face.landmarks.shape == (5, 2)
    assert face.size == 10.0 and isinstance(face.score, float)


def test_as_rgb_accepts_gray_and_rejects_other_types():
    gray = np.zeros((4, 5), np.uint8)
    assert as_rgb(gray).shape == (4, 5, 3) and as_rgb(gray[:, :, None]).shape == (4, 5, 3)
    assert as_rgb(np.zeros((4, 5, 4), np.uint8)).shape == (4, 5, 3)
    with pytest.raises(AgekitError, match="uint8"):
        as_rgb(np.zeros((4, 5, 3), np.float32))
    with pytest.raises(AgekitError, match="shape"):
        as_rgb(np.zeros((4, 5, 2), np.uint8))


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_unrotate_maps_points_back_exactly(rotation):
    image = np.zeros((30, 50, 3), np.uint8)
    image[5:9, 10:20] = 255                      # a bright 10x4 block at x 10..20, y 5..9
    turned = rotate_image(image, rotation)
    ys, xs = np.nonzero(turned[:, :, 0])
    found = Face(box=(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), landmarks=np.zeros((5, 2)), score=1.0)
    back = unrotate_face(found, rotation, width=50, height=30)
    assert np.allclose(back.box, (10, 5, 20, 9))


class _Scripted(Detector):
    """Returns fixed faces (in the coordinates of the image it is given) only for a chosen image shape."""

    name = "scripted"

    def __init__(self, faces, shape, **kw):
        super().__init__(**kw)
        self.faces, self.shape = faces, shape

    def _detect(self, image):
        return list(self.faces) if image.shape[:2] == self.shape else []


def test_options_filter_sort_and_limit():
    lm = np.zeros((5, 2))
    faces = [Face((0, 0, 20, 20), lm, 0.6), Face((0, 0, 80, 90), lm, 0.9), Face((0, 0, 50, 50), lm, 0.3)]
    assert [f.score for f in _Scripted(faces, (100, 100), threshold=0).detect(np.zeros((100, 100, 3), np.uint8))] \
        == [0.9, 0.6, 0.3]
    image = np.zeros((100, 100, 3), np.uint8)
    assert [f.score for f in _Scripted(faces, (100, 100), threshold=0.5).detect(image)] == [0.9, 0.6]
    assert [f.score for f in _Scripted(faces, (100, 100), threshold=0, min_face=30).detect(image)] == [0.9, 0.3]
    assert [f.score for f in _Scripted(faces, (100, 100), threshold=0, max_faces=1).detect(image)] == [0.9]
    with pytest.raises(AgekitError):
        _Scripted(faces, (100, 100), max_faces=0)


def test_rotation_retry_reports_angle_and_original_coordinates():
    # The scripted detector answers only on a 60x40 image, i.e. the 40x60 one turned by a quarter: the
    # upright pass finds nothing, the first retry (90) finds the face, whose box must come back mapped.
    face = Face((10, 5, 20, 9), np.array([[11, 6], [19, 6], [15, 7], [12, 8], [18, 8]]), 0.8)
    faces, rotation = detect_with_rotation(_Scripted([face], (60, 40), threshold=0), np.zeros((40, 60, 3), np.uint8))
    assert rotation == 90
    expected = unrotate_face(face, 90, width=60, height=40)
    assert np.allclose(faces[0].box, expected.box) and np.allclose(faces[0].landmarks, expected.landmarks)
    assert detect_with_rotation(_Scripted([face], (7, 7)), np.zeros((40, 60, 3), np.uint8)) == ([], 0)


def test_face_roll_and_retry_of_sideways_faces():
    upright = np.array([[10, 10], [20, 10], [15, 15], [11, 20], [19, 20]], float)
    assert abs(face_roll(Face((0, 0, 30, 30), upright, 1))) < 1e-9
    sideways = upright[:, ::-1] * [-1, 1] + [40, 0]        # head top pointing to image-right
    assert abs(face_roll(Face((0, 0, 30, 30), sideways, 1)) - 90) < 1e-9

    class Sideways(Detector):
        """Upright pass: a sideways face scoring 0.6; turned by 90: an upright face scoring 0.9."""

        def _detect(self, image):
            if image.shape[:2] == (40, 60):
                return [Face((0, 0, 30, 30), sideways, 0.6)]
            return [Face((0, 0, 30, 30), upright, 0.9)] if image.shape[:2] == (60, 40) else []

    faces, rotation = detect_with_rotation(Sideways(threshold=0), np.zeros((40, 60, 3), np.uint8))
    assert rotation == 90 and faces[0].score == 0.9
    faces, rotation = detect_with_rotation(Sideways(threshold=0), np.zeros((40, 60, 3), np.uint8), max_roll=None)
    assert rotation == 0 and faces[0].score == 0.6

    class StillSideways(Detector):
        def _detect(self, image):
            return [Face((0, 0, 30, 30), sideways, 0.6)]

    assert detect_with_rotation(StillSideways(threshold=0), np.zeros((40, 60, 3), np.uint8))[1] == 0

    class UprightOnlyAfterMinus90(Detector):
        """Nothing upright; a sideways false hit when turned by 90; an upright face when turned by -90."""

        calls = 0

        def _detect(self, image):
            self.calls += 1
            if self.calls == 2:
                return [Face((0, 0, 30, 30), sideways, 0.95)]
            return [Face((0, 0, 30, 30), upright, 0.5)] if self.calls == 3 else []

    faces, rotation = detect_with_rotation(UprightOnlyAfterMinus90(threshold=0), np.zeros((40, 60, 3), np.uint8))
    assert rotation == -90 and faces[0].score == 0.5


# ------------------------------------------------------------------------------ the default detector
def test_default_finds_nothing_in_noise(detector):
    assert detector.detect(noise_scene(seed=3)) == []
    assert detect_with_rotation(detector, noise_scene(seed=4)) == ([], 0)


def test_default_finds_one_pasted_face(detector, chips):
    scene = noise_scene(seed=1)
    truth = paste(scene, chips[0], 250, 120, 160)
    faces = detector.detect(scene)
    assert len(faces) == 1
    face = faces[0]
    assert iou(face.box, truth) > 0.5
    assert face.landmarks.shape == (5, 2) and 0 < face.score <= 1
    x1, y1, x2, y2 = face.box
    eyes = face.landmarks[:2]
    assert np.all((eyes[:, 0] > x1) & (eyes[:, 0] < x2) & (eyes[:, 1] > y1) & (eyes[:, 1] < (y1 + y2) / 2))
    assert eyes[0, 0] < eyes[1, 0]                      # image-left eye first
    assert face.landmarks[3, 1] > face.landmarks[2, 1] > eyes[:, 1].max()  # mouth below nose below eyes


def test_default_finds_three_faces_and_options_apply(detector, chips):
    scene = noise_scene(seed=2)
    truths = [paste(scene, chips[1], 30, 40, 180), paste(scene, chips[2], 300, 60, 120),
              paste(scene, chips[3], 480, 300, 70)]
    faces = detector.detect(scene)
    assert len(faces) == 3
    assert sorted(max(range(3), key=lambda j: iou(f.box, truths[j])) for f in faces) == [0, 1, 2]
    assert all(max(iou(f.box, t) for t in truths) > 0.5 for f in faces)
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)

    smallest = min(f.size for f in faces)
    options = dict(threads=1)
    assert len(create_detector(min_face=smallest + 1, **options).detect(scene)) == 2
    top = create_detector(max_faces=1, **options).detect(scene)
    assert len(top) == 1 and top[0].score == faces[0].score
    cut = (faces[0].score + faces[-1].score) / 2
    assert all(f.score >= cut for f in create_detector(threshold=cut, **options).detect(scene))
    assert len(create_detector(threshold=cut, **options).detect(scene)) < 3


@pytest.mark.parametrize("quarter_turns, expected", [(-1, 90), (1, -90), (2, 180)])
def test_rotation_retry_finds_turned_face(detector, chips, quarter_turns, expected):
    scene = noise_scene(seed=5)
    truth = paste(scene, chips[0], 200, 100, 190, quarter_turns=quarter_turns)
    faces, rotation = detect_with_rotation(detector, scene)
    assert rotation == expected                          # the turn that makes the face upright again
    assert len(faces) == 1 and iou(faces[0].box, truth) > 0.5
    x1, y1, x2, y2 = faces[0].box
    assert 0 <= x1 < x2 <= 640 and 0 <= y1 < y2 <= 480   # original (not turned) coordinates
    # Landmarks are in original coordinates and follow the upright face: its roll there is the turn.
    assert abs((face_roll(faces[0]) - (-90 * quarter_turns) + 180) % 360 - 180) < 30
    upright, _ = detect_with_rotation(detector, rotate_image(scene, expected))
    assert abs(face_roll(upright[0])) < 20


def test_grayscale_photo_works(detector, chips):
    scene = noise_scene(seed=6)
    truth = paste(scene, chips[1], 220, 150, 150)
    gray = np.round(scene.astype(np.float32) @ [0.299, 0.587, 0.114]).astype(np.uint8)
    for image in (gray, gray[:, :, None], np.repeat(gray[:, :, None], 3, axis=2)):
        faces = detector.detect(image)
        assert len(faces) == 1 and iou(faces[0].box, truth) > 0.5


def test_large_photo_is_shrunk_and_mapped_back(chips):
    try:
        det = create_detector(threads=1, max_side=640)
    except AgekitError as exc:
        pytest.skip(f"default face detector unavailable: {exc}")
    scene = noise_scene(seed=9, height=1500, width=2000)
    truth = paste(scene, chips[0], 1200, 700, 500)
    faces = det.detect(scene)
    assert len(faces) == 1 and iou(faces[0].box, truth) > 0.5


def test_faces_cut_by_the_border_do_not_crash(detector, chips):
    scene = noise_scene(seed=7, height=300, width=400)
    paste(scene, chips[2], -60, -50, 160)
    paste(scene, chips[3], 320, 200, 150)
    faces = detector.detect(scene)
    assert all(np.isfinite(f.box).all() and np.isfinite(f.landmarks).all() for f in faces)
    detect_with_rotation(detector, scene)
    # Tiny and odd-sized images too.
    assert detector.detect(np.zeros((1, 1, 3), np.uint8)) == []
    assert isinstance(detector.detect(scene[:37, :53]), list)


@pytest.mark.parametrize("name", ["dlib-hog", "centerface-dlib68"])
def test_optional_dlib_backends_find_a_face(chips, name):
    import importlib.util

    if importlib.util.find_spec("dlib") is None or importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("optional backends need dlib-bin and face-recognition-models")
    try:
        det = create_detector(name)
    except AgekitError as exc:
        pytest.skip(f"{name} unavailable: {exc}")
    scene = noise_scene(seed=8)
    truth = paste(scene, chips[3], 200, 120, 170)   # a frontal face: HOG misses some chips (see the benchmark)
    faces = det.detect(scene)
    assert len(faces) == 1 and iou(faces[0].box, truth) > 0.5
    assert faces[0].landmarks[0, 0] < faces[0].landmarks[1, 0] < faces[0].box[2]
