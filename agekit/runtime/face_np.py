"""The multi-task Neural Process for personalised face-age estimation: the model, its inference and its .npz
file (the bank `agekit np-bank` writes and `agekit predict --context-dir` loads). Numpy only; the fitting is
in `agekit.personalise.fit`, its use with a person's labelled photos in `agekit.runtime.personal`.

Notation (docs/neural_processes.md, "The face NP"): x_hat = encoder features of one photo (the backbone's
pooled features, the ONNX model's "embedding"); z = x_hat standardised with the training mean and std;
t = the age in target units (log(1 + age) by default, so a personal offset is a relative one: "looks 10%
older").

- Global model g(z) = z . g_w + g_b: ridge regression on all training photos (the non-personal estimate).
- FC layer x_tilde = sigmoid(W z + c) in (0, 1)^H; subject embedding e_p = max over p's photos of x_tilde.
- Similarity of photo j to subject p: s_p = softmax_p(beta * e_p . x_tilde_j) over the subjects in the bank
  (in training: over p != the photo's own subject). beta is a learned inverse temperature.
- Subject p's own age function F_p(z) = g(z) + b_p + z . w_p: the global model plus a correction fitted to
  p's photos in closed form, the posterior mean of a Bayesian linear model r = b + z . w + noise with
  b ~ N(0, sigma_b^2), w ~ N(0, sigma_w^2 I), noise ~ N(0, sigma^2) (= ridge regression toward g with
  penalties sigma^2/sigma_b^2 on the offset and sigma^2/sigma_w^2 on the slopes). With one or two photos the
  correction is a shrunken offset; with none it is zero, so every F_p stays a sane age function.
- Estimate y_hat = sum_p s_p F_p(z) = g(z) + sum_p s_p (b_p + z . w_p).

Context (k labelled photos of the person): see `VARIANTS`. Predictive variance (target units):
a * sum_p s_p (F_p - y_hat)^2 (the spread of the mixture) + the predictive variance of a Bayesian linear
model of the person's residual from the mixture (its prior variance without context, its posterior with).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from statistics import NormalDist

import numpy as np

from agekit.errors import AgekitError
from agekit.io import atomic_path

FORMAT = "agekit-face-np-v1"
TARGETS = ("log", "linear")
# How a context of labelled photos of the person is used:
#   mixture        ignore it (the non-personal NP estimate)
#   join           fit the person's own F on the context; it joins the mixture with its own similarity
#                  beta * e_new . x_tilde, e_new = max over the context photos of x_tilde
#   residual       the no-context mixture plus a Bayesian linear correction fitted to the context's
#                  residuals from the mixture
#   join+residual  both
VARIANTS = ("mixture", "join", "residual", "join+residual")


# ----------------------------------------------------------------------------------------------- helpers

def to_target(ages, kind: str) -> np.ndarray:
    ages = np.asarray(ages, dtype=np.float64)
    return np.log1p(np.maximum(ages, 0.0)) if kind == "log" else ages


def from_target(t, kind: str) -> np.ndarray:
    t = np.asarray(t, dtype=np.float64)
    return np.expm1(t) if kind == "log" else t


def target_slope(t, kind: str) -> np.ndarray:
    """d age / d t at t (converts a std in target units to years, to first order)."""
    t = np.asarray(t, dtype=np.float64)
    return np.exp(t) if kind == "log" else np.ones_like(t)


def interval_z(level: float) -> float:
    """z of the central `level` interval of a standard normal (0.9 -> 1.645)."""

    if not 0.0 < level < 1.0:
        raise AgekitError(f"interval level must be between 0 and 1, got {level}")
    return float(NormalDist().inv_cdf(0.5 + level / 2.0))


def sigmoid(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def softmax(scores, axis=-1) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    m = np.max(scores, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(scores - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def _bayes_kernel(Za, Zb, prior) -> np.ndarray:
    sigma_b, sigma_w, _ = prior
    return sigma_b ** 2 + sigma_w ** 2 * (Za @ Zb.T)


def bayes_linear_fit(Z, r, prior, weights=None) -> tuple[float, np.ndarray]:
    """Posterior mean (b, w) of r = b + Z w + noise, b ~ N(0, sigma_b^2), w ~ N(0, sigma_w^2 I),
    noise_i ~ N(0, sigma^2 / weights_i); prior = (sigma_b, sigma_w, sigma). The same as ridge regression
    argmin sum_i weights_i (r_i - b - z_i w)^2 + (sigma/sigma_b)^2 b^2 + (sigma/sigma_w)^2 ||w||^2,
    computed in the dual (n x n) form since a person has far fewer photos than features."""
    Z = np.asarray(Z, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    sigma_b, sigma_w, sigma = prior
    if len(r) == 0:
        return 0.0, np.zeros(Z.shape[1])
    w8 = np.ones(len(r)) if weights is None else np.asarray(weights, dtype=np.float64)
    K = _bayes_kernel(Z, Z, prior) + np.diag(sigma ** 2 / np.maximum(w8, 1e-12))
    a = np.linalg.solve(K, r)
    return float(sigma_b ** 2 * a.sum()), sigma_w ** 2 * (Z.T @ a)


def bayes_linear_predict(Z, r, Zq, prior, weights=None) -> tuple[np.ndarray, np.ndarray]:
    """Predictive mean and variance (including the noise sigma^2) of the model of `bayes_linear_fit` at
    Zq, given observations (Z, r). With no observations: mean 0 and the prior variance."""
    Zq = np.asarray(Zq, dtype=np.float64)
    sigma = prior[2]
    prior_var = prior[0] ** 2 + prior[1] ** 2 * np.einsum("ij,ij->i", Zq, Zq) + sigma ** 2
    if Z is None or len(r) == 0:
        return np.zeros(len(Zq)), prior_var
    Z = np.asarray(Z, dtype=np.float64)
    w8 = np.ones(len(r)) if weights is None else np.asarray(weights, dtype=np.float64)
    K = _bayes_kernel(Z, Z, prior) + np.diag(sigma ** 2 / np.maximum(w8, 1e-12))
    Kq = _bayes_kernel(Zq, Z, prior)
    L = np.linalg.cholesky(K)
    A = np.linalg.solve(L, Kq.T)  # (n, Q)
    mean = Kq @ np.linalg.solve(K, np.asarray(r, dtype=np.float64))
    var = np.maximum(prior_var - np.einsum("ij,ij->j", A, A), sigma ** 2)
    return mean, var


# ----------------------------------------------------------------------------------------------- model

@dataclass
class FaceNP:
    """A fitted face NP (all numpy). Build it with `agekit.personalise.fit.fit_face_np`; save/load with
    `save` / `FaceNP.load` (a small .npz)."""

    target: str
    age_min: float
    age_max: float
    feat_mean: np.ndarray  # (F,)
    feat_scale: np.ndarray  # (F,)
    g_w: np.ndarray  # (F,) global ridge model on z
    g_b: float
    W: np.ndarray  # (H, F)
    c: np.ndarray  # (H,)
    beta: float
    join_bias: np.ndarray  # (2,) a, b: a joined person's score gets + a + b log(n_context)
    subjects: np.ndarray  # (P,) str: the training subjects (the bank)
    emb: np.ndarray  # (P, H) e_p
    corr_b: np.ndarray  # (P,) b_p
    corr_w: np.ndarray  # (P, F) w_p
    prior: np.ndarray  # (3,) sigma_b, sigma_w, sigma of a subject's correction from g (target units)
    resid_prior: np.ndarray  # (3,) the same for a person's residual from the no-context mixture
    enc_prior: np.ndarray  # (3,) the same for a person's residual from the encoder's own estimate (nan: unknown)
    mix_scale: float  # a: weight of the mixture's spread in the predictive variance
    variant: str = "residual"  # default use of a context
    min_context: int = 1  # fewer usable context photos -> the non-personal estimate
    meta: dict = field(default_factory=dict)

    # -- pieces
    @property
    def n_features(self) -> int:
        return int(self.feat_mean.shape[0])

    def standardize(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise AgekitError(f"features must have shape (N, {self.n_features}) for this NP "
                              f"(encoder {self.meta.get('encoder', {}).get('backbone', '?')}), got {X.shape}")
        return (X - self.feat_mean) / self.feat_scale

    def x_tilde(self, Z) -> np.ndarray:
        return sigmoid(Z @ self.W.T + self.c)

    def g(self, Z) -> np.ndarray:
        return Z @ self.g_w + self.g_b

    def corrections(self, Z) -> np.ndarray:
        """(N, P): b_p + z . w_p for every bank subject p."""
        return self.corr_b[None, :] + Z @ self.corr_w.T

    def _mix(self, Z, xt, exclude=None, extra=None):
        """Mixture over the bank (+ an optional joined subject (score (N,), correction (N,))).
        Returns (mean_t, spread variance, weights (N, P[+1]))."""
        scores = self.beta * xt @ self.emb.T
        corr = self.corrections(Z)
        if exclude is not None:
            exclude = np.asarray(exclude)
            rows = np.nonzero(exclude >= 0)[0]
            scores[rows, exclude[rows]] = -np.inf
        if extra is not None:
            scores = np.concatenate([scores, extra[0][:, None]], axis=1)
            corr = np.concatenate([corr, extra[1][:, None]], axis=1)
        s = softmax(scores, axis=1)
        mc = np.sum(s * corr, axis=1)
        spread = np.sum(s * (corr - mc[:, None]) ** 2, axis=1)
        return self.g(Z) + mc, spread, s

    # -- prediction
    def predict_target(self, X, context_X=None, context_t=None, *, variant: str | None = None,
                       context_weights=None, exclude=None) -> dict:
        """Predict in target units. Returns {'mean', 'var', 'base' (the non-personal NP mean), 'weights'}.
        exclude: (N,) bank-subject index per row to leave out of its mixture (training-set evaluation)."""
        variant = variant or self.variant
        if variant not in VARIANTS:
            raise AgekitError(f"unknown NP variant {variant!r}; choose from {', '.join(VARIANTS)}")
        Z = self.standardize(X)
        xt = self.x_tilde(Z)
        base, spread, s = self._mix(Z, xt, exclude)
        has_context = context_X is not None and len(context_t) > 0
        if not has_context or variant == "mixture":
            _, res_var = bayes_linear_predict(None, [], Z, self.resid_prior)
            return {"mean": base, "var": self.mix_scale * spread + res_var, "base": base, "weights": s}
        Zc = self.standardize(context_X)
        tc = np.asarray(context_t, dtype=np.float64)
        xc = self.x_tilde(Zc)
        mean, mix_spread = base, spread
        ctx_base = self._mix(Zc, xc)[0]
        if "join" in variant:
            b, w = bayes_linear_fit(Zc, tc - self.g(Zc), self.prior, context_weights)
            e_new = xc.max(axis=0)
            bonus = self.join_bias[0] + self.join_bias[1] * np.log(len(tc))
            extra = (self.beta * xt @ e_new + bonus, b + Z @ w)
            mean, mix_spread, s = self._mix(Z, xt, None, extra)
            ctx_base = self._mix(Zc, xc, None, (self.beta * xc @ e_new + bonus, b + Zc @ w))[0]
        if "residual" in variant:
            corr, res_var = bayes_linear_predict(Zc, tc - ctx_base, Z, self.resid_prior, context_weights)
            mean = mean + corr
        else:
            _, res_var = bayes_linear_predict(Zc, tc - ctx_base, Z, self.resid_prior, context_weights)
        return {"mean": mean, "var": self.mix_scale * mix_spread + res_var, "base": base, "weights": s}

    def to_ages(self, mean_t, var_t, level: float = 0.9) -> dict:
        """Target-unit mean/variance -> ages: 'age' (the median), 'std' (first order), 'lo'/'hi' (the central
        `level` interval, Gaussian in target units)."""
        z = interval_z(level)
        sd = np.sqrt(np.maximum(var_t, 0.0))
        clip = lambda a: np.clip(a, self.age_min, self.age_max)  # noqa: E731
        return {"age": clip(from_target(mean_t, self.target)),
                "std": sd * target_slope(mean_t, self.target),
                "lo": clip(from_target(mean_t - z * sd, self.target)),
                "hi": clip(from_target(mean_t + z * sd, self.target))}

    def predict(self, X, context_X=None, context_ages=None, *, variant: str | None = None,
                context_weights=None, exclude=None, level: float = 0.9) -> dict:
        """Ages for features X (N, F), optionally personalised by context photos (features, ages).
        Returns {'age', 'std', 'lo', 'hi'} (years; lo/hi: the `level` interval) plus 'mean_t', 'std_t'."""
        ct = None if context_ages is None else to_target(context_ages, self.target)
        out = self.predict_target(X, context_X, ct, variant=variant, context_weights=context_weights,
                                  exclude=exclude)
        ages = self.to_ages(out["mean"], out["var"], level)
        ages.update(mean_t=out["mean"], std_t=np.sqrt(out["var"]))
        return ages

    def predict_from_encoder(self, X, base_ages, context_X=None, context_ages=None, context_base_ages=None, *,
                             context_weights=None, level: float = 0.9) -> dict:
        """Personalise the encoder's own estimates instead of the bank's: t(base) + a Bayesian linear correction
        fitted to the context's residuals from the encoder's estimates (prior `enc_prior`, fitted on the bank
        subjects). base_ages: the encoder's ages for X; context_base_ages: for context_X. No context: the
        encoder's estimates with the prior variance. Returns what `predict` returns."""
        if not np.isfinite(self.enc_prior).all():
            raise AgekitError("this face NP file has no prior for the encoder's own estimates; rebuild it with "
                              "`agekit np-bank`")
        Z = self.standardize(X)
        base = to_target(np.asarray(base_ages, dtype=np.float64), self.target)
        if context_X is None or context_ages is None or len(context_ages) == 0:
            corr, var = bayes_linear_predict(None, [], Z, self.enc_prior)
        else:
            Zc = self.standardize(context_X)
            r = to_target(context_ages, self.target) - to_target(np.asarray(context_base_ages, np.float64),
                                                                 self.target)
            corr, var = bayes_linear_predict(Zc, r, Z, self.enc_prior, context_weights)
        out = self.to_ages(base + corr, var, level)
        out.update(mean_t=base + corr, std_t=np.sqrt(var))
        return out

    def predict_global(self, X) -> np.ndarray:
        """The global (non-personal) ridge model's ages."""
        return np.clip(from_target(self.g(self.standardize(X)), self.target), self.age_min, self.age_max)

    # -- files
    def save(self, path) -> Path:

        path = Path(path)
        arrays = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "meta":
                arrays[f.name] = np.array(json.dumps(value, default=str))
            elif isinstance(value, np.ndarray):
                arrays[f.name] = value
            else:
                arrays[f.name] = np.array(value)
        arrays["format"] = np.array(FORMAT)
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
        return path

    @classmethod
    def load(cls, path) -> "FaceNP":
        path = Path(path)
        if not path.is_file():
            raise AgekitError(f"face NP file not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except Exception as exc:  # zipfile/ValueError/OSError for a bad file
            raise AgekitError(f"{path}: not a readable face NP file ({type(exc).__name__})") from None
        if str(data.get("format", "")) != FORMAT:
            raise AgekitError(f"{path}: not an agekit face NP file (format {FORMAT} expected)")
        kwargs = {}
        for f in fields(cls):
            if f.name not in data:
                raise AgekitError(f"{path}: face NP file lacks '{f.name}'")
            value = data[f.name]
            if f.name == "meta":
                kwargs[f.name] = json.loads(str(value))
            elif f.name in ("target", "variant"):
                kwargs[f.name] = str(value)
            elif f.name in ("age_min", "age_max", "g_b", "beta", "mix_scale"):
                kwargs[f.name] = float(value)
            elif f.name == "min_context":
                kwargs[f.name] = int(value)
            elif f.name == "subjects":
                kwargs[f.name] = value.astype(str)
            else:
                kwargs[f.name] = value.astype(np.float64)
        model = cls(**kwargs)
        model.check()
        return model

    def check(self) -> None:
        F, H, P = self.n_features, self.W.shape[0], len(self.subjects)
        shapes = {"feat_scale": (F,), "g_w": (F,), "W": (H, F), "c": (H,), "emb": (P, H), "corr_b": (P,),
                  "corr_w": (P, F), "prior": (3,), "resid_prior": (3,), "join_bias": (2,), "enc_prior": (3,)}
        for name, shape in shapes.items():
            if getattr(self, name).shape != shape:
                raise AgekitError(f"face NP: {name} has shape {getattr(self, name).shape}, expected {shape}")
        if self.target not in TARGETS:
            raise AgekitError(f"face NP: unknown target {self.target!r}")
        if self.variant not in VARIANTS:
            raise AgekitError(f"face NP: unknown variant {self.variant!r}")
