"""Encoder features of FG-NET faces for the face Neural Process (needs torch; agekit.np.faces does not).

The encoder is a trained agekit checkpoint used frozen: x_hat = `AgeModel.features(x)`, the backbone's pooled
features (the concatenation over views for a multi-input model), the same vector the method head reads and
the ONNX model's "embedding" output. FG-NET photos are cropped with the checkpoint's input size and the
`align` rule on FG-NET's own 68 landmarks (as `agekit bench --protocol fgnet_lopo` does). Features are
cached per (checkpoint file contents, crops) under $AGEKIT_CACHE/np_faces, so a rerun skips the network.
"""
from __future__ import annotations

import copy
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agekit.errors import AgekitError

log = logging.getLogger(__name__)
FEATURES_VERSION = 1


@dataclass
class FaceFeatures:
    """One row per usable image: encoder features (N, F) float32, true ages (N,), subject ids (N,) str,
    the encoder's own age prediction (N,) and the image keys (N,) str."""

    features: np.ndarray
    ages: np.ndarray
    subjects: np.ndarray
    encoder_age: np.ndarray
    keys: np.ndarray
    info: dict

    def __len__(self) -> int:
        return len(self.ages)

    def select(self, mask) -> "FaceFeatures":
        mask = np.asarray(mask)
        return FaceFeatures(self.features[mask], self.ages[mask], self.subjects[mask], self.encoder_age[mask],
                            self.keys[mask], dict(self.info))


def _file_sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def encoder_crop_config(payload: dict) -> dict:
    """The checkpoint's config with its crops switched to landmark alignment (size, margin, zoom and extra
    views as trained). FG-NET photos are uncropped scans, so the rule is always `align`."""
    cfg = copy.deepcopy(payload["config"])
    cfg["data"]["crop"]["rule"] = "align"
    return cfg


def encode_crops(model, views, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Run a frozen AgeModel on uint8 crops (a list with one (N, S, S, 3) array per view): returns
    (features (N, F) float32, the model's own age estimate (N,) float32), in one pass."""
    import torch

    from agekit.engine.inference import to_input

    model.eval()
    feats, ages = [], []
    n = len(views[0])
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            x = to_input([v[start:start + batch_size] for v in views], "cpu", channels_last=False)
            f = model.features(x)
            feats.append(f.float().numpy())
            ages.append(model.method.decode(model.method(f)).mean.float().numpy())
    if not feats:
        return np.zeros((0, model.num_features), np.float32), np.zeros(0, np.float32)
    return np.concatenate(feats).astype(np.float32), np.concatenate(ages).astype(np.float32)


def fgnet_features(checkpoint, root, *, cache_dir=None, use_cache: bool = True, progress: bool = False,
                   subjects=None) -> FaceFeatures:
    """Encoder features of every FG-NET image with landmarks under `root` (optionally only `subjects`)."""
    import torch

    from agekit.data.cache import build_or_load, default_cache_dir
    from agekit.data.records import AGE_VALID_RANGE, read_dataset
    from agekit.engine.checkpoint import load_model, read_checkpoint
    from agekit.engine.data import view_specs

    checkpoint = Path(checkpoint)
    payload = read_checkpoint(checkpoint)
    cfg = encoder_crop_config(payload)
    result = read_dataset("fgnet", root)
    records = [r for r in result.records
               if r.subject is not None and AGE_VALID_RANGE[0] <= r.age <= AGE_VALID_RANGE[1]]
    no_landmarks = [r.key for r in records if r.landmarks is None]
    records = [r for r in records if r.landmarks is not None]
    if subjects is not None:
        wanted = {str(s) for s in subjects}
        records = [r for r in records if str(r.subject) in wanted]
    if not records:
        raise AgekitError(f"{root}: no FG-NET images with subject ids and landmarks")
    records.sort(key=lambda r: r.key)
    specs = view_specs(cfg)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    h = hashlib.sha1(f"v{FEATURES_VERSION}|{_file_sha1(checkpoint)}|{[s.tag() for s in specs]}".encode())
    for r in records:
        h.update(r.key.encode())
        h.update(np.asarray(r.face_points(), np.float32).round(2).tobytes())
    feat_path = cache_dir / "np_faces" / f"fgnet-{h.hexdigest()[:16]}.npz"
    info = {"checkpoint": str(checkpoint), "backbone": cfg["model"]["backbone"],
            "crop": [s.to_dict() for s in specs], "root": str(root), "skipped_no_landmarks": no_landmarks,
            "skipped_unreadable": []}
    if use_cache and feat_path.is_file():
        z = np.load(feat_path, allow_pickle=False)
        info["skipped_unreadable"] = [str(k) for k in z["unreadable"]]
        log.debug("feature cache hit %s", feat_path)
        return FaceFeatures(z["features"], z["ages"], z["subjects"], z["encoder_age"], z["keys"], info)

    caches = [build_or_load("fgnet", records, spec, cache_dir, progress=progress, use_cache=use_cache)
              for spec in specs]
    failed = set().union(*(c.failures for c in caches))
    keep = [r for r in records if r.key not in failed]
    views = []
    for c in caches:
        pos = {r.key: j for j, r in enumerate(c.records)}
        views.append(c.images[[pos[r.key] for r in keep]])
    model, _ = load_model(checkpoint)
    old = torch.get_num_threads()
    try:
        feats, enc_age = encode_crops(model, views)
    finally:
        torch.set_num_threads(old)
    out = FaceFeatures(feats, np.array([r.age for r in keep], np.float32),
                       np.array([str(r.subject) for r in keep]), enc_age, np.array([r.key for r in keep]), info)
    info["skipped_unreadable"] = sorted(failed)
    if use_cache:
        from agekit.io import atomic_path

        with atomic_path(feat_path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, features=out.features, ages=out.ages, subjects=out.subjects,
                         encoder_age=out.encoder_age, keys=out.keys, unreadable=np.array(sorted(failed), dtype=str))
    return out
