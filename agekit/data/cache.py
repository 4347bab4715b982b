"""Preprocessing cache: decode, crop/align and resize each image once into an on-disk uint8 array.

Key: dataset name + crop spec + a hash of the record keys (and landmarks/boxes, which change the crop),
so any change to the images' selection or the crop rule builds a new array. Files: <key>.npy (N, S, S, 3)
and <key>.json (keys, failures). Both are written to temporary names and renamed, so an interrupted build
leaves nothing that looks complete.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from agekit.crop import CropSpec, crop_face
from agekit.errors import ImageError
from agekit.io import atomic_path, load_image, write_json_atomic

log = logging.getLogger(__name__)
CACHE_VERSION = 2  # 2: FG-NET landmarks read in their own layout


def default_cache_dir() -> Path:
    return Path(os.environ.get("AGEKIT_CACHE", Path.home() / ".cache" / "agekit"))


def cache_key(dataset: str, records, spec: CropSpec) -> str:
    h = hashlib.sha1(f"v{CACHE_VERSION}".encode())
    for r in records:
        h.update(r.key.encode())
        if spec.rule == "align":
            if r.landmarks is not None:
                h.update(np.asarray(r.face_points(), dtype=np.float32).round(2).tobytes())
            elif r.box is not None:
                h.update(repr(tuple(round(float(v), 2) for v in r.box)).encode())
    return f"{dataset}-{spec.tag()}-{h.hexdigest()[:12]}"


def load_crop(record, spec: CropSpec) -> np.ndarray:
    """Decode and crop one record: the same call the uncached data path makes."""
    image = load_image(record.path)
    return crop_face(image, spec, landmarks=record.face_points(), box=record.box)


def _crop_chunk(args):
    records, spec = args
    out, failures = [], []
    for r in records:
        try:
            out.append(load_crop(r, spec))
        except ImageError as exc:
            out.append(np.zeros((spec.size, spec.size, 3), np.uint8))
            failures.append((r.key, exc.reason))
    return np.stack(out) if out else np.zeros((0, spec.size, spec.size, 3), np.uint8), failures


class FaceCache:
    """Crops for a list of records: `images` (N, S, S, 3) uint8 aligned with `records`; failed ones removed."""

    def __init__(self, records, images: np.ndarray, failures: dict):
        keep = [i for i, r in enumerate(records) if r.key not in failures]
        self.records = [records[i] for i in keep]
        self.images = images if len(keep) == len(records) else images[keep]
        self.failures = failures


def build_or_load(dataset: str, records, spec: CropSpec, cache_dir=None, workers: int | None = None,
                  progress: bool = True, use_cache: bool = True) -> FaceCache:
    """Return crops for `records`, from the on-disk cache when present, else built (and saved if use_cache)."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    key = cache_key(dataset, records, spec)
    npy, meta_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    if use_cache and npy.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        images = np.load(npy)  # fully in memory (and writable): batches are gathered from it every step
        if images.shape[0] == len(records):
            log.debug("cache hit %s", npy)
            return FaceCache(records, images, dict(meta["failures"]))
    images, failures = _build(records, spec, workers, progress, desc=f"cropping {dataset} ({spec.tag()})")
    if failures:
        log.warning("%d of %d images could not be read and are skipped (first: %s: %s)",
                    len(failures), len(records), *next(iter(failures.items())))
    if use_cache:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(npy) as tmp:
            np.save(tmp, images)
        write_json_atomic(meta_path, {"version": CACHE_VERSION, "dataset": dataset, "crop": spec.to_dict(),
                                      "n": len(records), "failures": failures,
                                      "keys_sha1": key.rsplit("-", 1)[-1]})
    return FaceCache(records, images, failures)


def _build(records, spec, workers, progress, desc):
    workers = workers or min(os.cpu_count() or 1, 8)
    chunk = 256
    jobs = [(records[i:i + chunk], spec) for i in range(0, len(records), chunk)]
    images = np.zeros((len(records), spec.size, spec.size, 3), np.uint8)
    failures: dict = {}
    bar = tqdm(total=len(records), desc=desc, disable=not progress or len(records) < 2000, unit="img")
    pos = 0
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = pool.map(_crop_chunk, jobs)
            for arr, fails in results:
                images[pos:pos + len(arr)] = arr
                pos += len(arr)
                failures.update(fails)
                bar.update(len(arr))
    else:
        for job in jobs:
            arr, fails = _crop_chunk(job)
            images[pos:pos + len(arr)] = arr
            pos += len(arr)
            failures.update(fails)
            bar.update(len(arr))
    bar.close()
    return images, failures
