"""The model's input crops of one face, made by the training crop rule (`agekit.crop`).

What is the runtime's own is which of three ways to know where the face is it uses, best first:
- landmarks (from the detector): the "align" rule aligns on them exactly as training did;
- a box (user-supplied with --boxes, landmarks unknown): "align" crops a square around the box enlarged by
  the margin (the rule's box fallback; no rotation correction, so a tilted face stays tilted);
- the whole image (--no-detect, pre-cropped faces): the image is the face's box.

Models trained with the "full" rule saw whole pre-cropped chips (UTKFace's), not aligned faces. For a face
found in a photo they get a chip-like view first (`agekit.crop.chip_matrix`: the face on the 5-point
template with CHIP_MARGIN), to which their rule (resize, zoom) is then applied. For the whole-image case
the image itself is the chip.

A face in a photo is warped from its own region of the photo (`warp(..., region=True)`), so the cost of a
face does not grow with the photo.
"""
from __future__ import annotations

import numpy as np

from agekit.crop import CropSpec, chip_matrix, crop_face, crop_matrix, five_points, matrix_scale, warp


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
            matrix = crop_matrix(spec, image.shape, landmarks=lm, box=box)
            crop = warp(image, matrix, spec.size, region=True)
            scale = matrix_scale(matrix)
        elif whole:
            crop = crop_face(image, spec)
            scale = spec.size * spec.zoom / max(h, w)
        else:
            size = max(2 * spec.size, 96)  # the chip: twice the view's size
            matrix = chip_matrix(size, landmarks=lm, box=box)
            crop = crop_face(warp(image, matrix, size, region=True), spec)
            scale = matrix_scale(matrix) * spec.size * spec.zoom / size
        crops.append(crop)
        if magnification is None:
            magnification = scale
    return crops, float(magnification)
