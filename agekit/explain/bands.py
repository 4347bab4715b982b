"""What a model looks at per age band, over a dataset split, and whether its maps mean anything.

For a seeded sample of faces per band (infants, children, teenagers, adults, seniors) of a split, each face
is found once (the first model's detector, the labelled face chosen as `agekit eval` chooses it) and every
model explains it over its own aligned crop (agekit.explain.occlusion). Aligned crops share one face layout,
so the maps can be averaged per band: each face's map is first divided by its own mean (every face counts
the same; 1 = the face's average saliency). The region shares (agekit.explain.geometry.TEMPLATE_REGIONS)
say which part of the face carries the saliency in each band.

The deletion check (a sanity check of the maps, after Samek et al. 2017's region perturbation): hiding the
most salient `fraction` of each face's pixels (filled as the occlusion fills) must move the estimate more
than hiding a random `fraction` (mean over RANDOM_DRAWS draws). Reported: mean |change in age| for both,
their ratio, the share of faces where the salient deletion moves it more, and a paired bootstrap 95%
interval of the difference.

Only aggregates leave this module (mean maps, tables): no dataset face is drawn or stored.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from agekit.data.detected import main_face
from agekit.data.records import AGE_VALID_RANGE, default_root, read_dataset
from agekit.data.splits import seeded_subset
from agekit.detect import detect_with_rotation
from agekit.errors import AgekitError, ImageError
from agekit.eval.pipeline import resolve_split, select_records
from agekit.explain.band_figures import write_band_report
from agekit.explain.geometry import region_masks, region_shares
from agekit.explain.occlusion import check_options, delete_pixels, occlusion_maps
from agekit.io import load_image
from agekit.runtime import AgeEstimator
from agekit.runtime.crops import face_crops

# name -> (first, last) whole years of true age; None = no upper limit.
BANDS = {"infants": (0, 2), "children": (3, 12), "teenagers": (13, 19), "adults": (20, 59), "seniors": (60, None)}
RANDOM_DRAWS = 3
CHUNK = 8  # faces explained per model call (8 x 50 copies)
BOOTSTRAP = 1000


def band_of(age: float) -> str | None:
    years = int(np.floor(age))
    for name, (low, high) in BANDS.items():
        if years >= low and (high is None or years <= high):
            return name
    return None


def sample_by_band(records, per_band: int, seed: int) -> dict[str, list]:
    """{band: up to per_band records}, each band a seeded subset (agekit.data.splits.seeded_subset)."""
    grouped: dict[str, list] = {name: [] for name in BANDS}
    for r in records:
        band = band_of(r.age)
        if band is not None:
            grouped[band].append(r)
    return {name: seeded_subset(rs, per_band, seed) for name, rs in grouped.items()}


def find_faces(est, sampled: dict, progress: bool = True) -> tuple[list[dict], list[dict]]:
    """Detect each sampled record's labelled face once: ([{'band', 'key', 'true_age', 'image', 'landmarks'}],
    [{'key', 'reason'}] for the misses)."""
    found, missed = [], []
    items = [(band, r) for band, rs in sampled.items() for r in rs]
    for band, r in tqdm(items, desc="finding faces", unit="img", disable=not progress):
        try:
            image = load_image(r.path)
            faces, _ = detect_with_rotation(est.detector, image)
        except (ImageError, AgekitError) as exc:
            missed.append({"key": r.key, "reason": str(exc)})
            continue
        face = main_face(faces, image.shape)
        if face is None:
            missed.append({"key": r.key, "reason": "no face found"})
            continue
        found.append({"band": band, "key": r.key, "true_age": float(r.age), "image": image,
                      "landmarks": face.landmarks})
    return found, missed


def explain_faces(est, faces: list[dict], grid: int, fill: str, fraction: float, seed: int,
                  progress: bool = True) -> list[dict]:
    """Per face: its crop's occlusion saliency, the model's age, and the deletion check's |changes|."""
    rng = np.random.default_rng(seed)
    out = []
    bar = tqdm(total=len(faces), desc=f"explaining ({Path(str(est.model.path)).stem})", unit="face",
               disable=not progress)
    for start in range(0, len(faces), CHUNK):
        chunk = faces[start:start + CHUNK]
        views = [face_crops(f["image"], est.model.views, landmarks=f["landmarks"])[0] for f in chunk]
        maps = occlusion_maps(est.model, views, grid=grid, fill=fill, batch_size=64)
        deleted = []
        for v, m in zip(views, maps):
            deleted.append(delete_pixels(v[0], m["saliency"], fraction, fill))
            deleted += [delete_pixels(v[0], m["saliency"], fraction, fill, rng=rng) for _ in range(RANDOM_DRAWS)]
        per = 1 + RANDOM_DRAWS
        others = [np.repeat(np.stack([v[i] for v in views]), per, axis=0) for i in range(1, len(views[0]))]
        ages = est.model.run([np.stack(deleted), *others], batch_size=64)["age"].astype(np.float64)
        for i, (f, m) in enumerate(zip(chunk, maps)):
            block = np.abs(ages[i * per:(i + 1) * per] - m["base_age"])
            out.append({"band": f["band"], "true_age": f["true_age"], "pred_age": m["base_age"],
                        "saliency": m["saliency"], "salient_change": float(block[0]),
                        "random_change": float(block[1:].mean())})
        bar.update(len(chunk))
    bar.close()
    return out


