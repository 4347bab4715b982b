"""Fitting the face NP of `agekit.runtime.face_np` on encoder features of subjects with several labelled photos
(torch for the episodic training of W, scipy for the prior's hyperparameters).

`fit_face_np(features, ages, subjects)` does, in order:

1. standardise the features (training mean and std) and map ages to target units (log(1 + age) by default);
2. the global ridge model g, its penalty chosen from a grid by subject-grouped cross-validation; its
   out-of-fold predictions g_oof on the training photos (so residuals are honest, as for a new person);
3. the prior of a subject's correction (sigma_b, sigma_w, sigma) by type-II maximum likelihood (the marginal
   likelihood of the residuals t - g_oof of every subject under the Bayesian linear model), then each
   subject's correction (b_p, w_p) = its posterior mean given the subject's residuals;
4. W, c, beta by full-batch Adam on the episodic objective: for every training photo j of subject k,
   (t_j - y_hat_j)^2 with y_hat_j = g_oof(z_j) + sum_{p != k} s_p (b_p + z_j . w_p) (subject k never in its
   own mixture). A fifth of the training subjects stay in the bank but out of the loss, and the step with
   the lowest loss on them is kept (early stopping: on FG-NET the similarity overfits within ~100 steps);
5. the "join" bonus (a, b) (a context's own F enters the mixture with score beta e_ctx . x_tilde + a +
   b log n) by least squares over episodes: k's correction fitted on a random context of 1, 2, 4 or 8 of
   k's photos, the rest of k's photos as targets, W fixed;
6. the residual prior (the same three hyperparameters, for a person's residuals from the no-context mixture)
   and the weight a of the mixture's spread in the predictive variance, by maximum likelihood on the
   training subjects' leave-self-out residuals.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

import numpy as np

from agekit.errors import AgekitError
from agekit.runtime.face_np import VARIANTS, FaceNP, bayes_linear_fit, sigmoid, softmax, to_target

log = logging.getLogger(__name__)


@dataclass
class FitConfig:
    target: str = "log"  # "log": t = log(1 + age); "linear": t = age
    hidden: int = 16  # H, width of x_tilde
    sim_dim: int = 16  # W reads the top sim_dim whitened principal components of z (0: all of z)
    alphas: tuple = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)  # ridge penalties tried for g
    cv_folds: int = 5  # subject-grouped folds for g's penalty and out-of-fold predictions
    steps: int = 300  # Adam steps (full batch) for W
    lr: float = 0.003
    weight_decay: float = 1e-2  # L2 penalty on W
    context_sizes: tuple = (1, 2, 4, 8)
    context_draws: int = 2  # random contexts per subject and size
    val_fraction: float = 0.2  # training subjects held out of the loss to pick the step (early stopping)
    variant: str = "residual"  # the default use of a context at prediction time (agekit.runtime.face_np.VARIANTS)
    min_context: int = 1
    age_min: float = 0.0
    age_max: float = 100.0
    seed: int = 0

    def check(self) -> None:
        if self.target not in ("log", "linear"):
            raise AgekitError(f"target must be 'log' or 'linear', got {self.target!r}")
        if self.variant not in VARIANTS:
            raise AgekitError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if self.hidden < 1 or self.steps < 0 or self.cv_folds < 2:
            raise AgekitError("hidden >= 1, steps >= 0 and cv_folds >= 2 are required")


# ------------------------------------------------------------------------------------------- closed forms

def subject_embeddings(x_tilde, groups, n_groups: int | None = None) -> np.ndarray:
    """e_p = element-wise max of x_tilde over the rows of group p. groups: (N,) ints in [0, n_groups)."""
    x_tilde = np.asarray(x_tilde, dtype=np.float64)
    groups = np.asarray(groups)
    n_groups = int(groups.max()) + 1 if n_groups is None else n_groups
    out = np.full((n_groups, x_tilde.shape[1]), -np.inf)
    np.maximum.at(out, groups, x_tilde)
    if not np.isfinite(out).all():
        raise ValueError("every group needs at least one row")
    return out


def similarity_weights(emb, x_tilde, beta: float, exclude=None) -> np.ndarray:
    """s[j, p] = softmax over p (p != exclude[j]) of beta * emb[p] . x_tilde[j]. exclude: (N,) subject index
    per row, or -1 / None for none. Returns (N, P) weights; an excluded subject gets exactly 0."""
    scores = beta * np.asarray(x_tilde, dtype=np.float64) @ np.asarray(emb, dtype=np.float64).T
    if exclude is not None:
        exclude = np.asarray(exclude)
        rows = np.nonzero(exclude >= 0)[0]
        scores[rows, exclude[rows]] = -np.inf
    return softmax(scores, axis=1)


def ridge_fit(Z, y, alpha: float) -> tuple[np.ndarray, float]:
    """Ridge regression with an unpenalised intercept: argmin ||y - Z w - b||^2 + alpha ||w||^2.
    Returns (w (F,), b)."""
    Z = np.asarray(Z, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    zm, ym = Z.mean(0), y.mean()
    Zc = Z - zm
    n, f = Zc.shape
    if n < f:  # dual form: w = Zc^T (Zc Zc^T + alpha I)^-1 yc
        w = Zc.T @ np.linalg.solve(Zc @ Zc.T + alpha * np.eye(n), y - ym)
    else:
        w = np.linalg.solve(Zc.T @ Zc + alpha * np.eye(f), Zc.T @ (y - ym))
    return w, float(ym - zm @ w)


def group_folds(groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Assign every row to one of k folds so that a group (subject) is never split."""
    uniq = np.unique(groups)
    order = np.random.default_rng(seed).permutation(len(uniq))
    fold_of = {g: i % k for i, g in zip(range(len(uniq)), uniq[order])}
    return np.array([fold_of[g] for g in groups])


