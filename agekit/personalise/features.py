"""Encoder features of FG-NET faces for fitting and evaluating the face Neural Process (`agekit.personalise`).

The encoder is a trained agekit model used frozen: x_hat = the backbone's pooled features (`AgeModel.features`
for a checkpoint, the "embedding" output of an ONNX model made by `agekit export`; the two are the same
network). Every FG-NET photo is cropped from its own 68 landmarks with the model's crop views, the way
`agekit predict` crops a detected face (`agekit.runtime.crops.face_crops`: the "align" rule aligns on the
landmarks; a model trained on whole UTKFace chips ("full" rule) gets a chip-like aligned view first), so the
features of the bank's subjects match those of a user's photos. Features are cached per (model file
contents, images, landmarks) under $AGEKIT_CACHE/np_faces; a rerun skips decoding and the network.
A checkpoint needs torch; an ONNX model needs onnxruntime only.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agekit.crop import view_specs
from agekit.data.cache import default_cache_dir
from agekit.data.records import AGE_VALID_RANGE, read_dataset
from agekit.errors import AgekitError, ImageError
from agekit.io import atomic_path, load_image
from agekit.runtime.crops import face_crops
from agekit.runtime.onnx_model import OnnxAgeModel

log = logging.getLogger(__name__)
FEATURES_VERSION = 2


@dataclass
class FaceFeatures:
    """One row per usable image: encoder features (N, F) float32, true ages (N,), subject ids (N,) str,
    the encoder's own age estimate (N,) and the image keys (N,) str; info: where they came from."""

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


def file_sha1(path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Encoder:
    """A frozen agekit model as a feature extractor: `specs` (crop views), `encode(views)` ->
    (features (N, F) float32, own age estimate (N,)), and a description."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise AgekitError(f"encoder model not found: {self.path}")
        self.kind = "onnx" if self.path.suffix.lower() == ".onnx" else "checkpoint"
        self.sha1 = file_sha1(self.path)
        if self.kind == "onnx":

            self._onnx = OnnxAgeModel(self.path)
            if "embedding" not in self._onnx.output_names:
                raise AgekitError(f"{self.path}: this ONNX model has no 'embedding' output; re-export it with "
                                  "`agekit export` to use it for personalisation")
            self.specs = list(self._onnx.views)
            meta = self._onnx.meta
            self.backbone, self.age_range = meta.get("backbone"), [meta["age_min"], meta["age_max"]]
        else:
            from agekit.engine.checkpoint import read_checkpoint

            payload = read_checkpoint(self.path)
            cfg = payload["config"]
            self.specs = view_specs(cfg)
            self.backbone = cfg["model"]["backbone"]
            self.age_range = [cfg["data"]["age_min"], cfg["data"]["age_max"]]
            self._model = None

    def encode(self, views, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
        if self.kind == "onnx":
            out = self._onnx.run(views, batch_size=batch_size)
            return out["embedding"].astype(np.float32), out["age"].astype(np.float32)
        if self._model is None:
            from agekit.engine.checkpoint import load_model

            self._model = load_model(self.path)[0]
        return encode_crops(self._model, views, batch_size)

    def describe(self) -> dict:
        return {"path": str(self.path), "kind": self.kind, "sha1": self.sha1, "backbone": self.backbone,
                "crop": [s.to_dict() for s in self.specs], "age_range": self.age_range}


def encode_crops(model, views, batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Run a frozen AgeModel on uint8 crops (a list with one (N, S, S, 3) array per view): returns
    (features (N, F) float32 = `model.features`, the model's own age estimate (N,) float32), in one pass."""
    import torch

    from agekit.engine.inference import to_input

    model.eval()
    feats, ages = [], []
    with torch.inference_mode():
        for start in range(0, len(views[0]), batch_size):
            x = to_input([v[start:start + batch_size] for v in views], "cpu", channels_last=False)
            f = model.features(x)
            feats.append(f.float().numpy())
            ages.append(model.method.decode(model.method(f)).mean.float().numpy())
    if not feats:
        return np.zeros((0, model.num_features), np.float32), np.zeros(0, np.float32)
    return np.concatenate(feats).astype(np.float32), np.concatenate(ages).astype(np.float32)


def crop_views(image: np.ndarray, specs, landmarks) -> list[np.ndarray]:
    """The model's input crops of the face with these landmarks, as `agekit predict` makes them."""
    return face_crops(image, specs, landmarks=landmarks)[0]


def fgnet_records(root, subjects=None):
    """FG-NET records with a subject id, a valid age and landmarks, sorted by key; and the keys skipped
    for lack of landmarks."""

    result = read_dataset("fgnet", root)
    records = [r for r in result.records
               if r.subject is not None and AGE_VALID_RANGE[0] <= r.age <= AGE_VALID_RANGE[1]]
    no_landmarks = sorted(r.key for r in records if r.landmarks is None)
    records = [r for r in records if r.landmarks is not None]
    if subjects is not None:
        wanted = {str(s) for s in subjects}
        records = [r for r in records if str(r.subject) in wanted]
    if not records:
        raise AgekitError(f"{root}: no FG-NET images with subject ids and landmarks"
                          + (f" for subjects {sorted(subjects)}" if subjects is not None else ""))
    return sorted(records, key=lambda r: r.key), no_landmarks


def fgnet_features(model, root, *, cache_dir=None, use_cache: bool = True, subjects=None) -> FaceFeatures:
    """Encoder features of every FG-NET image with landmarks under `root` (optionally only `subjects`).
    model: a checkpoint (.pt) or an ONNX model (.onnx), or an `Encoder`."""

    encoder = model if isinstance(model, Encoder) else Encoder(model)
    records, no_landmarks = fgnet_records(root, subjects)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    h = hashlib.sha1(f"v{FEATURES_VERSION}|{encoder.sha1}|{[s.tag() for s in encoder.specs]}".encode())
    for r in records:
        h.update(r.key.encode())
        h.update(np.asarray(r.face_points(), np.float32).round(2).tobytes())
    feat_path = cache_dir / "np_faces" / f"fgnet-{h.hexdigest()[:16]}.npz"
    info = {"encoder": encoder.describe(), "root": str(root), "skipped_no_landmarks": no_landmarks,
            "feature_cache": str(feat_path)}
    if use_cache and feat_path.is_file():
        with np.load(feat_path, allow_pickle=False) as z:
            info["skipped_unreadable"] = [str(k) for k in z["unreadable"]]
            log.debug("feature cache hit %s", feat_path)
            return FaceFeatures(z["features"], z["ages"], z["subjects"], z["encoder_age"], z["keys"], info)

    views = [[] for _ in encoder.specs]
    keep, unreadable = [], []
    for r in records:
        try:
            crops = crop_views(load_image(r.path), encoder.specs, r.face_points())
        except (ImageError, AgekitError) as exc:
            unreadable.append(r.key)
            log.warning("skipping %s: %s", r.key, exc)
            continue
        for v, crop in zip(views, crops):
            v.append(crop)
        keep.append(r)
    if not keep:
        raise AgekitError(f"{root}: none of the FG-NET images could be read")
    feats, enc_age = encoder.encode([np.stack(v) for v in views])
    out = FaceFeatures(feats, np.array([r.age for r in keep], np.float32), np.array([str(r.subject) for r in keep]),
                       enc_age, np.array([r.key for r in keep]), info)
    info["skipped_unreadable"] = unreadable
    if use_cache:
        with atomic_path(feat_path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, features=out.features, ages=out.ages, subjects=out.subjects,
                         encoder_age=out.encoder_age, keys=out.keys, unreadable=np.array(unreadable, dtype=str))
    return out