def deletion_summary(rows: list[dict], seed: int = 0) -> dict:
    """Mean |change| after deleting the salient vs random pixels, ratio, share of faces where salient wins,
    and a paired bootstrap 95% interval of the mean difference."""
    sal = np.array([r["salient_change"] for r in rows])
    rnd = np.array([r["random_change"] for r in rows])
    diff = sal - rnd
    rng = np.random.default_rng(seed)
    boots = diff[rng.integers(0, len(diff), (BOOTSTRAP, len(diff)))].mean(1) if len(diff) else np.zeros(1)
    return {"n": len(rows), "salient_mean": float(sal.mean()), "random_mean": float(rnd.mean()),
            "ratio": float(sal.mean() / rnd.mean()) if rnd.mean() > 0 else None,
            "salient_wins": float((diff > 0).mean()), "difference": float(diff.mean()),
            "difference_ci95": [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]}


def summarise_model(rows: list[dict], spec, seed: int = 0) -> dict:
    """Per band: n, MAE, the mean normalised saliency map (S, S), region shares and the deletion figures;
    and the deletion figures over all faces."""
    masks = region_masks(spec)
    bands = {}
    for name in BANDS:
        part = [r for r in rows if r["band"] == name]
        if not part:
            continue
        maps = np.stack([r["saliency"] / max(float(r["saliency"].mean()), 1e-9) for r in part])
        shares = [region_shares(r["saliency"], masks) for r in part]
        bands[name] = {
            "n": len(part), "mae": float(np.mean([abs(r["pred_age"] - r["true_age"]) for r in part])),
            "mean_map": maps.mean(0).astype(np.float32),
            "region_shares": None if masks is None else {k: float(np.mean([s[k] for s in shares]))
                                                         for k in shares[0]},
            "deletion": deletion_summary(part, seed)}
    return {"n_faces": len(rows), "bands": bands, "deletion": deletion_summary(rows, seed)}


