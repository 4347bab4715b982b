"""Leave-one-person-out evaluation of the face NP on encoder features (FG-NET), with its baselines.

For every subject k (the fold): fit the NP on the other subjects' features, then score k's photos with
- `encoder`: the checkpoint's own age estimate (zero-shot, nothing fitted on FG-NET);
- `global`: the global ridge model g fitted on the training folds (the non-personal baseline);
- `np`: the NP without context (mixture over the training subjects);
and for k_ctx in (1, 2, 4, 8), over `draws` random contexts of k_ctx of the subject's photos (the rest are
scored; subjects with fewer than k_ctx + 1 photos are skipped for that k_ctx):
- `np+join`, `np+residual`, `np+join+residual`: the NP variants that use the context (agekit.runtime.face_np);
- `global+offset`: the ablation without the similarity mixture: g plus the same Bayesian correction fitted to
  the context's residuals from g (hierarchical linear model, no NP);
- `encoder+offset`: the encoder's own estimate plus the same kind of correction fitted to the context's
  residuals from it (prior fitted on the training subjects' residuals from the encoder): what the product
  does (`agekit predict --context-dir`), since the FG-NET-fitted models do not transfer to other photos;
and `encoder`, `global`, `np` again on the same photos, so every row of one k_ctx compares like with like.
A fold's MAE is the mean over its draws of the MAE over the scored photos; tables give mean +- std over folds.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from agekit.personalise.fit import fit_face_np
from agekit.runtime.face_np import VARIANTS, bayes_linear_predict, to_target

log = logging.getLogger(__name__)

CONTEXT_SETTINGS = tuple(f"np+{v}" for v in VARIANTS if v != "mixture")
BASE_SETTINGS = ("encoder", "global", "np")
ALL_SETTINGS = BASE_SETTINGS + CONTEXT_SETTINGS + ("global+offset", "encoder+offset")


def _global_offset(model, Xq, Xc, ac):
    """g plus the Bayesian correction of the context residuals from g (the subject prior): (ages, std)."""
    Zq, Zc = model.standardize(Xq), model.standardize(Xc)
    r = to_target(ac, model.target) - model.g(Zc)
    corr, var = bayes_linear_predict(Zc, r, Zq, model.prior)
    out = model.to_ages(model.g(Zq) + corr, var)
    return out["age"], out["std"], out["lo"], out["hi"]


def score_fold(model, ff, test_mask, ks, draws, seed, fold_index, variants_for_calibration):
    """MAE per setting for k = 0 and each k in ks, and calibration rows. Returns (maes, calibration, skipped)."""
    X, y, enc = ff.features[test_mask], ff.ages[test_mask].astype(np.float64), ff.encoder_age[test_mask]
    n = len(y)
    maes: dict = {}
    calib: list = []
    rows = np.arange(n)

    def add_calib(k, setting, ages, std, lo, hi, truth):
        calib.append((k, setting, np.abs(ages - truth), std, (truth >= lo) & (truth <= hi)))

    glob = model.predict_global(X)
    npm = model.predict(X, variant="mixture")
    maes[0] = {"encoder": float(np.mean(np.abs(enc - y))), "global": float(np.mean(np.abs(glob - y))),
               "np": float(np.mean(np.abs(npm["age"] - y)))}
    add_calib(0, "np", npm["age"], npm["std"], npm["lo"], npm["hi"], y)
    skipped = []
    for k in ks:
        if n < k + 1:
            skipped.append(k)
            continue
        acc: dict = {s: [] for s in ALL_SETTINGS}
        for d in range(draws):
            rng = np.random.default_rng([seed, fold_index, k, d])
            perm = rng.permutation(rows)
            ctx, tgt = perm[:k], perm[k:]
            truth = y[tgt]
            acc["encoder"].append(np.mean(np.abs(enc[tgt] - truth)))
            acc["global"].append(np.mean(np.abs(glob[tgt] - truth)))
            acc["np"].append(np.mean(np.abs(npm["age"][tgt] - truth)))
            for v in VARIANTS[1:]:
                out = model.predict(X[tgt], X[ctx], y[ctx], variant=v)
                acc[f"np+{v}"].append(np.mean(np.abs(out["age"] - truth)))
                if f"np+{v}" in variants_for_calibration:
                    add_calib(k, f"np+{v}", out["age"], out["std"], out["lo"], out["hi"], truth)
            ages, std, lo, hi = _global_offset(model, X[tgt], X[ctx], y[ctx])
            acc["global+offset"].append(np.mean(np.abs(ages - truth)))
            if "global+offset" in variants_for_calibration:
                add_calib(k, "global+offset", ages, std, lo, hi, truth)
            out = model.predict_from_encoder(X[tgt], enc[tgt], X[ctx], y[ctx], enc[ctx])
            acc["encoder+offset"].append(np.mean(np.abs(out["age"] - truth)))
            if "encoder+offset" in variants_for_calibration:
                add_calib(k, "encoder+offset", out["age"], out["std"], out["lo"], out["hi"], truth)
        maes[k] = {s: float(np.mean(v)) for s, v in acc.items()}
    return maes, calib, skipped


def evaluate_lopo(ff, fit_config, *, ks=(1, 2, 4, 8), draws: int = 5, seed: int = 0, folds=None,
                  calibrate=("np+residual", "np+join", "np+join+residual", "global+offset", "encoder+offset"),
                  progress=None) -> dict:
    """Leave-one-person-out over the subjects of `ff` (FaceFeatures). Returns a results dict (JSON-able)."""

    subjects = sorted(set(ff.subjects.tolist()))
    if folds is not None:
        subjects = subjects[:folds]
    per_fold: dict = {}
    calib_rows: list = []
    skipped: dict = {k: [] for k in ks}
    fit_reports = []
    t0 = time.perf_counter()
    for i, subject in enumerate(subjects):
        test = ff.subjects == subject
        model, report = fit_face_np(ff.features[~test], ff.ages[~test], ff.subjects[~test], fit_config,
                                    encoder_ages=ff.encoder_age[~test])
        maes, calib, skip = score_fold(model, ff, test, ks, draws, seed, i, calibrate)
        per_fold[subject] = {str(k): v for k, v in maes.items()}
        per_fold[subject]["n_images"] = int(test.sum())
        calib_rows += calib
        for k in skip:
            skipped[k].append(subject)
        fit_reports.append({"subject": subject, "alpha": report["alpha"], "beta": report["beta"],
                            "best_step": report["history"][-1]["best_step"], "mix_scale": report["mix_scale"],
                            "prior": report["prior"], "resid_prior": report["resid_prior"],
                            "seconds": report["seconds"]})
        if progress:
            progress(i + 1, len(subjects), subject, maes)
    seconds = time.perf_counter() - t0
    return {"subjects": subjects, "per_fold": per_fold, "skipped": {str(k): v for k, v in skipped.items()},
            "summary": summarize(per_fold, ks), "calibration": calibration_summary(calib_rows, ks),
            "fits": fit_reports, "seconds": round(seconds, 1)}


def summarize(per_fold: dict, ks) -> dict:
    """MAE mean, std and standard error over folds per k and setting, and the paired difference to `global`."""
    out = {}
    for k in (0, *ks):
        rows = [f[str(k)] for f in per_fold.values() if str(k) in f]
        if not rows:
            continue
        table = {}
        for setting in rows[0]:
            v = np.array([r[setting] for r in rows])
            d = v - np.array([r["global"] for r in rows])
            e = v - np.array([r["encoder"] for r in rows])
            se = (lambda a: float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else 0.0)  # noqa: E731
            table[setting] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                              "se": se(v), "diff_vs_global": float(d.mean()), "diff_se": se(d),
                              "folds_better_than_global": int(np.sum(d < 0)),
                              "diff_vs_encoder": float(e.mean()), "diff_vs_encoder_se": se(e),
                              "folds_better_than_encoder": int(np.sum(e < 0))}
        out[str(k)] = {"folds": len(rows), "settings": table}
    return out


def _spearman(a, b) -> float:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def calibration_summary(rows, ks, n_bins: int = 5) -> dict:
    """Per setting and k: coverage of the 90% interval (+-1.645 std), Spearman(std, |error|), mean std,
    RMSE; and a binned table (quintiles of the predicted std) over all k."""
    out: dict = {}
    settings = sorted({r[1] for r in rows})
    for setting in settings:
        entry = {"by_k": {}}
        all_err, all_std, all_in = [], [], []
        for k in (0, *ks):
            sel = [r for r in rows if r[0] == k and r[1] == setting]
            if not sel:
                continue
            err = np.concatenate([r[2] for r in sel])
            std = np.concatenate([r[3] for r in sel])
            inside = np.concatenate([r[4] for r in sel])
            all_err.append(err)
            all_std.append(std)
            all_in.append(inside)
            entry["by_k"][str(k)] = {"n": int(len(err)), "coverage90": float(inside.mean()),
                                     "spearman_std_abs_error": _spearman(std, err),
                                     "mean_std": float(std.mean()), "rmse": float(np.sqrt(np.mean(err ** 2))),
                                     "mae": float(err.mean())}
        err, std, inside = (np.concatenate(a) for a in (all_err, all_std, all_in))
        edges = np.quantile(std, np.linspace(0, 1, n_bins + 1))
        which = np.clip(np.searchsorted(edges, std, side="right") - 1, 0, n_bins - 1)
        entry["bins"] = []
        for b in range(n_bins):
            sel = which == b
            if sel.any():
                entry["bins"].append({
                    "std_from": float(edges[b]), "std_to": float(edges[b + 1]), "n": int(sel.sum()),
                    "mean_std": float(std[sel].mean()), "rmse": float(np.sqrt(np.mean(err[sel] ** 2))),
                    "mae": float(err[sel].mean()), "coverage90": float(inside[sel].mean())})
        entry["all"] = {"n": int(len(err)), "coverage90": float(inside.mean()),
                        "spearman_std_abs_error": _spearman(std, err), "mean_std": float(std.mean()),
                        "rmse": float(np.sqrt(np.mean(err ** 2)))}
        out[setting] = entry
    return out

