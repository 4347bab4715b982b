"""Face-crop geometry: the one crop rule that training, evaluation and prediction share.

A crop is a 2x3 affine matrix (image pixels -> crop pixels) and one warp through it. The matrix comes from
5 landmarks (a similarity transform onto a canonical template: eyes level, fixed scale), from a face box,
or from the image itself; `warp` applies it. Every crop in agekit is made here: the training crop cache
(agekit.data.cache, agekit.engine.data), the runtime's per-face views (agekit.runtime.crops) and the
detectors' 68-to-5-point reduction (agekit.detect); so prediction sees exactly the crops a model was
trained on. numpy and OpenCV only (the predict path must not import torch).

A `CropSpec` names the rule; checkpoints and ONNX models store it, and `view_specs` makes them from a
config's data section. Rules:
- "full":  the whole image resized (pre-cropped, pre-aligned chips such as UTKFace's); `zoom` > 1 keeps
           only the central 1/zoom of it (a tighter face view), < 1 adds reflected border (more context).
- "align": the similarity transform putting 5 landmarks (eyes, nose tip, mouth corners) onto the template;
           `margin` adds context, `shift` moves the window down. 68-point landmarks are reduced to 5.
           Without landmarks a face box is used (no rotation correction), else the full image.
"""
from __future__ import annotations

import math
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
# The framing of the UTKFace chips on the template (the median over 150 chips with the default detector:
# a little tighter than the bare template). "full" models get such a chip of a face found in a photo.
CHIP_MARGIN = -0.12
# `warp(..., region=True)` cuts the face's region out first only when it is smaller than this fraction of
# the image (below that the cut saves more than it costs).
REGION_FRACTION = 0.5


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


def view_specs(cfg: dict) -> list[CropSpec]:
    """The crop of every input view: data.crop first, then data.extra_views (each overriding data.crop)."""
    base = cfg["data"]["crop"]
    specs = []
    for i, view in enumerate([base] + list(cfg["data"].get("extra_views") or [])):
        if not isinstance(view, dict):
            raise AgekitError(f"data.extra_views[{i - 1}] must be a mapping like {{size: 64, zoom: 1.4}}")
        try:
            specs.append(CropSpec(**{**base, **view}))
        except TypeError as exc:
            raise AgekitError(f"data.extra_views[{i - 1}]: {exc}") from None
    return specs


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


# ------------------------------------------------------------------------------------------ matrices
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


