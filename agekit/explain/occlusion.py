"""Occlusion sensitivity on the ONNX runtime alone: which regions of the aligned face move the age estimate.

Each face's crop (the one the model saw, from the estimator's own crop path) is cut into a `grid` x `grid`
lattice of cells; a patch of 2 x 2 cells slides over it one cell at a time, so (grid - 1)^2 copies each have
one patch filled (with the crop's mean colour, or a blurred copy of the crop). The model scores every copy
in one onnxruntime call per batch (all the faces of a photo together), and each pixel gets the mean change
of the estimated age over the patches covering it (Zeiler & Fergus 2014's occlusion analysis, with the
expected age of the predicted distribution as the output):

- saliency (years, >= 0): mean |age(occluded) - age(original)|: how much hiding the region moves the estimate;
- age_effect (years, signed): mean age(original) - age(occluded): positive where the region makes the face
  look older (hiding it lowers the estimate), negative where it makes it look younger.

Cost: (grid - 1)^2 + 1 model runs per face: 50 at the default grid 8 (about 1.2 s for the packaged
150-px model on one busy CPU core, measured in docs/explain.md). Multi-view models are explained on their
first view (the others are passed unchanged).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from agekit.errors import AgekitError
from agekit.explain.geometry import crop_matrix, to_photo
from agekit.runtime.crops import face_crops
from agekit.runtime.estimator import as_image

DEFAULT_GRID = 8
MAX_GRID = 32  # 961 copies per face; (grid - 1)^2 copies of a much finer grid would not fit in memory
FILLS = ("mean", "blur")


@dataclass
class FaceExplanation:
    """One face's explanation.

    face: the FaceResult (age, interval, probs, box, ...). crop: the (S, S, 3) uint8 crop the model saw
    (first view). saliency, age_effect: (S, S) float32 maps over that crop, in years (see the module doc).
    matrix: 2x3, photo pixels -> crop pixels. photo_shape: (H, W) of the photo. base_age: the model's raw
    expected age on the crop (before personalisation; equals face.age). grid, fill: how it was occluded.
    gradcam: (S, S) float32 in [0, 1] when a torch checkpoint explained it too (agekit.explain.gradcam).
    ages: (K,) the integer ages face.probs is over.
    """

    face: object
    crop: np.ndarray
    saliency: np.ndarray
    age_effect: np.ndarray
    matrix: np.ndarray
    photo_shape: tuple
    base_age: float
    grid: int = DEFAULT_GRID
    fill: str = "mean"
    gradcam: np.ndarray | None = field(default=None, repr=False)
    ages: np.ndarray | None = field(default=None, repr=False)  # the ages face.probs is over

    def photo_map(self, which: str = "saliency") -> tuple[np.ndarray, np.ndarray]:
        """The map (`saliency`, `age_effect` or `gradcam`) over the photo: ((H, W) float32, 0 outside the
        crop window; (H, W) coverage in [0, 1])."""
        values = getattr(self, which)
        if values is None:
            raise AgekitError(f"this explanation has no {which} map")
        return to_photo(values, self.matrix, self.photo_shape)


def check_options(grid: int, fill: str) -> None:
    if not isinstance(grid, (int, np.integer)) or not 2 <= grid <= MAX_GRID:
        raise AgekitError(f"grid must be an integer from 2 to {MAX_GRID}, got {grid!r}")
    if fill not in FILLS:
        raise AgekitError(f"fill must be one of {', '.join(FILLS)}, got {fill!r}")


def patch_windows(size: int, grid: int) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) of each 2 x 2-cell patch, row by row: (grid - 1)^2 windows over a size x size crop."""
    edges = np.linspace(0, size, grid + 1).round().astype(int)
    return [(edges[i], edges[i + 2], edges[j], edges[j + 2]) for i in range(grid - 1) for j in range(grid - 1)]


def filler(crop: np.ndarray, fill: str) -> np.ndarray:
    """What a hidden patch shows: the crop's mean colour everywhere, or the crop blurred (sigma = S / 16:
    texture such as wrinkles goes, the colour and the coarse shape stay)."""
    if fill == "mean":
        return np.broadcast_to(crop.reshape(-1, 3).mean(0).round().astype(np.uint8), crop.shape).copy()
    return cv2.GaussianBlur(crop, (0, 0), crop.shape[0] / 16.0)