def _shown_path(path) -> str:
    """A model's path as the report shows it: relative to the working folder when inside it."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _model_names(models) -> list[str]:
    names = []
    for m in models:
        name = str(m) if str(m) in ("default", "fast") else Path(str(m)).stem
        while name in names:
            name += "'"
        names.append(name)
    return names


def run_bands(models, dataset: str = "utkface", root=None, split: str = "test", per_band: int = 50,
              fraction: float = 0.1, grid: int = 8, fill: str = "mean", seed: int = 0, threads: int | None = None,
              checkpoint=None, layer: str | None = None, progress: bool = True) -> dict:
    """Explain a per-band sample of a dataset split with each model. Returns {'protocol', 'models': {name:
    summarise_model(...)}, 'specs': {name: CropSpec}, 'misses', 'channels' (with checkpoint)}."""
    check_options(grid, fill)
    if not 0 < fraction < 1:
        raise AgekitError(f"fraction must be between 0 and 1, got {fraction}")
    if per_band < 1:
        raise AgekitError(f"per-band must be at least 1, got {per_band}")
    estimators = [AgeEstimator(m, threads=threads) for m in models]
    names = _model_names(models)
    root = Path(root).expanduser() if root else default_root(dataset)
    result = read_dataset(dataset, root)
    records = [r for r in result.records if AGE_VALID_RANGE[0] <= r.age <= AGE_VALID_RANGE[1]]
    split, spec = resolve_split(dataset, split, None)
    chosen, header = select_records(records, split, spec)
    if not chosen:
        raise AgekitError(f"split '{split}' of {root} is empty")
    sampled = sample_by_band(chosen, per_band, seed)
    faces, missed = find_faces(estimators[0], sampled, progress)
    if not faces:
        raise AgekitError(f"no face found in the {sum(map(len, sampled.values()))} sampled images of {root}")
    out = {"models": {}, "specs": {}, "misses": missed}
    for name, est in zip(names, estimators):
        rows = explain_faces(est, faces, grid, fill, fraction, seed, progress)
        out["models"][name] = summarise_model(rows, est.model.views[0], seed)
        out["specs"][name] = est.model.views[0]
    if checkpoint:
        out["channels"] = checkpoint_channels(checkpoint, layer, estimators[0], faces)
    out["protocol"] = {
        "models": {n: _shown_path(e.model.path) for n, e in zip(names, estimators)},
        "methods": {n: f"{e.model.meta.get('method')} / {e.model.meta.get('backbone')}"
                    for n, e in zip(names, estimators)},
        "dataset": dataset, "split": split, "split_rule": header, "per_band": per_band,
        "sampled": {b: len(rs) for b, rs in sampled.items()}, "found": len(faces), "misses": len(missed),
        "bands": {b: f"{lo}-{hi}" if hi is not None else f"{lo}+" for b, (lo, hi) in BANDS.items()},
        "detector": f"{estimators[0].detector_name} (of the first model), labelled face by "
                    "agekit.data.detected.main_face",
        "occlusion": {"grid": grid, "fill": fill, "copies_per_face": (grid - 1) ** 2},
        "deletion": {"fraction": fraction, "random_draws": RANDOM_DRAWS, "fill": fill}, "seed": seed,
        "checkpoint": str(checkpoint) if checkpoint else None,
    }
    return out


def checkpoint_channels(checkpoint, layer, est, faces) -> dict:
    """The channels of `layer` (default: the Grad-CAM layer) that respond most to each band, over the first
    model's crops (agekit.explain.gradcam.band_channels)."""
    from agekit.explain.gradcam import (  # torch: only here
        band_channels,
        default_layer,
        load_checkpoint,
    )

    model, specs = load_checkpoint(checkpoint)
    if specs[0] != est.model.views[0]:
        raise AgekitError(f"{checkpoint}: its crop {specs[0]} differs from the first model's {est.model.views[0]}")
    layer = layer or default_layer(model, specs[0].size)
    crops = {b: [] for b in BANDS}
    for f in faces:
        crops[f["band"]].append(face_crops(f["image"], specs, landmarks=f["landmarks"])[0][0])
    channels = band_channels(model, {b: np.stack(c) for b, c in crops.items() if c}, layer)
    return {"layer": layer, "bands": channels}


def write_bands(out_dir, result: dict) -> dict:
    """bands.json (tables), bands.png (mean maps: models x bands), deletion.png, channels.png (with a
    checkpoint) and bands.md linking them; each written atomically. Returns {name: path}."""
    return write_band_report(Path(out_dir), result)
