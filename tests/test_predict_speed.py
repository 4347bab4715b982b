"""The fast prediction path: coarse-to-fine face search, the rotation retry on a reduced copy, per-face crops
from the face's own region, user boxes past the image, one detector under threads, thread defaults.

Behaviour only, no timings (the machine is shared). Scenes are composed in memory from UTKFace chips
(skipped without ../shared/data) and examples/astronaut.jpg; nothing is written.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from support.scenes import iou, noise_scene, paste

from agekit import onnx_session
from agekit.crop import TEMPLATE_112, CropSpec, alignment_matrix, face_region
from agekit.detect import Detector, create_detector, detect_with_rotation, register_detector
from agekit.detect.base import RETRY_SIDE
from agekit.errors import AgekitError
from agekit.io import load_image
from agekit.runtime import onnx_model
from agekit.runtime.crops import face_crops

ASTRONAUT = Path(__file__).resolve().parents[1] / "examples" / "astronaut.jpg"


def _detector(**options):
    try:
        return create_detector(threads=1, **options)
    except AgekitError as exc:  # the detector's runtime is not installed
        pytest.skip(f"default face detector unavailable: {exc}")


def _estimator(**options):
    from agekit import AgeEstimator

    try:
        return AgeEstimator(threads=1, **options)
    except AgekitError as exc:
        pytest.skip(f"packaged model unavailable: {exc}")


class Recording(Detector):
    """A real detector wrapping another one and recording the size of every image it is given."""

    name = "recording"

    def __init__(self, inner: Detector):
        super().__init__(threshold=inner.threshold)
        self.inner, self.work_side, self.shapes = inner, inner.work_side, []

    def _detect(self, image):
        self.shapes.append(image.shape[:2])
        return self.inner.detect(image)


# ------------------------------------------------------------------------------ coarse-to-fine search
def test_small_face_in_a_full_hd_photo_is_found(chips):
    scene = noise_scene(seed=21, height=1080, width=1920)
    truth = paste(scene, chips[0], 1200, 600, 30)          # a 30 px chip: a face of about 26 px
    reduced = _detector(max_side=480).detect(scene)           # one search of a reduced copy misses it
    assert not any(iou(f.box, truth) > 0.3 for f in reduced)
    faces = _detector().detect(scene)
    assert len(faces) == 1 and iou(faces[0].box, truth) > 0.4


def test_coarse_pass_alone_for_a_large_clear_face(chips):
    scene = noise_scene(seed=22)
    truth = paste(scene, chips[1], 220, 120, 200)
    det = _detector()
    faces = det.detect(scene)
    assert len(faces) == 1 and iou(faces[0].box, truth) > 0.5
    assert det.last_passes == [(256, 320)]                   # the 640x480 photo searched at 320x240 only


def test_astronaut_gives_the_same_face_as_the_single_search():
    image = load_image(ASTRONAUT)
    before = _detector(max_side=1280).detect(image)           # the former default: one search, full size
    after, rotation = detect_with_rotation(_detector(), image)
    assert len(before) == len(after) == 1 and rotation == 0
    assert np.abs(np.subtract(after[0].box, before[0].box)).max() <= 3
    assert np.abs(after[0].landmarks - before[0].landmarks).max() <= 3


def test_single_search_option_is_kept(chips):
    scene = noise_scene(seed=23)
    paste(scene, chips[2], 200, 100, 180)
    det = _detector(max_side=320)
    assert len(det.detect(scene)) == 1 and det.last_passes == [(256, 320)]
    with pytest.raises(AgekitError):
        create_detector(max_side=-1)


# ------------------------------------------------------------------------------ rotation retry
def test_rotation_retry_searches_reduced_copies(chips):
    inner = _detector()
    big = noise_scene(seed=24, height=3000, width=4000)      # no face: every orientation is searched
    rec = Recording(inner)
    assert detect_with_rotation(rec, big) == ([], 0)
    assert len(rec.shapes) == 4
    assert max(rec.shapes[0]) <= inner.work_side              # the upright pass: the detector's working size
    for shape in rec.shapes[1:]:
        assert max(shape) <= RETRY_SIDE
    assert rec.shapes[1] == rec.shapes[3][::-1]                # 90 then -90 and 180: turned copies
    assert sum(h * w for h, w in rec.shapes) < 0.2 * 4 * big.shape[0] * big.shape[1]


def test_turned_face_in_a_large_photo_maps_back(chips):
    scene = noise_scene(seed=25, height=1800, width=2400)
    truth = paste(scene, chips[0], 900, 500, 500, quarter_turns=1)   # turned by 90 degrees counter-clockwise
    rec = Recording(_detector())
    faces, rotation = detect_with_rotation(rec, scene)
    assert rotation == -90 and len(faces) == 1
    assert iou(faces[0].box, truth) > 0.5                      # in the original photo's pixels
    assert all(max(shape) <= RETRY_SIDE for shape in rec.shapes[1:])


def test_min_face_counts_in_the_photos_pixels(chips):
    scene = noise_scene(seed=26, height=2400, width=3200)
    truth = paste(scene, chips[1], 1000, 700, 400)
    size = truth[3] - truth[1]
    assert len(detect_with_rotation(_detector(min_face=size * 0.7), scene)[0]) == 1
    assert detect_with_rotation(_detector(min_face=size * 1.5), scene)[0] == []


# ------------------------------------------------------------------------------ crops from the face's region
def _smooth_photo(height, width, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 40, width // 40, 3), dtype=np.uint8)
    return cv2.GaussianBlur(cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC), (0, 0), 4)


@pytest.mark.parametrize("rule", ["align", "full"])
def test_crop_of_a_huge_photo_equals_the_crop_of_the_face_region(chips, rule):
    photo = _smooth_photo(6000, 8000)
    face = cv2.resize(chips[0], (1400, 1400), interpolation=cv2.INTER_CUBIC)
    photo[2000:3400, 3000:4400] = face
    points = TEMPLATE_112 * (1400 / 112) * 0.8 + [3000 + 140, 2000 + 160]
    spec = CropSpec(size=64, rule=rule, margin=0.1)
    (crop,), magnification = face_crops(photo, [spec], landmarks=points)
    x0, y0, x1, y1 = 2400, 1300, 5100, 4200                     # a generous region around the face
    (local,), local_mag = face_crops(photo[y0:y1, x0:x1].copy(), [spec], landmarks=points - [x0, y0])
    diff = np.abs(crop.astype(int) - local)
    assert diff.mean() < 1.0 and diff.max() <= 12
    assert magnification == pytest.approx(local_mag, rel=1e-6)


def test_face_region_is_the_face_not_the_photo():
    matrix = alignment_matrix(TEMPLATE_112 * 10 + [3000, 2000], 64, 0.1)
    x0, y0, x1, y1 = face_region(matrix, 64, (6000, 8000, 3))
    assert (x1 - x0) * (y1 - y0) < 0.05 * 6000 * 8000
    assert x0 <= 3000 and y0 <= 2000 and x1 >= 3000 + 1120 and y1 >= 2000 + 1120
    small = alignment_matrix(TEMPLATE_112 * 1.5 + [100, 50], 64, 0.4)
    assert face_region(small, 64, (240, 320, 3)) is None       # most of a small photo: crop it whole


# ------------------------------------------------------------------------------ estimator
def test_boxes_past_the_image_are_clipped_and_boxes_outside_are_named(chips):
    est = _estimator()
    scene = noise_scene(seed=27)
    truth = paste(scene, chips[0], 0, 0, 200)
    faces = est.predict(scene, boxes=[(-80, -60, truth[2], truth[3])])
    assert len(faces) == 1 and faces[0].box == pytest.approx((0, 0, truth[2], truth[3]))
    assert len(est.predict(scene, boxes=[(-1e6, -1e6, 1e6, 1e6)])) == 1   # clipped to the whole image
    for box in [(700, 10, 800, 100), (-300, -300, -10, -10), (10, 500, 100, 900), (639.5, 10, 700, 100)]:
        with pytest.raises(AgekitError, match=r"box \(.*\) lies outside the 640x480 image"):
            est.predict(scene, boxes=[box])
    with pytest.raises(AgekitError, match="4 numbers"):
        est.predict(scene, boxes=[(1, 2, 3)])
    with pytest.raises(AgekitError, match="empty"):
        est.predict(scene, boxes=[(10, 10, 10, 50)])


class CountingDetector(Detector):
    """A detector whose construction is slow and counted (to expose a race in lazy creation)."""

    name = "counting"
    made = 0
    lock = threading.Lock()

    def __init__(self, threads=None, **options):
        super().__init__(**options)
        time.sleep(0.05)
        with CountingDetector.lock:
            CountingDetector.made += 1

    def _detect(self, image):
        return []


register_detector("counting-test", __name__, "CountingDetector", "test only")


def test_eight_threads_create_one_detector():
    est = _estimator(detector="counting-test")
    CountingDetector.made = 0
    start = threading.Barrier(8)
    got = []

    def use():
        start.wait()
        got.append(est.detector)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert CountingDetector.made == 1 and len(got) == 8 and all(d is got[0] for d in got)


def test_predict_batch_scores_all_faces_in_one_model_call(chips):
    est = _estimator()
    scenes = []
    for seed in (31, 32):
        scene = noise_scene(seed=seed)
        paste(scene, chips[0], 60, 60, 180)
        paste(scene, chips[1], 380, 200, 180)
        scenes.append(scene)
    calls = []
    run = est.model.run

    def counted(views, batch_size=64):
        calls.append(len(views[0]))
        return run(views, batch_size=batch_size)

    est.model.run = counted
    try:
        out = est.predict_batch(scenes)
    finally:
        est.model.run = run
    assert [len(faces) for faces in out] == [2, 2] and calls == [4]
    single = [f.age for f in est.predict(scenes[0])]
    assert [f.age for f in out[0]] == pytest.approx(single, abs=1e-3)


# ------------------------------------------------------------------------------ threads
def test_default_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert onnx_session.default_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert 1 <= onnx_session.default_threads() <= min(onnx_session.physical_cores(), onnx_session.MAX_DEFAULT_THREADS)
    monkeypatch.setattr(onnx_session, "physical_cores", lambda: 8)
    monkeypatch.setattr(onnx_session, "idle_cpus", lambda: 16)
    assert onnx_session.default_threads() == onnx_session.MAX_DEFAULT_THREADS      # idle: a few threads
    monkeypatch.setattr(onnx_session, "idle_cpus", lambda: -1)
    assert onnx_session.default_threads() == 1                                     # busy machine: one
    if onnx_model.default_model_path().is_file():
        options = onnx_session.make_session(onnx_model.default_model_path(), None).get_session_options()
        assert options.intra_op_num_threads == 1
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
