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
"""
from __future__ import annotations

import cv2
import numpy as np

from agekit.data.preprocess import CropSpec, alignment_matrix, box_matrix, crop_face, five_points

CHIP_MARGIN = -0.12


def _scale(matrix) -> float:
    return float(np.hypot(matrix[0, 0], matrix[0, 1]))


def _warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """warpAffine as `crop_face` does it (pre-shrink for strong reductions, reflected border)."""
    scale = _scale(matrix)
    if scale < 0.5:
        factor = scale * 2.0
        image = cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        matrix = matrix.copy()
        matrix[:, :2] /= factor
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


def _chip(image, spec: CropSpec, landmarks, box):
    """A UTKFace-like chip of the face (size 2 x the view's), and its scale (chip px per image px)."""
    size = max(2 * spec.size, 96)
    if landmarks is not None:
        matrix = alignment_matrix(five_points(landmarks), size, CHIP_MARGIN)
    else:
        matrix = box_matrix(box, size, 0.0)
    return _warp(image, matrix, size), _scale(matrix)


def face_crops(image: np.ndarray, specs: list[CropSpec], landmarks=None, box=None) -> tuple[list, float]:
    """One uint8 (S, S, 3) crop per view of the face given by `landmarks` (5, 2) or `box` (x1, y1, x2, y2);
    neither = the whole image is the face. Returns (crops, magnification), magnification being crop pixels
    per image pixel in the first view (> 1: the face is enlarged, so the model sees less detail than it
    was trained on)."""
    h, w = image.shape[:2]
    whole = landmarks is None and box is None
    if whole:
        box = (0.0, 0.0, float(w), float(h))
    crops, magnification = [], None
    for spec in specs:
        if spec.rule == "align":
            lm = None if landmarks is None else five_points(landmarks)
            crop = crop_face(image, spec, landmarks=lm, box=box)
            matrix = alignment_matrix(lm, spec.size, spec.margin) if lm is not None else box_matrix(box, spec.size,
                                                                                                      spec.margin)
            scale = _scale(matrix)
        elif whole:
            crop = crop_face(image, spec)
            scale = spec.size * spec.zoom / max(h, w)
        else:
            chip, chip_scale = _chip(image, spec, landmarks, box)
            crop = crop_face(chip, spec)
            scale = chip_scale * spec.size * spec.zoom / chip.shape[0]
        crops.append(crop)
        if magnification is None:
            magnification = scale
    return crops, float(magnification)
