"""Where a model's crop sits in the photo: the 2x3 matrix taking photo pixels to crop pixels, and a map over
the crop warped back onto the photo with its inverse.

The matrix is built by the same functions the crop is made with (agekit.crop.crop_matrix, and
agekit.crop.chip_matrix for "full"-rule models, as agekit.runtime.crops.face_crops uses them), so a heat map
computed over the crop the model saw lands on exactly the photo pixels it came from (tests/test_explain.py checks that warping the
photo by this matrix reproduces the estimator's crop).
"""
from __future__ import annotations

import cv2
import numpy as np

from agekit.crop import CropSpec, chip_matrix, five_points
from agekit.crop import crop_matrix as rule_matrix


def _scaling(sx: float, sy: float) -> np.ndarray:
    """cv2.resize's mapping as a matrix: pixel centres, not corners, scale (x' + 0.5 = s (x + 0.5))."""
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 matrix of `outer` applied after `inner`."""
    return (np.vstack([outer, [0, 0, 1]]) @ np.vstack([inner, [0, 0, 1]]))[:2]


def _full_rule(spec: CropSpec, width: float, height: float) -> np.ndarray:
    """crop_face's "full" rule on a width x height image: a plain resize, or a centred square when zoomed."""
    matrix = rule_matrix(spec, (int(height), int(width)))
    return _scaling(spec.size / width, spec.size / height) if matrix is None else matrix


def crop_matrix(spec: CropSpec, shape, landmarks=None, box=None) -> np.ndarray:
    """2x3 float64 matrix mapping pixels of an image of `shape` to pixels of the `spec` crop that
    agekit.runtime.crops.face_crops makes for the face given by `landmarks` (5, 2), `box`, or neither (the
    whole image)."""
    h, w = shape[:2]
    lm = None if landmarks is None else five_points(landmarks)
    if lm is None and box is None:
        if spec.rule == "full":
            return _full_rule(spec, float(w), float(h))
        box = (0.0, 0.0, float(w), float(h))
    if spec.rule == "align":
        return rule_matrix(spec, shape, landmarks=lm, box=box)
    chip = max(2 * spec.size, 96)  # the UTKFace-like chip face_crops makes, then the model's own rule on it
    return _compose(_full_rule(spec, float(chip), float(chip)), chip_matrix(chip, landmarks=lm, box=box))


def to_photo(values: np.ndarray, matrix: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray]:
    """A (S, S) map over the crop warped onto an image of `shape`: (map (H, W) float32, 0 outside the crop
    window; coverage (H, W) float32 in [0, 1], the share of each photo pixel inside the window)."""
    h, w = shape[:2]
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    values = np.asarray(values, dtype=np.float32)
    warped = cv2.warpAffine(values, matrix, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    inside = cv2.warpAffine(np.ones_like(values), matrix, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=0)
    return warped, np.clip(inside, 0.0, 1.0)


def crop_outline(matrix: np.ndarray, size: int) -> np.ndarray:
    """The crop window's 4 corners in photo pixels (4, 2): where to draw its outline."""
    inv = cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))
    corners = np.array([[0, 0], [size, 0], [size, size], [0, size]], dtype=np.float64)
    return corners @ inv[:, :2].T + inv[:, 2]


# Face regions as discs on the 112-px template canvas (agekit.crop.TEMPLATE_112: eyes at y 51.6, nose tip at
# 71.7, mouth corners at 92.3): centre (x, y) and radius. Used to name where a map is high.
TEMPLATE_REGIONS = {
    "forehead": [((56.0, 26.0), 16.0)],
    "eyes": [((38.3, 51.7), 11.0), ((73.5, 51.5), 11.0)],
    "nose": [((56.0, 70.0), 9.0)],
    "cheeks": [((33.0, 74.0), 10.0), ((79.0, 74.0), 10.0)],
    "mouth": [((56.1, 92.3), 13.0)],
    "chin": [((56.1, 108.0), 9.0)],
}


def region_masks(spec: CropSpec) -> dict[str, np.ndarray] | None:
    """{region: (S, S) bool mask} of TEMPLATE_REGIONS in an "align" crop of `spec` (where the template's
    points land when the face is aligned on landmarks); None for other rules (no fixed face layout)."""
    if spec.rule != "align":
        return None
    scale = spec.size / (112.0 * (1.0 + spec.margin))  # as agekit.crop.alignment_matrix places the template
    offset = (spec.size - 112.0 * scale) / 2.0
    yy, xx = np.mgrid[0:spec.size, 0:spec.size] + 0.5
    masks = {}
    for name, discs in TEMPLATE_REGIONS.items():
        mask = np.zeros((spec.size, spec.size), bool)
        for (cx, cy), r in discs:
            x, y = cx * scale + offset, cy * scale + offset - spec.shift * 112.0 * scale
            mask |= (xx - x) ** 2 + (yy - y) ** 2 <= (r * scale) ** 2
        masks[name] = mask
    return masks


def region_shares(values: np.ndarray, masks: dict | None) -> dict[str, float] | None:
    """Each region's mean of `values` relative to the whole crop's mean (1 = average, 2 = twice it)."""
    if masks is None:
        return None
    overall = float(np.mean(values)) or 1.0
    return {name: float(np.mean(values[m])) / overall for name, m in masks.items() if m.any()}
