"""One age (and gender) per tracked person: fusing the per-frame estimates of a track (pure numpy).

Each scored frame t of a track gives the model's predictive mean m_t and std s_t (FaceResult.age, .std) and
P(female) p_t. Frames of one person are strongly correlated: the same face, the same lighting, often the
same pose, and above all the same person-level bias of the model (a face that looks older than its age
looks older in every frame). A naive product of the per-frame likelihoods treats n frames as n independent
looks and shrinks the std by sqrt(n): 30 frames of a still face would claim a +-2 year interval where the
model is really no surer than on one photo. The rule here splits each frame's error into a part shared by
all frames of the track (variance `shared`) and frame noise (variance `noise`) that averaging removes:

    error_t = b + e_t,    Var(b) = shared,   Var(e_t) = noise,   s^2 = shared + noise   (one frame)

1. Robust mean. Frames whose mean is further than OUTLIER_K * max(s_t, 1) years from the track's median are
   dropped (a false box, a blink, a half-visible face at the frame's edge); the age is the precision-weighted
   mean of the rest, sum(m_t / s_t^2) / sum(1 / s_t^2).
2. Its uncertainty. s^2 is the harmonic mean of the kept frames' variances (the per-frame predictive variance
   that the model's conformal calibration was fitted on). `noise` is estimated by the spread of the kept
   frames' means (their sample variance around their plain mean, 0 for one frame); the shared part is the
   rest, but never less than SHARED_MIN * s^2. The fused variance is

       var = max(s^2 - noise, SHARED_MIN * s^2) + noise / n

   so one frame gives exactly the per-frame estimate, n identical frames (a still image repeated) give it too
   (repeating a frame adds no information), and frames that disagree with each other - evidence that part of
   each frame's error is frame noise - narrow it, down to at most sqrt(SHARED_MIN) times the per-frame std.
   That is the effective number of independent frames: n_eff = s^2 / var, at most 1 / SHARED_MIN.
3. The interval. mean +- q * max(std, std_floor) with the model's conformal q for the level (the same rule as
   a photo's interval, agekit.runtime.calibration), clipped to the model's ages; an uncalibrated model gets
   the normal interval mean +- z * std.
4. Gender. The mean of the frames' log-odds, log(p_t / (1 - p_t)), turned back into a probability: a robust
   pooled vote that does not grow more confident with every correlated frame.

Measured with benchmarks/video_tracking.py (docs/video.md): on its videos the tracked 90% intervals cover
the true ages as often as the per-frame ones do, where a naive product of likelihoods covers about half.
There the SHARED_MIN floor is never reached (frames of a composed video disagree little), so the benchmark
cannot fit it: 0.5 is a cap, narrowing a track's interval by at most 1/sqrt(2) whatever the frames show,
until videos of real people with known ages can measure more.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from agekit.runtime import calibration as cal

SHARED_MIN = 0.5     # the smallest fraction of a frame's error variance shared by the whole track
OUTLIER_K = 3.0      # frames further than this many stds from the track's median are left out
MAX_LOGIT = 12.0     # |log-odds| of a frame's gender probability, at most (keeps p = 0 or 1 finite)


@dataclass
class Fused:
    """A track's fused estimate: age, std, interval (lo, hi), the frames kept and the effective number of
    independent frames, P(female) (None without a gender head)."""

    age: float
    std: float
    interval: tuple[float, float]
    frames: int
    n_eff: float
    female_prob: float | None

    @property
    def gender(self) -> str | None:
        return None if self.female_prob is None else ("female" if self.female_prob >= 0.5 else "male")

    @property
    def gender_prob(self) -> float | None:
        return None if self.female_prob is None else max(self.female_prob, 1.0 - self.female_prob)


def fuse_ages(means, stds, shared_min: float = SHARED_MIN, outlier_k: float = OUTLIER_K):
    """(age, std, kept mask, n_eff) of per-frame means and stds (rules 1 and 2 of the module docstring)."""
    m = np.asarray(means, dtype=np.float64).reshape(-1)
    s = np.maximum(np.asarray(stds, dtype=np.float64).reshape(-1), 1e-6)
    if len(m) == 0 or len(m) != len(s):
        raise ValueError(f"need as many means as stds, at least one; got {len(m)} and {len(s)}")
    keep = np.abs(m - np.median(m)) <= outlier_k * np.maximum(s, 1.0)
    if not keep.any():  # an even count split in two far-apart halves (the median between them): keep all
        keep[:] = True
    mk, sk = m[keep], s[keep]
    w = 1.0 / sk ** 2
    age = float(np.sum(w * mk) / np.sum(w))
    n = len(mk)
    var1 = n / float(np.sum(w))                       # harmonic mean of the per-frame variances
    noise = float(np.var(mk, ddof=1)) if n > 1 else 0.0
    var = max(var1 - noise, shared_min * var1) + noise / n
    return age, math.sqrt(var), keep, var1 / var


def fuse_gender(female_probs) -> float | None:
    """P(female) from the frames' P(female): the sigmoid of their mean log-odds (None when there are none)."""
    p = np.asarray([v for v in female_probs if v is not None], dtype=np.float64)
    if len(p) == 0:
        return None
    p = np.clip(p, 1e-12, 1 - 1e-12)
    logit = np.clip(np.log(p / (1 - p)), -MAX_LOGIT, MAX_LOGIT)
    return float(1.0 / (1.0 + math.exp(-float(np.mean(logit)))))


def fused_interval(age: float, std: float, level: float, calibration: dict | None, q: float | None,
                   age_min: float, age_max: float) -> tuple[float, float]:
    """The level interval of a fused estimate (rule 3)."""

    if calibration and q is not None:
        if math.isinf(q):
            return float(age_min), float(age_max)
        floor = float(calibration.get("std_floor", cal.STD_FLOOR))
        lo, hi = cal.interval(age, std, q, age_min, age_max, floor)
        return float(lo), float(hi)
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    return float(max(age_min, age - z * std)), float(min(age_max, age + z * std))


class TrackEvidence:
    """The scored frames of one track, fused on demand."""

    def __init__(self):
        self.means: list[float] = []
        self.stds: list[float] = []
        self.female: list[float | None] = []

    def add(self, face) -> None:
        """Add a FaceResult's age, std and P(female)."""
        self.means.append(float(face.age))
        self.stds.append(float(face.std))
        self.female.append(None if face.female_prob is None else float(face.female_prob))

    def __len__(self) -> int:
        return len(self.means)

    def fuse(self, level: float, calibration=None, q=None, age_min: float = 0.0, age_max: float = 100.0,
             shared_min: float = SHARED_MIN) -> Fused | None:
        if not self.means:
            return None
        age, std, keep, n_eff = fuse_ages(self.means, self.stds, shared_min)
        lo, hi = fused_interval(age, std, level, calibration, q, age_min, age_max)
        female = fuse_gender([f for f, k in zip(self.female, keep) if k])
        return Fused(age, std, (lo, hi), int(keep.sum()), n_eff, female)
