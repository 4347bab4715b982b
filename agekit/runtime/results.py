"""FaceResult: what AgeEstimator returns for each face."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _r(value, digits=2):
    return None if value is None else round(float(value), digits)


@dataclass
class FaceResult:
    """One face's prediction.

    age: point estimate (the mean of the predictive distribution), years.
    std: the predictive distribution's standard deviation, years.
    interval: (lo, hi) calibrated `level` interval (split-conformal when the model is calibrated, else the
        central interval of the model's own distribution), clipped to the model's age range.
    gender: "female" / "male" (None without a gender head); gender_prob: probability of that gender;
        female_prob: P(female).
    box: (x1, y1, x2, y2) in pixels of the input image (EXIF-rotated); landmarks: (5, 2) or None when
        unknown (user boxes, --no-detect); score: detector confidence (None when no detector ran).
    rotation: degrees (0, 90, -90, 180) the image was turned for the detector to find the faces.
    flags: "small", "blurry" (see agekit.runtime.quality); the prediction is less reliable.
    crop_from: "landmarks", "box" or "image" (how the crop was placed).
    probs: (K,) distribution over the integer ages age_min..age_max (not printed);
    embedding: (F,) backbone features (not printed).
    personalised: None when no context was given; else whether the context photos personalised age, std and
        interval (agekit.runtime.personal), base_age then holding the model's own estimate, and notes saying what
        happened to the context (photos skipped, contradictory ages, too few photos).
    """

    age: float
    std: float
    interval: tuple[float, float]
    level: float
    gender: str | None
    gender_prob: float | None
    female_prob: float | None
    box: tuple[float, float, float, float]
    landmarks: np.ndarray | None = field(default=None, repr=False)
    score: float | None = None
    rotation: int = 0
    flags: list[str] = field(default_factory=list)
    crop_from: str = "landmarks"
    probs: np.ndarray | None = field(default=None, repr=False)
    embedding: np.ndarray | None = field(default=None, repr=False)
    personalised: bool | None = None
    base_age: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def half_width(self) -> float:
        return (self.interval[1] - self.interval[0]) / 2.0

    def to_dict(self, probs: bool = False, embedding: bool = False) -> dict:
        out = {
            "age": _r(self.age), "std": _r(self.std), "interval": [_r(self.interval[0]), _r(self.interval[1])],
            "level": self.level, "gender": self.gender, "gender_prob": _r(self.gender_prob, 4),
            "female_prob": _r(self.female_prob, 4), "box": [_r(v) for v in self.box],
            "landmarks": None if self.landmarks is None else np.round(self.landmarks, 2).tolist(),
            "score": _r(self.score, 4), "rotation": int(self.rotation), "flags": list(self.flags),
            "crop_from": self.crop_from,
        }
        if self.personalised is not None:
            out.update(personalised=self.personalised, base_age=_r(self.base_age), notes=list(self.notes))
        if probs and self.probs is not None:
            out["probs"] = np.round(self.probs, 6).tolist()
        if embedding and self.embedding is not None:
            out["embedding"] = np.round(self.embedding, 6).tolist()
        return out
