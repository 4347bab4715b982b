"""The one face-crop function shared by training, evaluation and prediction.

A `CropSpec` names the rule; checkpoints store it so inference crops exactly as training did.
Rules:
- "full":  the whole image resized (pre-cropped, pre-aligned chips such as UTKFace's); `zoom` > 1 keeps
           only the central 1/zoom of it (a tighter face view), < 1 adds reflected border (more context).
- "align": a similarity transform putting 5 landmarks (eyes, nose tip, mouth corners) onto a canonical
           template, so the eyes are level and the face has a fixed scale; `margin` adds context.
           68-point landmarks are reduced to 5. Without landmarks a face box is used, else the full image.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from agekit.errors import AgekitError

# Canonical 5-point face template on a 112x112 canvas (the widely used ArcFace layout):
# image-left eye, image-right eye, nose tip, image-left mouth corner, image-right mouth corner.
TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
CROP_RULES = ("full", "align")


@dataclass(frozen=True)
class CropSpec:
    size: int = 64
    rule: str = "full"
    margin: float = 0.4  # "align": fraction of the template canvas added around the face (< 0: tighter)
    zoom: float = 1.0  # "full": magnification about the image centre
    shift: float = 0.0  # "align" on landmarks: moves the window down by this fraction of the template canvas

    def __post_init__(self):
        if self.rule not in CROP_RULES:
            raise AgekitError(f"crop rule '{self.rule}' unknown; choose from {', '.join(CROP_RULES)}")
        if self.size < 16:
            raise AgekitError(f"crop size {self.size} too small (minimum 16)")
        if not -0.5 <= self.margin <= 2.0:
            raise AgekitError(f"crop margin {self.margin} outside [-0.5, 2]")
        if not -0.5 <= self.shift <= 0.5:
            raise AgekitError(f"crop shift {self.shift} outside [-0.5, 0.5]")
        if not 0.25 <= self.zoom <= 4.0:
            raise AgekitError(f"crop zoom {self.zoom} outside [0.25, 4]")

    def tag(self) -> str:
        """Short string used in cache keys."""
        extra = f"m{self.margin:g}" if self.rule == "align" else (f"z{self.zoom:g}" if self.zoom != 1 else "")
        if self.rule == "align" and self.shift:
            extra += f"s{self.shift:g}"
        return f"{self.rule}{self.size}{extra}"

    def to_dict(self) -> dict:
        return asdict(self)


# 68-point layouts: iBUG 300-W (most datasets and detectors) and FG-NET's own annotation, whose pupils are
# points 31 and 36, nose tip 67 and mouth corners 48 and 54 (checked on the FG-NET .pts files).
LANDMARK_LAYOUTS = ("ibug68", "fgnet68")
FGNET68_TO_5 = [31, 36, 67, 48, 54]


def five_points(landmarks: np.ndarray, layout: str | None = None) -> np.ndarray:
    """Reduce 68-point landmarks to the (5, 2) template order; (5, 2) passes through.

    layout: "ibug68" (default for 68 points) or "fgnet68".
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape == (5, 2):
        return lm
    if lm.shape != (68, 2):
        raise AgekitError(f"landmarks must have shape (5, 2) or (68, 2), got {lm.shape}")
    if layout == "fgnet68":
        return lm[FGNET68_TO_5]
    if layout not in (None, "ibug68"):
        raise AgekitError(f"landmark layout '{layout}' unknown; choose from {', '.join(LANDMARK_LAYOUTS)}")
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


def alignment_matrix(points5: np.ndarray, size: int, margin: float, shift: float = 0.0) -> np.ndarray:
    """2x3 similarity transform mapping the 5 points onto the template scaled to `size` with `margin`;
    `shift` moves the crop window down by that fraction of the (unscaled) template canvas."""
    scale = size / (112.0 * (1.0 + margin))
    offset = (size - 112.0 * scale) / 2.0
    dst = TEMPLATE_112 * scale + offset
    dst[:, 1] -= shift * 112.0 * scale
    matrix, _ = cv2.estimateAffinePartial2D(points5.astype(np.float32), dst.astype(np.float32), method=cv2.LMEDS)
    if matrix is None:
        raise AgekitError("landmarks are degenerate; cannot align the face")
    return matrix


def box_matrix(box, size: int, margin: float) -> np.ndarray:
    """2x3 transform cropping a square around `box` (x1, y1, x2, y2), enlarged by `margin`."""
    x1, y1, x2, y2 = map(float, box)
    side = max(x2 - x1, y2 - y1) * (1.0 + margin)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    s = size / max(side, 1e-6)
    return np.array([[s, 0.0, size / 2.0 - s * cx], [0.0, s, size / 2.0 - s * cy]])


def crop_face(image: np.ndarray, spec: CropSpec, landmarks=None, box=None) -> np.ndarray:
    """Crop one face from an RGB uint8 image (H, W, 3) into a (size, size, 3) uint8 array.

    Pixels outside the image are filled by reflecting the border, which keeps faces at the image edge usable.
    """
    size = spec.size
    if spec.rule == "align" and landmarks is not None:
        matrix = alignment_matrix(five_points(landmarks), size, spec.margin, spec.shift)
    elif spec.rule == "align" and box is not None:
        matrix = box_matrix(box, size, spec.margin)
    elif spec.zoom != 1.0:
        h, w = image.shape[:2]
        side = max(h, w) / spec.zoom
        matrix = box_matrix(((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2), size, 0.0)
    else:
        interp = cv2.INTER_AREA if min(image.shape[:2]) > size else cv2.INTER_LINEAR
        return cv2.resize(image, (size, size), interpolation=interp)
    # Shrinking a lot with bilinear sampling aliases; pre-blur-by-resize when the scale is small.
    scale = float(np.hypot(matrix[0, 0], matrix[0, 1]))
    if scale < 0.5:
        factor = scale * 2.0
        small = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        matrix = matrix.copy()
        matrix[:, :2] /= factor
        image = small
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