def fit_global(Z, t, groups, alphas, k: int, seed: int):
    """Ridge g with the penalty of lowest grouped-CV squared error. Returns (w, b, alpha, out-of-fold
    predictions, {alpha: cv mse})."""
    folds = group_folds(groups, min(k, len(np.unique(groups))), seed)
    scores, oof_by_alpha = {}, {}
    for alpha in alphas:
        oof = np.zeros(len(t))
        for f in np.unique(folds):
            tr = folds != f
            w, b = ridge_fit(Z[tr], t[tr], alpha)
            oof[~tr] = Z[~tr] @ w + b
        scores[float(alpha)] = float(np.mean((t - oof) ** 2))
        oof_by_alpha[float(alpha)] = oof
    best = min(scores, key=scores.get)
    w, b = ridge_fit(Z, t, best)
    return w, b, best, oof_by_alpha[best], scores


def _neg_log_marginal(log_params, grams, residuals, pad):
    """Negative log marginal likelihood summed over groups, batched: grams (G, n, n), residuals (G, n),
    pad (G, n) True on padding (padded rows/columns are an identity block with zero residual: no effect)."""
    sigma_b, sigma_w, sigma = np.exp(log_params)
    real = ~pad
    K = (sigma_b ** 2 + sigma_w ** 2 * grams) * (real[:, :, None] & real[:, None, :])
    diag = np.where(real, sigma ** 2, 1.0)
    K = K + diag[:, :, None] * np.eye(grams.shape[1])
    try:
        L = np.linalg.cholesky(K)
    except np.linalg.LinAlgError:
        return 1e12
    a = np.linalg.solve(L, residuals[..., None])[..., 0]
    return float(0.5 * np.sum(a * a) + np.log(np.diagonal(L, axis1=1, axis2=2)).sum()
                 + 0.5 * real.sum() * np.log(2 * np.pi))


def fit_prior(Z, r, groups) -> np.ndarray:
    """(sigma_b, sigma_w, sigma) of r = b_p + z . w_p + noise by type-II maximum likelihood over groups."""
    from scipy.optimize import minimize

    uniq = np.unique(groups)
    n_max = max(int(np.sum(groups == g)) for g in uniq)
    grams = np.zeros((len(uniq), n_max, n_max))
    residuals = np.zeros((len(uniq), n_max))
    pad = np.ones((len(uniq), n_max), bool)
    means = []
    for i, g in enumerate(uniq):
        m = np.nonzero(groups == g)[0]
        grams[i, :len(m), :len(m)] = Z[m] @ Z[m].T
        residuals[i, :len(m)] = r[m]
        pad[i, :len(m)] = False
        means.append(r[m].mean())
    sd = float(np.std(r)) + 1e-6
    x0 = np.log([max(float(np.std(means)), 0.1 * sd), 0.1 * sd / np.sqrt(Z.shape[1]), sd])
    bounds = [(np.log(1e-4 * sd), np.log(10 * sd)), (np.log(1e-6 * sd), np.log(10 * sd)),
              (np.log(1e-3 * sd), np.log(10 * sd))]
    res = minimize(_neg_log_marginal, x0, args=(grams, residuals, pad), method="L-BFGS-B", bounds=bounds)
    return np.exp(res.x)


