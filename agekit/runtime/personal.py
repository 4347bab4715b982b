"""Personalised ages from a face NP bank and context photos of one person with known ages (numpy only).

`Personalizer` works on encoder features: the query photos' and the context photos' embeddings, the context's
ages (and, for the estimator, the model's own age estimates of both). `load_personalizer` finds the bank for
an ONNX model (MODEL.onnx -> MODEL.np.npz beside it, e.g. agekit-default.np.npz beside agekit-default.onnx,
unless given explicitly) and checks it matches; `personalise` applies it to an estimator's FaceResults.
The photos themselves (`AgeEstimator.predict(..., context=[(image_or_path, age), ...])`,
`agekit predict --context-dir DIR`) are handled in `agekit.runtime.context`.

The estimate personalised is the model's own (`FaceNP.predict_from_encoder`): the bank is fitted on FG-NET
only, and its own non-personal estimate does not transfer to other photos (on UTKFace photos it is more
than twice as wrong as the model's); the bank supplies the prior of a person's correction.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from agekit.data.records import AGE_VALID_RANGE
from agekit.errors import AgekitError
from agekit.runtime.face_np import VARIANTS, FaceNP, bayes_linear_predict, interval_z, to_target

if TYPE_CHECKING:  # context imports this module
    from agekit.runtime.context import Context


class ContextWarning(UserWarning):
    """Context ages that contradict each other or the photos (the fit is made robust, see the notes)."""


@dataclass
class Personalized:
    """What `Personalizer.predict` returns. ages/std/lo/hi: (Q,) years (lo/hi: 90% interval).
    personalised: whether the context was used; notes: what happened to the context, for the user."""

    ages: np.ndarray
    std: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    personalised: bool
    variant: str
    n_context: int
    notes: list = field(default_factory=list)


def parse_age(value, name: str) -> float:
    """A context age as a float in AGE_VALID_RANGE (0..120), or AgekitError naming the photo/field."""
    try:
        age = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise AgekitError(f"{name}: age {value!r} is not a number") from None
    if not np.isfinite(age):
        raise AgekitError(f"{name}: age {value!r} is not a finite number")
    lo, hi = AGE_VALID_RANGE
    if not lo <= age <= hi:
        raise AgekitError(f"{name}: age {age:g} is outside {lo:g}-{hi:g} years")
    return age


class Personalizer:
    """Personalised ages from encoder features (numpy only).

    >>> p = Personalizer("face_np.npz")
    >>> out = p.predict(query_features, context_features, context_ages, context_names)
    >>> out.ages, out.std, out.personalised, out.notes

    Two anchors. Without `base_ages`, the bank's own non-personal estimate (the mixture over the bank's
    subjects) is personalised with the default variant. With `base_ages` (the encoder's own age estimates
    of the query photos) and `context_base_ages` (of the context photos), those estimates are personalised
    instead (`FaceNP.predict_from_encoder`): what `agekit predict --context-dir` does, because the bank is
    fitted on FG-NET only and its own estimates do not transfer to other photos.

    Context rows that are None (no face found in that photo) are skipped with a note. Ages must be numbers
    in 0..120 (else AgekitError naming the photo). The same photo given twice with different ages, or ages
    far out of line with the photos and with each other (e.g. labels that contradict the faces' order),
    raise a ContextWarning and are merged / down-weighted (a robust fit). With fewer than `min_context`
    usable photos the estimate is the non-personal one, and a note says so.
    """

    def __init__(self, model, *, min_context: int | None = None, variant: str | None = None):
        self.model = model if isinstance(model, FaceNP) else FaceNP.load(model)
        self.min_context = self.model.min_context if min_context is None else int(min_context)
        if self.min_context < 1:
            raise AgekitError(f"min_context must be at least 1, got {self.min_context}")
        self.variant = variant or self.model.variant
        if self.variant not in VARIANTS or self.variant == "mixture":
            raise AgekitError(f"variant must be one of {', '.join(VARIANTS[1:])}, got {self.variant!r}")

    @property
    def n_features(self) -> int:
        return self.model.n_features

    def _features(self, X, what: str) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise AgekitError(f"{what}: features must have {self.n_features} values per photo (this NP's "
                              f"encoder), got shape {X.shape}")
        if not np.isfinite(X).all():
            raise AgekitError(f"{what}: features contain NaN or infinite values")
        return X

    def clean_context(self, context_features, context_ages, context_names=None, context_base_ages=None):
        """Validate and tidy a context. Returns (features (n, F), ages (n,), base ages (n,) or None, names,
        notes)."""
        notes: list[str] = []
        if context_features is None:
            context_features = []
            context_ages = [] if context_ages is None else context_ages
        if context_ages is None:
            raise AgekitError("context features given without ages")
        rows = list(context_features)
        ages_in = list(np.atleast_1d(np.asarray(context_ages, dtype=object))) \
            if not isinstance(context_ages, (list, tuple)) else list(context_ages)
        if len(rows) != len(ages_in):
            raise AgekitError(f"context: {len(rows)} photos but {len(ages_in)} ages")
        names = [f"context photo #{i + 1}" for i in range(len(rows))] if context_names is None \
            else [str(n) for n in context_names]
        if len(names) != len(rows):
            raise AgekitError(f"context: {len(rows)} photos but {len(names)} names")
        bases_in = None if context_base_ages is None else list(context_base_ages)
        if bases_in is not None and len(bases_in) != len(rows):
            raise AgekitError(f"context: {len(rows)} photos but {len(bases_in)} base ages")
        feats, ages, bases, kept = [], [], [], []
        for i, (feat, age, name) in enumerate(zip(rows, ages_in, names)):
            age = parse_age(age, name)  # bad ages are errors even for photos skipped below
            if feat is None:
                notes.append(f"{name}: no face found; skipped")
                continue
            feats.append(self._features(feat, name)[0])
            ages.append(age)
            kept.append(name)
            if bases_in is not None:
                bases.append(float(bases_in[i]))
        if not feats:
            return np.zeros((0, self.n_features)), np.zeros(0), None if bases_in is None else np.zeros(0), [], notes
        X, a = np.stack(feats), np.array(ages)
        b = None if bases_in is None else np.array(bases)
        X, a, b, kept, dup_notes = self._merge_duplicates(X, a, b, kept)
        notes += dup_notes
        return X, a, b, kept, notes

    @staticmethod
    def _merge_duplicates(X, ages, bases, names, tol: float = 1e-4):
        """The same photo more than once (identical features): one row with the median age; a warning when
        the ages differ by more than half a year."""
        notes, groups, used = [], [], np.zeros(len(ages), bool)
        norms = np.linalg.norm(X, axis=1)
        for i in range(len(ages)):
            if used[i]:
                continue
            dist = np.linalg.norm(X - X[i], axis=1) / np.maximum(norms + norms[i], 1e-12)
            members = np.nonzero((dist <= tol) & ~used)[0]
            used[members] = True
            groups.append(members)
        if len(groups) == len(ages):
            return X, ages, bases, names, notes
        keep_X, keep_a, keep_b, keep_n = [], [], [], []
        for members in groups:
            age = float(np.median(ages[members]))
            if len(members) > 1:
                listed = ", ".join(f"{names[m]} ({ages[m]:g})" for m in members)
                if np.ptp(ages[members]) > 0.5:
                    msg = (f"contradictory ages: {listed} are the same photo; using the median age {age:g}")
                    warnings.warn(msg, ContextWarning, stacklevel=4)
                else:
                    msg = f"the same photo given {len(members)} times ({listed}); used once"
                notes.append(msg)
            keep_X.append(X[members[0]])
            keep_a.append(age)
            keep_n.append(names[members[0]])
            if bases is not None:
                keep_b.append(float(np.mean(bases[members])))
        return np.stack(keep_X), np.array(keep_a), None if bases is None else np.array(keep_b), keep_n, notes

    def _robust_weights(self, Xc, ages, names, bases=None):
        """Down-weight context ages far out of line with the photos and with each other (Huber weights on the
        residuals from the non-personal estimate, around their median, in units of the within-person noise)."""
        notes = []
        n = len(ages)
        weights = np.ones(n)
        if n < 2:
            return weights, notes
        m = self.model
        if bases is None:
            base, prior = m.predict_target(Xc, variant="mixture")["mean"], m.resid_prior
        else:
            base, prior = to_target(bases, m.target), m.enc_prior
        r = to_target(ages, m.target) - base
        # the person's common offset cancels in differences; what is left per photo: slope part + noise
        _, var = bayes_linear_predict(None, [], m.standardize(Xc), prior)
        limit = 3.0 * np.sqrt(np.maximum(var - prior[0] ** 2, 1e-12))
        if n == 2:
            if abs(r[0] - r[1]) > np.sqrt(2) * float(limit.mean()):
                weights[:] = 0.5
                msg = (f"contradictory ages: {names[0]} ({ages[0]:g}) and {names[1]} ({ages[1]:g}) disagree "
                       f"with the photos' apparent age order/gap; both kept at half weight")
                warnings.warn(msg, ContextWarning, stacklevel=4)
                notes.append(msg)
            return weights, notes
        dev = np.abs(r - np.median(r))
        out = dev > limit
        if out.any():
            weights[out] = limit[out] / dev[out]
            listed = ", ".join(f"{names[i]} ({ages[i]:g})" for i in np.nonzero(out)[0])
            msg = (f"ages inconsistent with the other context photos: {listed}; down-weighted (robust fit)")
            warnings.warn(msg, ContextWarning, stacklevel=4)
            notes.append(msg)
        return weights, notes

    def predict(self, features, context_features=None, context_ages=None, context_names=None, *,
                level: float = 0.9, base_ages=None, context_base_ages=None) -> Personalized:
        """Personalised ages of the query photos' features (Q, F) given context photos' features (n, F; a row
        may be None: no face), their ages and optional names (for messages). lo/hi: the `level` interval.
        base_ages / context_base_ages: the encoder's own estimates, to personalise those (see the class)."""
        interval_z(level)
        X = self._features(features, "query photos")
        anchored = base_ages is not None
        if anchored:
            base_ages = np.asarray(base_ages, dtype=np.float64).reshape(-1)
            if base_ages.shape != (len(X),) or not np.isfinite(base_ages).all():
                raise AgekitError(f"base_ages must be {len(X)} finite ages, one per query photo")
            if context_features is not None and context_base_ages is None:
                raise AgekitError("base_ages given without context_base_ages (the encoder's ages of the context)")
        Xc, ages, bases, names, notes = self.clean_context(context_features, context_ages, context_names,
                                                           context_base_ages if anchored else None)
        n = len(ages)
        m = self.model
        if n < self.min_context:
            if n or context_features is not None:
                notes.append(f"{n} usable context photo(s), at least {self.min_context} needed: "
                             "non-personal estimate")
            out = m.predict_from_encoder(X, base_ages, level=level) if anchored \
                else m.predict(X, variant="mixture", level=level)
            return Personalized(out["age"], out["std"], out["lo"], out["hi"], False,
                                "encoder" if anchored else "mixture", 0, notes)
        weights, robust_notes = self._robust_weights(Xc, ages, names, bases)
        notes += robust_notes
        if anchored:
            out = m.predict_from_encoder(X, base_ages, Xc, ages, bases, context_weights=weights, level=level)
            variant = "encoder+residual"
        else:
            out = m.predict(X, Xc, ages, variant=self.variant, context_weights=weights, level=level)
            variant = self.variant
        notes.append(f"personalised with {n} context photo(s) ({variant})")
        return Personalized(out["age"], out["std"], out["lo"], out["hi"], True, variant, n, notes)


def default_bank_path(model_path) -> Path:
    """MODEL.onnx -> MODEL.np.npz beside it."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".np.npz")


def load_personalizer(bank, model) -> Personalizer:
    """The Personalizer of bank (a path, a Personalizer, or None: beside the estimator's model), checked against
    the model (same feature size; a different encoder file is a warning)."""
    if isinstance(bank, Personalizer):
        p = bank
    else:
        path = Path(bank) if bank is not None else default_bank_path(model.path)
        if not path.is_file():
            raise AgekitError(f"personalisation needs the face NP bank fitted on this model's features, not found "
                              f"at {path}; make it with `agekit np-bank --checkpoint {model.path} --out {path}` "
                              "(or pass personalizer=PATH)")
        p = Personalizer(path)
    size = model.meta.get("embedding_size")
    if size is not None and int(size) != p.n_features:
        raise AgekitError(f"the face NP bank expects {p.n_features} features per face but the model "
                          f"{model.path} gives {size}: the bank was fitted for another model")
    enc = p.model.meta.get("encoder", {})
    if enc.get("backbone") and model.meta.get("backbone") and enc["backbone"] != model.meta["backbone"]:
        raise AgekitError(f"the face NP bank was fitted on {enc['backbone']} features, the model is "
                          f"{model.meta['backbone']}")
    return p


def personalise(faces, context: Context, personalizer: Personalizer, level: float):
    """FaceResults personalised with the context: the model's own estimate (kept in base_age) corrected by
    the context's residuals from the model's own estimates of the context faces (`Personalizer` with
    base_ages). Age, std and interval are replaced; with too few usable context photos the faces keep the
    model's estimate and interval (personalised False). Returns (faces, notes)."""
    if not faces:
        return faces, list(context.notes)
    if any(f.embedding is None for f in faces):
        raise AgekitError("the model gives no 'embedding' output; re-export it with `agekit export` to personalise")
    X = np.stack([np.asarray(f.embedding, dtype=np.float64) for f in faces])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ContextWarning)
        out = personalizer.predict(X, context.features, context.ages, context.names, level=level,
                                   base_ages=[f.age for f in faces], context_base_ages=context.base_ages)
    for w in caught:
        if not issubclass(w.category, ContextWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    notes = list(context.notes) + list(out.notes)
    result = []
    for i, f in enumerate(faces):
        if out.personalised:
            f = dataclasses.replace(f, age=float(out.ages[i]), std=float(out.std[i]),
                                    interval=(float(out.lo[i]), float(out.hi[i])), base_age=f.age,
                                    personalised=True)
        else:
            f = dataclasses.replace(f, base_age=f.age, personalised=False)
        result.append(f)
    return result, notes