def crop_matrix(spec: CropSpec, shape, landmarks=None, box=None) -> np.ndarray | None:
    """The 2x3 transform of `spec`'s crop of an image of `shape`: aligned on `landmarks` (5 or 68 points),
    else around `box`, else the whole image. None for "full" without zoom (a plain resize of the image)."""
    if spec.rule == "align" and landmarks is not None:
        return alignment_matrix(five_points(landmarks), spec.size, spec.margin, spec.shift)
    if spec.rule == "align" and box is not None:
        return box_matrix(box, spec.size, spec.margin)
    if spec.zoom != 1.0:
        h, w = shape[:2]
        side = max(h, w) / spec.zoom
        return box_matrix(((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2), spec.size, 0.0)
    return None


def chip_matrix(size: int, landmarks=None, box=None) -> np.ndarray:
    """The transform of a UTKFace-like `size` x `size` chip of a face: aligned on its 5 landmarks with
    CHIP_MARGIN, else the square around its box."""
    if landmarks is not None:
        return alignment_matrix(five_points(landmarks), size, CHIP_MARGIN)
    return box_matrix(box, size, 0.0)


def matrix_scale(matrix) -> float:
    """Crop pixels per image pixel of a similarity (or axis-aligned square) transform."""
    return float(np.hypot(matrix[0, 0], matrix[0, 1]))


# ------------------------------------------------------------------------------------------ warping
def face_region(matrix: np.ndarray, size: int, shape) -> tuple[int, int, int, int] | None:
    """The pixels (x0, y0, x1, y1) of an image of `shape` that `warp(image, matrix, size)` can read (through
    BORDER_REFLECT101 and the pre-shrink); None when that is most of the image or the warp reads beyond one
    reflection of it (then the whole image is used)."""
    h, w = shape[:2]
    scale = matrix_scale(matrix)
    inv = cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64)
    src = corners @ inv[:, :2].T + inv[:, 2]
    # margin: the bilinear neighbours and the box filter of the pre-shrink (2 / scale source pixels)
    pad = 2.0 + 2.0 / max(min(scale * 2.0, 1.0), 1e-6)
    x0, y0 = src.min(axis=0) - pad
    x1, y1 = src.max(axis=0) + pad
    if x0 < -w or y0 < -h or x1 > 2 * w or y1 > 2 * h:
        return None
    # BORDER_REFLECT101 maps x < 0 to -x and x > w - 1 to 2 (w - 1) - x: keep those pixels too.
    if x0 < 0:
        x1 = max(x1, -x0 + 1)
    if x1 > w:
        x0 = min(x0, 2 * (w - 1) - x1 - 1)
    if y0 < 0:
        y1 = max(y1, -y0 + 1)
    if y1 > h:
        y0 = min(y0, 2 * (h - 1) - y1 - 1)
    x0, y0 = max(0, math.floor(x0)), max(0, math.floor(y0))
    x1, y1 = min(w, math.ceil(x1)), min(h, math.ceil(y1))
    if scale < 0.5:
        # Start the region on (nearly) a pixel boundary of the pre-shrunk whole image, so its pre-shrink
        # averages the same blocks of pixels (to within one source pixel).
        f = 2.0 * scale
        x0, y0 = math.floor(math.floor(x0 * f) / f), math.floor(math.floor(y0 * f) / f)
    if x1 <= x0 or y1 <= y0 or (x1 - x0) * (y1 - y0) > REGION_FRACTION * w * h:
        return None
    return x0, y0, x1, y1


def warp(image: np.ndarray, matrix: np.ndarray, size: int, region: bool = False) -> np.ndarray:
    """The `size` x `size` crop of `image` through the 2x3 `matrix`: bilinear, pixels outside the image
    filled by reflecting the border (faces at the image edge stay usable).

    Shrinking a lot with bilinear sampling aliases, so below half scale the image is first reduced by area
    averaging. region=True first cuts out the part of the image the warp reads (`face_region`), so a face's
    cost does not grow with the photo; the result equals the whole-image warp up to the rounding of the
    pre-shrink (pixel-close). The training crops use region=False.
    """
    if region and (part := face_region(matrix, size, image.shape)) is not None:
        x0, y0, x1, y1 = part
        image = image[y0:y1, x0:x1]
        matrix = np.array(matrix, dtype=np.float64)
        matrix[:, 2] += matrix[:, :2] @ [x0, y0]
    scale = matrix_scale(matrix)
    if scale < 0.5:
        factor = scale * 2.0
        h, w = image.shape[:2]
        matrix = np.array(matrix, dtype=np.float64)
        if round(w * factor) >= 1 and round(h * factor) >= 1:
            image = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
            matrix[:, :2] /= factor
        else:  # a sliver of an image: at least one pixel
            dsize = (max(1, round(w * factor)), max(1, round(h * factor)))
            image = cv2.resize(image, dsize, interpolation=cv2.INTER_AREA)
            matrix[:, 0] /= dsize[0] / w
            matrix[:, 1] /= dsize[1] / h
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


def crop_face(image: np.ndarray, spec: CropSpec, landmarks=None, box=None, region: bool = False) -> np.ndarray:
    """Crop one face from an RGB uint8 image (H, W, 3) into a (size, size, 3) uint8 array by `spec`'s rule
    (`crop_matrix`, then `warp`; region: as in `warp`)."""
    matrix = crop_matrix(spec, image.shape, landmarks=landmarks, box=box)
    if matrix is None:
        interp = cv2.INTER_AREA if min(image.shape[:2]) > spec.size else cv2.INTER_LINEAR
        return cv2.resize(image, (spec.size, spec.size), interpolation=interp)
    return warp(image, matrix, spec.size, region=region)