def fit_mix_scale(spread, base_var, resid) -> float:
    """a >= 0 maximising sum log N(resid; 0, a * spread + base_var)."""
    from scipy.optimize import minimize_scalar

    def nll(a):
        v = a * spread + base_var
        return float(np.sum(np.log(v) + resid ** 2 / v))

    res = minimize_scalar(nll, bounds=(0.0, 50.0), method="bounded")
    return float(res.x)


# ------------------------------------------------------------------------------------------- episodes

def make_context_episodes(subj_idx, Z, r, prior, sizes, draws, rng):
    """Random contexts of each size (subjects with at least size+1 photos) and the join correction each one
    gives at the subject's other photos. Returns dict of arrays (see `fit_face_np`)."""
    ctx_rows, tgt_rows, tgt_ep, tgt_corr = [], [], [], []
    max_size = max(sizes) if sizes else 1
    for k in np.unique(subj_idx):
        rows = np.nonzero(subj_idx == k)[0]
        for size in sizes:
            if len(rows) < size + 1:
                continue
            for _ in range(draws):
                perm = rng.permutation(rows)
                ctx, tgt = perm[:size], perm[size:]
                b, w = bayes_linear_fit(Z[ctx], r[ctx], prior)
                ep = len(ctx_rows)
                ctx_rows.append(np.pad(ctx, (0, max_size - size), constant_values=-1))
                tgt_rows.append(tgt)
                tgt_ep.append(np.full(len(tgt), ep))
                tgt_corr.append(b + Z[tgt] @ w)
    if not ctx_rows:
        return None
    return {"ctx": np.stack(ctx_rows), "tgt": np.concatenate(tgt_rows), "ep": np.concatenate(tgt_ep),
            "corr": np.concatenate(tgt_corr)}


