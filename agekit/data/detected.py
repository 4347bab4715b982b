"""Landmarks from the face detector, so training crops are made exactly as `agekit predict` makes them.

With `data.landmarks: detect` every image is run through the detector that prediction uses
(`detect_with_rotation`, same threshold), the dataset's labelled face is picked among the detections
(`main_face`), and its 5 landmarks and box replace whatever the dataset ships; the "align" crop rule then
aligns on them. Images where no face is found are dropped from training and evaluation, and counted.

Detections are cached in one JSON file per dataset, detector and image list (the images do not change
between runs, the detector's output is deterministic), written atomically.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from agekit.data.cache import default_cache_dir
from agekit.detect import DEFAULT_DETECTOR, create_detector, detect_with_rotation
from agekit.errors import AgekitError, ImageError
from agekit.io import load_image, write_json_atomic

log = logging.getLogger(__name__)
DETECTIONS_VERSION = 2  # 2: the coarse-to-fine CenterFace search (its landmarks differ slightly from the single search)
LANDMARK_SOURCES = ("dataset", "detect")


def main_face(faces, shape):
    """The face a dataset's label belongs to: the largest one, discounted by its distance from the image
    centre (dataset photos centre their subject; a bystander at the edge should not win by size alone)."""
    if not faces:
        return None
    h, w = shape[:2]
    diag = float(np.hypot(h, w))

    def weight(face):
        cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
        off = float(np.hypot(cx - w / 2, cy - h / 2)) / diag
        return face.width * face.height * max(0.0, 1.0 - 2.0 * off)

    return max(faces, key=weight)


def _detect_chunk(args):
    items, detector_name, threshold = args

    det = create_detector(detector_name, threshold=threshold, threads=1)
    out = {}
    for key, path in items:
        try:
            image = load_image(path)
        except ImageError as exc:
            out[key] = {"error": exc.reason}
            continue
        faces, rotation = detect_with_rotation(det, image)
        face = main_face(faces, image.shape)
        if face is None:
            out[key] = {"error": "no face found"}
        else:
            out[key] = {"box": [round(v, 2) for v in face.box],
                        "landmarks": np.round(face.landmarks, 2).tolist(),
                        "score": round(face.score, 4), "rotation": rotation, "faces": len(faces)}
    return out


def _cache_file(dataset, records, detector, threshold, cache_dir) -> Path:
    h = hashlib.sha1(f"v{DETECTIONS_VERSION}|{detector}|{threshold}".encode())
    for r in records:
        h.update(r.key.encode())

    base = Path(cache_dir) if cache_dir else default_cache_dir()
    return base / f"detections-{dataset}-{detector}-{h.hexdigest()[:12]}.json"


def detect_records(dataset: str, records, detector: str = "default", threshold=None, cache_dir=None,
                   workers: int | None = None, progress: bool = True) -> dict:
    """{record key: detection dict or {"error": reason}} for every record, from the cache when present."""

    name = DEFAULT_DETECTOR if detector in (None, "", "default") else str(detector)
    path = _cache_file(dataset, records, name, threshold, cache_dir)
    if path.is_file():
        found = json.loads(path.read_text())["detections"]
        if all(r.key in found for r in records):
            return found
    workers = workers or min(os.cpu_count() or 1, 8)
    chunk = 128
    items = [(r.key, r.path) for r in records]
    jobs = [(items[i:i + chunk], name, threshold) for i in range(0, len(items), chunk)]
    found: dict = {}
    bar = tqdm(total=len(items), desc=f"detecting faces in {dataset} ({name})", unit="img",
               disable=not progress or len(items) < 500)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            for part in pool.map(_detect_chunk, jobs):
                found.update(part)
                bar.update(len(part))
    else:
        for job in jobs:
            part = _detect_chunk(job)
            found.update(part)
            bar.update(len(part))
    bar.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"version": DETECTIONS_VERSION, "dataset": dataset, "detector": name,
                             "threshold": threshold, "detections": found})
    return found


def attach_detections(dataset: str, records, detector: str = "default", threshold=None, cache_dir=None,
                      progress: bool = True):
    """Records carrying the detector's 5 landmarks and box; those without a detected face are dropped.

    Returns (records, dropped) where dropped is [(key, reason)].
    """
    found = detect_records(dataset, records, detector, threshold, cache_dir, progress=progress)
    kept, dropped = [], []
    for r in records:
        det = found.get(r.key) or {"error": "not detected"}
        if "error" in det:
            dropped.append((r.key, det["error"]))
            continue
        kept.append(dataclasses.replace(r, landmarks=np.asarray(det["landmarks"], dtype=np.float64),
                                        landmark_layout=None, box=tuple(det["box"])))
    if dropped:
        log.warning("%s: no face detected in %d of %d images; they are left out (first: %s: %s)",
                    dataset, len(dropped), len(records), *dropped[0])
    if not kept:
        raise AgekitError(f"{dataset}: the face detector found no face in any of {len(records)} images")
    return kept, dropped
