"""AgeEstimator: photo -> faces -> calibrated age (and gender), with onnxruntime, OpenCV and numpy.

    from agekit import AgeEstimator
    est = AgeEstimator()                       # the packaged model, default detector
    for face in est.predict("photo.jpg"):
        print(face.age, face.interval, face.gender, face.flags)
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from agekit.detect import create_detector, detect_with_rotation
from agekit.detect.base import as_rgb
from agekit.errors import AgekitError
from agekit.io import load_image, to_rgb_array
from agekit.runtime import calibration as cal
from agekit.runtime.context import embed_context
from agekit.runtime.crops import face_crops
from agekit.runtime.onnx_model import OnnxAgeModel
from agekit.runtime.personal import load_personalizer, personalise
from agekit.runtime.quality import quality_flags
from agekit.runtime.results import FaceResult


@dataclass
class _Face:
    """A face to score: where it is, its crops (one per view) and its quality flags."""

    crops: list
    box: tuple
    landmarks: np.ndarray | None
    score: float | None
    rotation: int
    crop_from: str
    flags: list


def as_image(image) -> np.ndarray:
    """A path (str / Path), PIL image or numpy array -> RGB uint8 (H, W, 3). Bad files raise ImageError."""
    if isinstance(image, (str, Path)):
        return load_image(image)
    if hasattr(image, "mode") and hasattr(image, "size") and not isinstance(image, np.ndarray):  # PIL
        return to_rgb_array(image)
    return as_rgb(image)


def check_box(box, width: int, height: int) -> tuple[float, float, float, float]:
    """A user box as 4 floats, clipped to the image (a box reaching past the border keeps its part inside);
    AgekitError naming the box when it is not 4 finite numbers, is empty, or has (almost) nothing inside the
    width x height image."""
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError):
        raise AgekitError(f"a box must be 4 numbers x1,y1,x2,y2, got {box!r}") from None
    if len(values) != 4:
        raise AgekitError(f"a box must be 4 numbers x1,y1,x2,y2, got {box!r}")
    x1, y1, x2, y2 = values
    if not all(math.isfinite(v) for v in values) or x2 <= x1 or y2 <= y1:
        raise AgekitError(f"box {box!r} is empty (need x1 < x2 and y1 < y2)")
    cx1, cy1, cx2, cy2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(width)), min(y2, float(height))
    if cx2 - cx1 < 1 or cy2 - cy1 < 1:
        raise AgekitError(f"box {box!r} lies outside the {width}x{height} image")
    return cx1, cy1, cx2, cy2


class AgeEstimator:
    """Age and gender of every face in a photo, from an agekit ONNX model.

    model: path of a model made by `agekit export` (None: the packaged agekit/weights/agekit-default.onnx).
    detector: face-detector name ("default": the detector the model's training crops were aligned with,
        as recorded in the model, else agekit.detect.DEFAULT_DETECTOR) or a ready agekit.detect.Detector
        (e.g. create_detector("yunet", model_path=...)); threshold, min_face (pixels),
        max_faces: detector options; detector_options: backend-specific ones (e.g. {"max_side": 640} for
        CenterFace: one search at that size instead of its coarse-to-fine search; {"model_path": ...} for
        YuNet). level: interval level (0 < level < 1). threads: onnxruntime threads for the model and the
        detector (None: $OMP_NUM_THREADS, else the physical cores, at most 4: see
        agekit.onnx_session.default_threads).
    An estimator may be shared by threads: the detector and the face bank are created once, under a lock.
    User boxes (`boxes=`) are clipped to the image; a box with nothing inside it is an AgekitError naming it.
    personalizer: the face NP bank used when a context is given (a .npz from `agekit np-bank`, or an
        agekit.runtime.personal.Personalizer; None: MODEL.np.npz beside the model, loaded on first use).
    """

    def __init__(self, model=None, detector: str = "default", threshold: float | None = None,
                 min_face: float = 0, max_faces: int | None = None, level: float = cal.DEFAULT_LEVEL,
                 threads: int | None = None, batch_size: int = 32, detector_options: dict | None = None,
                 personalizer=None):
        try:
            self.level = cal.check_level(level)
        except ValueError as exc:
            raise AgekitError(str(exc)) from None
        self.model = OnnxAgeModel(model, threads=threads)
        self.calibration = self.model.calibration
        self.q = cal.quantile_for_level(self.calibration, self.level) if self.calibration else None
        self._detector = None
        if hasattr(detector, "detect"):  # a ready agekit.detect.Detector
            self._detector, detector = detector, getattr(detector, "name", type(detector).__name__)
        elif detector in (None, "", "default"):
            detector = self.model.meta.get("detector") or "default"
        self.detector_name = detector
        self._detector_opts = dict(detector_options or {}, threshold=threshold, min_face=min_face,
                                   max_faces=max_faces)
        if threads is not None:
            self._detector_opts["threads"] = threads
        self.batch_size = int(batch_size)
        self._personalizer_arg, self._personalizer = personalizer, None
        self._lock = threading.Lock()  # the detector and the face bank are made once, also under threads

    # ---- detection -------------------------------------------------------------------------------
    @property
    def detector(self):
        """The face detector, created on first use (predicting on crops or boxes does not need it)."""
        if self._detector is None:
            with self._lock:
                if self._detector is None:  # another thread may have made it while this one waited
                    self._detector = self._make_detector()
        return self._detector

    def _make_detector(self):
        opts = dict(self._detector_opts)
        try:
            return create_detector(self.detector_name, **opts)
        except TypeError:  # a backend without a `threads` option
            opts.pop("threads", None)
            return create_detector(self.detector_name, **opts)

    def _faces(self, image: np.ndarray, boxes=None) -> list[_Face]:
        specs = self.model.views
        found = []
        if boxes is None:
            faces, rotation = detect_with_rotation(self.detector, image)
            for f in faces:
                crops, mag = face_crops(image, specs, landmarks=f.landmarks)
                found.append(_Face(crops, f.box, f.landmarks, f.score, rotation, "landmarks",
                                   quality_flags(crops[0], mag)))
        else:
            h, w = image.shape[:2]
            checked = [check_box(box, w, h) for box in boxes]  # every box checked before any is cropped
            for given, box in zip(boxes, checked):
                try:
                    crops, mag = face_crops(image, specs, box=box)
                except cv2.error as exc:  # not expected for a checked box; still one clear line
                    raise AgekitError(f"box {given!r}: cannot crop it from the {w}x{h} image "
                                      f"({str(exc).strip().splitlines()[-1][:120]})") from None
                found.append(_Face(crops, box, None, None, 0, "box", quality_flags(crops[0], mag)))
        return found

    # ---- scoring ---------------------------------------------------------------------------------
    def _score(self, faces: list[_Face]) -> list[FaceResult]:
        if not faces:
            return []
        views = [np.stack([f.crops[i] for f in faces]) for i in range(len(self.model.views))]
        out = self.model.run(views, batch_size=self.batch_size)
        mean, std = out["age"].astype(np.float64), out["std"].astype(np.float64)
        lo, hi = self.intervals(mean, std, out["probs"])
        results = []
        for i, f in enumerate(faces):
            female = float(out["gender"][i]) if "gender" in out else None
            gender = None if female is None else ("female" if female >= 0.5 else "male")
            results.append(FaceResult(
                age=float(mean[i]), std=float(std[i]), interval=(float(lo[i]), float(hi[i])), level=self.level,
                gender=gender, gender_prob=None if female is None else max(female, 1.0 - female),
                female_prob=female, box=tuple(float(v) for v in f.box), landmarks=f.landmarks, score=f.score,
                rotation=int(f.rotation), flags=list(f.flags), crop_from=f.crop_from, probs=out["probs"][i],
                embedding=out["embedding"][i] if "embedding" in out else None))
        return results

    def intervals(self, mean, std, probs):
        """(lo, hi) at self.level: split-conformal when the model is calibrated, else the central interval
        of the model's own distribution."""
        if self.calibration:
            if math.isinf(self.q):
                n = len(np.atleast_1d(mean))
                return np.full(n, float(self.model.age_min)), np.full(n, float(self.model.age_max))
            floor = float(self.calibration.get("std_floor", cal.STD_FLOOR))
            return cal.interval(mean, std, self.q, self.model.age_min, self.model.age_max, floor)
        return cal.distribution_interval(probs, self.model.ages, self.level)

    # ---- personalisation (agekit.runtime.personal) -------------------------------------------------
    @property
    def personalizer(self):
        """The face NP bank's Personalizer, loaded on first use."""
        if self._personalizer is None:
            with self._lock:
                if self._personalizer is None:
                    self._personalizer = load_personalizer(self._personalizer_arg, self.model)
        return self._personalizer

    def context(self, context):
        """Prepare context photos once: [(image_or_path, age), ...] -> a Context to pass as `context=`
        (each photo's best face embedded; photos without a face are kept as skipped, with a note)."""
        _ = self.personalizer  # fail early when there is no bank
        return embed_context(self, context)

    def _personalise(self, faces: list[FaceResult], context) -> list[FaceResult]:
        if context is None:
            return faces
        faces, notes = personalise(faces, self.context(context), self.personalizer, self.level)
        for f in faces:
            f.notes = list(notes)
        return faces

    # ---- public API ------------------------------------------------------------------------------
    def predict(self, image, boxes=None, context=None) -> list[FaceResult]:
        """Faces in one image (path, numpy RGB array or PIL image), best detector score first.

        boxes: [(x1, y1, x2, y2), ...] to score these regions instead of running the detector (landmarks
        unknown, so the crop is placed by the box, without rotation correction).
        context: photos of the same person with known ages, [(image_or_path, age), ...] (or a prepared
        `self.context(...)`): every face's age, std and interval are personalised with them (face.personalised,
        face.base_age = the model's own estimate, face.notes); too few usable photos give the model's
        estimate, said so in the notes. Needs the face NP bank (see `personalizer`)."""
        if context is not None:
            context = self.context(context)
        return self._personalise(self._score(self._faces(as_image(image), boxes)), context)

    def predict_batch(self, images, boxes=None, context=None) -> list[list[FaceResult]]:
        """`predict` over a list of images (the model runs once over all their faces). boxes: None, or one
        list of boxes per image. An unreadable image raises ImageError naming it. context: as `predict`."""
        images = list(images)
        if boxes is not None and len(boxes) != len(images):
            raise AgekitError(f"boxes: need one list per image ({len(images)}), got {len(boxes)}")
        per_image = [self._faces(as_image(img), None if boxes is None else boxes[i]) for i, img in enumerate(images)]
        if context is not None:
            context = self.context(context)
        flat = self._personalise(self._score([f for faces in per_image for f in faces]), context)
        out, start = [], 0
        for faces in per_image:
            out.append(flat[start:start + len(faces)])
            start += len(faces)
        return out

    def predict_crops(self, crops, aligned: bool = True, context=None) -> list[FaceResult]:
        """One result per face image.

        aligned=True: uint8 crops (N, S, S, 3) already made with the model's crop rule (e.g. the training
        cache), fed as they are (single-view models). aligned=False: any face images (a list of arrays or
        paths, or an (N, H, W, 3) array), each treated as the face's box, i.e. cropped by the model's rule
        with box = the whole image (what `agekit predict --no-detect` does). context: as `predict`."""
        specs = self.model.views
        faces = []
        if aligned:
            arr = np.asarray(crops)
            size = specs[0].size
            if len(specs) != 1:
                raise AgekitError("this model takes several crop views; pass face images with aligned=False")
            if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1:] != (size, size, 3):
                raise AgekitError(f"aligned crops must be uint8 (N, {size}, {size}, 3), got {arr.dtype} {arr.shape}")
            for crop in arr:
                faces.append(_Face([crop], (0.0, 0.0, float(size), float(size)), None, None, 0, "image",
                                   quality_flags(crop, None)))
        else:
            for item in crops:
                image = as_image(item)
                h, w = image.shape[:2]
                views, mag = face_crops(image, specs)
                faces.append(_Face(views, (0.0, 0.0, float(w), float(h)), None, None, 0, "image",
                                   quality_flags(views[0], mag)))
        if context is not None:
            context = self.context(context)
        return self._personalise(self._score(faces), context)

    def age_probability(self, face: FaceResult, threshold: float) -> float:
        """P(age >= threshold) for a face: from the calibrated score distribution when the model is
        calibrated (consistent with its intervals), else from the model's own distribution."""
        if self.calibration:
            return float(cal.prob_at_least(threshold, face.age, face.std, self.calibration))
        return float(cal.distribution_prob_at_least(face.probs, self.model.ages, threshold)[0])

    def check_age(self, face: FaceResult, min_age: float) -> tuple[str, float]:
        """Age check with a buffer: ("over" when the face's interval lies at or above min_age, "under" when
        it lies below it, else "uncertain"), and P(age >= min_age)."""
        lo, hi = face.interval
        decision = "over" if lo >= min_age else ("under" if hi < min_age else "uncertain")
        return decision, self.age_probability(face, min_age)

    def explain(self, image, boxes=None, grid: int = 8, fill: str = "mean") -> list:
        """Each face of `image` with occlusion maps of the regions that move its age estimate, over the crop
        the model saw and, via `.photo_map()`, over the photo (agekit.explain.occlusion; docs/explain.md)."""
        from agekit.explain.occlusion import explain_image

        return explain_image(self, image, boxes=boxes, grid=grid, fill=fill)

    def with_level(self, level: float) -> "AgeEstimator":
        """This estimator at another interval level (e.g. per request in `agekit serve`): a shallow copy that
        shares the model (and the detector and face bank once they are made), so it costs nothing to make."""
        import copy

        try:
            level = cal.check_level(level)
        except ValueError as exc:
            raise AgekitError(str(exc)) from None
        other = copy.copy(self)
        other.level = level
        other.q = cal.quantile_for_level(self.calibration, level) if self.calibration else None
        return other

    def track(self, source, **options):
        """Faces followed through a video file, camera index, stream URL or list of frames: an iterable of
        per-frame results with track ids, then `.summaries()`, one steady age per person (agekit.video)."""
        from agekit.video.tracking import track

        return track(self, source, **options)

    def describe(self) -> dict:
        """What is running: model file, method, crop, calibration, detector."""
        m = self.model.meta
        return {"model": str(self.model.path), "method": m.get("method"), "backbone": m.get("backbone"),
                "crop": m.get("crop"), "ages": [self.model.age_min, self.model.age_max],
                "calibrated": bool(self.calibration), "level": self.level, "detector": self.detector_name}