def train_similarity(Z, t, base, fcorr, subj_idx, n_subjects, cfg: FitConfig, val_subjects=()):
    """Adam (full batch) on the episodic loss: sum over photos j of subject k of (t_j - y_hat_j)^2 with
    y_hat_j = base_j + sum_{p != k} s_p fcorr[j, p]. base: g_oof (N,); fcorr: (N, P) every subject's
    correction at every photo. The photos of `val_subjects` (indices) stay in the bank but out of the loss;
    the parameters of the step with the lowest loss on them are kept (early stopping; the last step when
    there are none). Returns (W (H, F), c (H,), beta, history)."""
    import torch

    gen = torch.Generator().manual_seed(cfg.seed)
    dt = torch.float32
    Zt, tt, bt, Ft = (torch.as_tensor(a, dtype=dt) for a in (Z, t, base, fcorr))
    idx = torch.as_tensor(subj_idx, dtype=torch.long)
    n, f = Zt.shape
    W = (torch.randn(cfg.hidden, f, generator=gen, dtype=dt) * (0.1 / np.sqrt(f))).requires_grad_()
    c = torch.zeros(cfg.hidden, dtype=dt, requires_grad=True)
    log_beta = torch.zeros((), dtype=dt, requires_grad=True)
    own = torch.zeros(n, n_subjects, dtype=torch.bool)
    own[torch.arange(n), idx] = True
    pad, pad_mask = _padded_groups(subj_idx, n_subjects)
    pad, pad_mask = torch.as_tensor(pad), torch.as_tensor(pad_mask)
    val_rows = torch.as_tensor(np.isin(subj_idx, np.asarray(val_subjects, dtype=int)))
    fit_rows = ~val_rows
    params = [W, c, log_beta]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    history = []
    best = (float("inf"), -1, [p.detach().clone() for p in params])
    for step in range(cfg.steps + 1):
        xt = torch.sigmoid(Zt @ W.T + c)
        emb = (xt[pad] * pad_mask[..., None]).amax(dim=1)  # e_p; x_tilde > 0, so 0 pads safely
        beta = log_beta.exp()
        s = torch.softmax((beta * xt @ emb.T).masked_fill(own, float("-inf")), dim=1)
        err = (tt - bt - (s * Ft).sum(1)) ** 2
        loss = err[fit_rows].mean()
        val = float(err.detach()[val_rows].mean()) if bool(val_rows.any()) else -step
        if val < best[0]:
            best = (val, step, [p.detach().clone() for p in params])
        if step % max(1, cfg.steps // 10) == 0 or step == cfg.steps:
            history.append({"step": step, "loss": float(loss.detach()), "val_loss": float(val),
                            "beta": float(beta.detach())})
        if step == cfg.steps:
            break
        opt.zero_grad()
        (loss + cfg.weight_decay * (W ** 2).sum()).backward()
        opt.step()
    W, c, log_beta = best[2]
    history.append({"best_step": best[1], "best_val_loss": best[0] if val_rows.any() else None})
    return W.double().numpy(), c.double().numpy(), float(log_beta.exp()), history


def _padded_groups(groups, n_groups):
    counts = np.bincount(groups, minlength=n_groups)
    pad = np.zeros((n_groups, int(counts.max())), dtype=np.int64)
    mask = np.zeros(pad.shape, dtype=bool)
    for p in range(n_groups):
        rows = np.nonzero(groups == p)[0]
        pad[p, :len(rows)] = rows
        mask[p, :len(rows)] = True
    return pad, mask


def fit_join_bias(xt, emb, beta, t, base, fcorr, subj_idx, episodes) -> tuple[np.ndarray, float]:
    """(a, b) of the joined person's score bonus a + b log(n_context), W fixed, by least squares of the
    "join" episodes: k's own correction fitted on a context of k's photos joins the mixture over p != k,
    the rest of k's photos are the targets. Returns ((a, b), episode mse)."""
    from scipy.optimize import minimize

    ctx, tgt, ep, corr = episodes["ctx"], episodes["tgt"], episodes["ep"], episodes["corr"]
    mask = ctx >= 0
    e_ctx = np.where(mask[..., None], xt[np.maximum(ctx, 0)], 0.0).max(axis=1)  # (E, H)
    scores = beta * xt[tgt] @ emb.T
    scores[np.arange(len(tgt)), subj_idx[tgt]] = -np.inf
    new = beta * np.einsum("ij,ij->i", xt[tgt], e_ctx[ep])
    log_n = np.log(mask.sum(1))[ep]
    values = np.concatenate([fcorr[tgt], corr[:, None]], axis=1)

    def mse(ab):
        s = softmax(np.concatenate([scores, (new + ab[0] + ab[1] * log_n)[:, None]], axis=1), axis=1)
        return float(np.mean((t[tgt] - base[tgt] - np.sum(s * values, axis=1)) ** 2))

    res = minimize(mse, np.zeros(2), method="L-BFGS-B", bounds=[(-50.0, 50.0), (-20.0, 20.0)])
    return res.x, float(res.fun)


# ------------------------------------------------------------------------------------------- the fit

def fit_face_np(features, ages, subjects, config: FitConfig | None = None, meta: dict | None = None,
                encoder_ages=None):
    """Fit the face NP on training subjects. encoder_ages: the encoder's own age estimates of the photos, for
    the prior of corrections to them (`FaceNP.predict_from_encoder`). Returns (FaceNP, report dict)."""
    cfg = config or FitConfig()
    cfg.check()
    t0 = time.perf_counter()
    X = np.asarray(features, dtype=np.float64)
    ages = np.asarray(ages, dtype=np.float64)
    subjects = np.asarray(subjects).astype(str)
    if X.ndim != 2 or len(X) != len(ages) or len(ages) != len(subjects):
        raise AgekitError(f"features {X.shape}, ages {ages.shape} and subjects {subjects.shape} do not match")
    names, subj_idx = np.unique(subjects, return_inverse=True)
    if len(names) < 3:
        raise AgekitError(f"the face NP needs at least 3 training subjects, got {len(names)}")
    rng = np.random.default_rng(cfg.seed)
    mean = X.mean(0)
    scale = X.std(0)
    scale = np.where(scale > 1e-6 * max(float(scale.max()), 1e-12), scale, 1.0)
    Z = (X - mean) / scale
    t = to_target(ages, cfg.target)

    g_w, g_b, alpha, g_oof, cv = fit_global(Z, t, subj_idx, cfg.alphas, cfg.cv_folds, cfg.seed)
    r = t - g_oof
    prior = fit_prior(Z, r, subj_idx)
    P = len(names)
    corr_b, corr_w = np.zeros(P), np.zeros((P, Z.shape[1]))
    for p in range(P):
        m = subj_idx == p
        corr_b[p], corr_w[p] = bayes_linear_fit(Z[m], r[m], prior)
    fcorr = corr_b[None, :] + Z @ corr_w.T
    n_val = int(round(cfg.val_fraction * P)) if P >= 10 else 0
    val_subjects = rng.permutation(P)[:n_val]
    Zs, proj = Z, None
    if cfg.sim_dim and cfg.sim_dim < Z.shape[1]:
        _, sv, vt = np.linalg.svd(Z, full_matrices=False)
        d = min(cfg.sim_dim, int(np.sum(sv > 1e-8 * sv[0])))
        proj = vt[:d].T / (sv[:d] / np.sqrt(len(Z)))  # (F, d): whitened principal components
        Zs = Z @ proj
    W, c, beta, history = train_similarity(Zs, t, g_oof, fcorr, subj_idx, P, cfg, val_subjects)
    if proj is not None:
        W = W @ proj.T  # x_tilde = sigmoid(W_d (z proj) + c) = sigmoid((W_d proj^T) z + c)

    xt = sigmoid(Z @ W.T + c)
    emb = subject_embeddings(xt, subj_idx, P)
    s = similarity_weights(emb, xt, beta, exclude=subj_idx)
    join_bias, join_mse = np.zeros(2), None
    episodes = make_context_episodes(subj_idx, Z, r, prior, cfg.context_sizes, cfg.context_draws, rng)
    if episodes is not None:
        join_bias, join_mse = fit_join_bias(xt, emb, beta, t, g_oof, fcorr, subj_idx, episodes)
    base = g_oof + np.sum(s * fcorr, axis=1)
    spread = np.sum(s * (fcorr - (base - g_oof)[:, None]) ** 2, axis=1)
    resid = t - base
    resid_prior = fit_prior(Z, resid, subj_idx)
    prior_var = resid_prior[0] ** 2 + resid_prior[1] ** 2 * np.einsum("ij,ij->i", Z, Z) + resid_prior[2] ** 2
    mix_scale = fit_mix_scale(spread, prior_var, resid)
    enc_prior = np.full(3, np.nan)
    if encoder_ages is not None:
        enc_t = to_target(np.clip(np.asarray(encoder_ages, dtype=np.float64), 0.0, None), cfg.target)
        if enc_t.shape != t.shape:
            raise AgekitError(f"encoder_ages {enc_t.shape} do not match ages {t.shape}")
        enc_prior = fit_prior(Z, t - enc_t, subj_idx)

    info = {"fit": {**asdict(cfg), "alphas": list(cfg.alphas), "context_sizes": list(cfg.context_sizes)},
            "n_subjects": int(P), "n_images": int(len(t)), "n_features": int(X.shape[1])}
    model = FaceNP(target=cfg.target, age_min=cfg.age_min, age_max=cfg.age_max, feat_mean=mean,
                   feat_scale=scale, g_w=g_w, g_b=float(g_b), W=W, c=c, beta=beta, join_bias=join_bias,
                   subjects=names, emb=emb, corr_b=corr_b, corr_w=corr_w, prior=np.asarray(prior),
                   resid_prior=np.asarray(resid_prior), enc_prior=enc_prior, mix_scale=mix_scale,
                   variant=cfg.variant, min_context=cfg.min_context, meta={**(meta or {}), **info})
    model.check()
    report = {"alpha": alpha, "cv_mse": cv, "prior": prior.tolist(), "resid_prior": resid_prior.tolist(),
              "enc_prior": enc_prior.tolist(),
              "mix_scale": mix_scale, "beta": beta, "history": history,
              "train_mse_global_oof": float(np.mean(r ** 2)), "train_mse_mixture": float(np.mean(resid ** 2)),
              "join_bias": join_bias.tolist(), "train_mse_join_episodes": join_mse,
              "seconds": round(time.perf_counter() - t0, 2)}
    return model, report