def occluded_copies(crop: np.ndarray, windows, fill: str) -> np.ndarray:
    """(len(windows), S, S, 3) uint8: the crop with each window replaced by the filler."""
    hidden = filler(crop, fill)
    copies = np.repeat(crop[None], len(windows), axis=0)
    for k, (y0, y1, x0, x1) in enumerate(windows):
        copies[k, y0:y1, x0:x1] = hidden[y0:y1, x0:x1]
    return copies


def accumulate(values: np.ndarray, windows, size: int) -> np.ndarray:
    """(S, S) float32: each pixel's mean of `values` over the windows covering it (0 where none does)."""
    total = np.zeros((size, size), np.float64)
    count = np.zeros((size, size), np.float64)
    for v, (y0, y1, x0, x1) in zip(values, windows):
        total[y0:y1, x0:x1] += v
        count[y0:y1, x0:x1] += 1
    return (total / np.maximum(count, 1)).astype(np.float32)


def occlusion_maps(model, face_views: list[list[np.ndarray]], grid: int = DEFAULT_GRID, fill: str = "mean",
                   batch_size: int = 64) -> list[dict]:
    """Occlusion maps of several faces with one model pass over all their copies.

    model: agekit.runtime.OnnxAgeModel (anything with .run(views, batch_size) -> {'age': (N,)}).
    face_views: per face, its list of uint8 crops (one per view). Returns per face {'base_age',
    'saliency' (S, S), 'age_effect' (S, S)}.
    """
    check_options(grid, fill)
    if not face_views:
        return []
    n_views = len(face_views[0])
    size = face_views[0][0].shape[0]
    windows = patch_windows(size, grid)
    per_face = len(windows) + 1  # the original crop first, then one copy per window
    stacks = [[] for _ in range(n_views)]
    for views in face_views:
        stacks[0].append(views[0][None])
        stacks[0].append(occluded_copies(views[0], windows, fill))
        for v in range(1, n_views):
            stacks[v].append(np.repeat(views[v][None], per_face, axis=0))
    ages = model.run([np.concatenate(s) for s in stacks], batch_size=batch_size)["age"].astype(np.float64)
    out = []
    for i in range(len(face_views)):
        block = ages[i * per_face:(i + 1) * per_face]
        base, occluded = float(block[0]), block[1:]
        out.append({"base_age": base, "saliency": accumulate(np.abs(occluded - base), windows, size),
                    "age_effect": accumulate(base - occluded, windows, size)})
    return out


def explain_image(est, image, boxes=None, grid: int = DEFAULT_GRID, fill: str = "mean") -> list[FaceExplanation]:
    """Every face of one image (path, RGB array or PIL image) with its occlusion maps: `est.predict`'s faces,
    in its order, each explained over the crop `est` made of it."""
    check_options(grid, fill)
    image = as_image(image)
    faces = est.predict(image, boxes=boxes)
    specs = est.model.views
    views, matrices = [], []
    for f in faces:
        landmarks = f.landmarks if f.crop_from == "landmarks" else None
        box = f.box if f.crop_from == "box" else None
        crops, _ = face_crops(image, specs, landmarks=landmarks, box=box)
        views.append(crops)
        matrices.append(crop_matrix(specs[0], image.shape, landmarks=landmarks, box=box))
    maps = occlusion_maps(est.model, views, grid=grid, fill=fill, batch_size=est.batch_size * 2)
    return [FaceExplanation(face=f, crop=v[0], saliency=m["saliency"], age_effect=m["age_effect"], matrix=mat,
                            photo_shape=tuple(image.shape[:2]), base_age=m["base_age"], grid=grid, fill=fill,
                            ages=est.model.ages)
            for f, v, mat, m in zip(faces, views, matrices, maps)]


def delete_pixels(crop: np.ndarray, saliency: np.ndarray, fraction: float, fill: str = "mean",
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """The crop with `fraction` of its pixels replaced by the filler: the most salient ones (rng None) or
    a random set of the same size (the sanity check's baseline)."""
    size = saliency.size
    k = round(fraction * size)
    if rng is None:
        chosen = np.argsort(-saliency.ravel(), kind="stable")[:k]
    else:
        chosen = rng.choice(size, k, replace=False)
    mask = np.zeros(size, bool)
    mask[chosen] = True
    mask = mask.reshape(saliency.shape)
    out = crop.copy()
    out[mask] = filler(crop, fill)[mask]
    return out
