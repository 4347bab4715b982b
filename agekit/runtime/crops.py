"""The model's input crops of one face, made with the training crop function (`crop_face`).

Three ways to know where the face is, best first:
- landmarks (from the detector): the "align" rule aligns on them exactly as training did;
- a box (user-supplied with --boxes, landmarks unknown): "align" crops a square around the box enlarged by
  the margin (the rule's box fallback; no rotation correction, so a tilted face stays tilted);
- the whole image (--no-detect, pre-cropped faces): the image is the face's box.

Models trained with the "full" rule saw whole pre-cropped chips (UTKFace's), not aligned faces. For a face
found in a photo they get a chip-like view first: the face aligned on the 5-point template with
CHIP_MARGIN (the framing of the UTKFace chips, measured as the median over 150 chips with the default
detector: the chips are a little tighter than the bare template), to which their rule (resize, zoom) is
then applied. For the whole-image case the image itself is the chip.

Each face is cut from its own region of the photo: when the crop's window covers well under half of the
image, `crop_face` gets only that region (with the pixels its bilinear sampling and its border reflection
read), so the cost of a face does not grow with the photo (`crop_face` shrinks its whole input first when
the face is much larger than the crop: on a 48 MP photo that was a full-resolution resize per face). The
result equals the crop of the whole photo up to the rounding of that pre-shrink (pixel-close).
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from agekit.data.preprocess import CropSpec, alignment_matrix, box_matrix, crop_face, five_points

CHIP_MARGIN = -0.12
# Cut a face's region out first only when it is smaller than this fraction of the image.
REGION_FRACTION = 0.5


def _scale(matrix) -> float:
    return float(np.hypot(matrix[0, 0], matrix[0, 1]))


def face_region(matrix: np.ndarray, size: int, shape) -> tuple[int, int, int, int] | None:
    """The pixels (x0, y0, x1, y1) of an image of `shape` that a `size` x `size` warp by `matrix` (with
    BORDER_REFLECT101 and the pre-shrink of `crop_face`) can read; None when that is most of the image or
    the warp reads beyond one reflection of it (then the whole image is used)."""
    h, w = shape[:2]
    inv = cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64)
    src = corners @ inv[:, :2].T + inv[:, 2]
    # margin: the bilinear neighbours and the box filter of the pre-shrink (2 / scale source pixels)
    pad = 2.0 + 2.0 / max(min(_scale(matrix) * 2.0, 1.0), 1e-6)
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
    if _scale(matrix) < 0.5:
        # Start the region on (nearly) a pixel boundary of the pre-shrunk whole image, so its pre-shrink
        # averages the same blocks of pixels (to within one source pixel).
        f = 2.0 * _scale(matrix)
        x0, y0 = math.floor(math.floor(x0 * f) / f), math.floor(math.floor(y0 * f) / f)
    if x1 <= x0 or y1 <= y0 or (x1 - x0) * (y1 - y0) > REGION_FRACTION * w * h:
        return None
    return x0, y0, x1, y1


def _cut(image: np.ndarray, matrix: np.ndarray, size: int):
    """(the part of `image` a warp by `matrix` reads, its (x, y) offset in `image`)."""
    region = face_region(matrix, size, image.shape)
    if region is None:
        return image, (0, 0)
    x0, y0, x1, y1 = region
    return image[y0:y1, x0:x1], (x0, y0)


def _warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """warpAffine as `crop_face` does it (pre-shrink for strong reductions, reflected border), reading only
    the face's region of the image."""
    part, (x0, y0) = _cut(image, matrix, size)
    matrix = np.array(matrix, dtype=np.float64)
    matrix[:, 2] += matrix[:, :2] @ [x0, y0]
    scale = _scale(matrix)
    if scale < 0.5:
        factor = scale * 2.0
        h, w = part.shape[:2]
        if round(w * factor) >= 1 and round(h * factor) >= 1:
            part = cv2.resize(part, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
            matrix[:, :2] /= factor
        else:  # a sliver of an image: at least one pixel
            dsize = (max(1, round(w * factor)), max(1, round(h * factor)))
            part = cv2.resize(part, dsize, interpolation=cv2.INTER_AREA)
            matrix[:, 0] /= dsize[0] / w
            matrix[:, 1] /= dsize[1] / h
    return cv2.warpAffine(part, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


def _chip(image, spec: CropSpec, landmarks, box):
    """A UTKFace-like chip of the face (size 2 x the view's), and its scale (chip px per image px)."""
    size = max(2 * spec.size, 96)
    if landmarks is not None:
        matrix = alignment_matrix(five_points(landmarks), size, CHIP_MARGIN)
    else:
        matrix = box_matrix(box, size, 0.0)
    return _warp(image, matrix, size), _scale(matrix)


def _aligned(image, spec: CropSpec, landmarks, box):
    """`crop_face` with the "align" rule, given only the face's region of the image; and the warp's matrix."""
    if landmarks is not None:
        matrix = alignment_matrix(landmarks, spec.size, spec.margin, spec.shift)
    else:
        matrix = box_matrix(box, spec.size, spec.margin)
    part, (x0, y0) = _cut(image, matrix, spec.size)
    if (x0, y0) == (0, 0) and part.shape == image.shape:
        return crop_face(image, spec, landmarks=landmarks, box=box), matrix
    shift = np.array([x0, y0], dtype=np.float64)
    if landmarks is not None:
        return crop_face(part, spec, landmarks=np.asarray(landmarks, dtype=np.float64) - shift), matrix
    bx1, by1, bx2, by2 = box
    return crop_face(part, spec, box=(bx1 - x0, by1 - y0, bx2 - x0, by2 - y0)), matrix


def face_crops(image: np.ndarray, specs: list[CropSpec], landmarks=None, box=None) -> tuple[list, float]:
    """One uint8 (S, S, 3) crop per view of the face given by `landmarks` (5, 2) or `box` (x1, y1, x2, y2);
    neither = the whole image is the face. Returns (crops, magnification), magnification being crop pixels
    per image pixel in the first view (> 1: the face is enlarged, so the model sees less detail than it
    was trained on)."""
    h, w = image.shape[:2]
    whole = landmarks is None and box is None
    if whole:
        box = (0.0, 0.0, float(w), float(h))
    lm = None if landmarks is None else five_points(landmarks)
    crops, magnification = [], None
    for spec in specs:
        if spec.rule == "align":
            crop, matrix = _aligned(image, spec, lm, box)
            scale = _scale(matrix)
        elif whole:
            crop = crop_face(image, spec)
            scale = spec.size * spec.zoom / max(h, w)
        else:
            chip, chip_scale = _chip(image, spec, lm, box)
            crop = crop_face(chip, spec)
            scale = chip_scale * spec.size * spec.zoom / chip.shape[0]
        crops.append(crop)
        if magnification is None:
            magnification = scale
    return crops, float(magnification)
