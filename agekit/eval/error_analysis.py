"""Error-analysis pages of an evaluation report (matplotlib): where a model goes wrong.

- signed_error_by_age: signed error (pred - true) against true age, with the mean per 5-year bin and a
  least-squares line: a model pulled toward the mean of its training ages (regression to the mean) shows a
  falling line, + for the young and - for the old;
- reliability: calibration diagrams: the age distribution's central intervals (Gaussian with the predicted
  std) at nominal levels 10..95% against the share of true ages inside them; and P(female) in 10 bins
  against the observed share of women (with the expected calibration error);
- band_confusion: true age band (rows) against predicted band, row-normalised;
- examples_by_band / examples_by_race: the best and worst predictions of each age band / race.

`error_plots(predictions, thumbnail, figure)` returns {name: Figure} for those the rows have data for;
`error_summary(predictions)` the numbers the report's section quotes.
"""
from __future__ import annotations

from statistics import NormalDist

import numpy as np

from agekit.eval.metrics import AGE_BAND_LABELS, RACE_NAMES, age_band_index

ERROR_PLOT_TITLES = {
    "signed_error_by_age": "Signed error against true age",
    "reliability": "Calibration reliability",
    "band_confusion": "Confusion of age bands",
    "examples_by_band": "Best and worst examples by age band",
    "examples_by_race": "Best and worst examples by race",
}
LEVELS = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
PER_GROUP = 3  # best and worst thumbnails per band / race
BIN_YEARS = 5


def _floats(rows, key):
    return np.array([np.nan if r.get(key) is None else float(r[key]) for r in rows])


def error_summary(predictions: list[dict]) -> dict:
    """{'slope': d(pred - true)/d(true) by least squares, 'young_bias' / 'old_bias': mean signed error under
    20 / at 60 and over (None when empty), 'interval_reliability': [(level, observed)], 'gender_ece'}."""
    true, pred = _floats(predictions, "true_age"), _floats(predictions, "pred_age")
    err = pred - true
    out = {"slope": float(np.polyfit(true, err, 1)[0]) if len(np.unique(true)) > 1 else None,
           "young_bias": float(err[true < 20].mean()) if (true < 20).any() else None,
           "old_bias": float(err[true >= 60].mean()) if (true >= 60).any() else None}
    std = _floats(predictions, "pred_std")
    if np.isfinite(std).any():
        out["interval_reliability"] = interval_reliability(true, pred, std)
    female, gender = _floats(predictions, "gender_prob"), _floats(predictions, "gender")
    ok = np.isfinite(female) & np.isfinite(gender)
    if ok.any():
        out["gender_ece"] = gender_reliability(female[ok], gender[ok])["ece"]
    return out


def interval_reliability(true, pred, std) -> list[tuple[float, float]]:
    """[(nominal level, share of true ages inside pred +- z(level) * std)] for the Gaussian central
    intervals at LEVELS (rows without a std left out)."""
    ok = np.isfinite(std)
    z = [NormalDist().inv_cdf(0.5 + level / 2) for level in LEVELS]
    dev = np.abs(pred[ok] - true[ok])
    return [(float(level), float((dev <= zz * std[ok]).mean())) for level, zz in zip(LEVELS, z)]


def gender_reliability(female_prob, gender, bins: int = 10) -> dict:
    """Bins of P(female): {'mean_prob', 'observed', 'count' (arrays), 'ece'} (gender: 1 = female)."""
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(female_prob, edges) - 1, 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    mean_prob = np.bincount(idx, female_prob, bins) / np.maximum(count, 1)
    observed = np.bincount(idx, gender, bins) / np.maximum(count, 1)
    ece = float(np.sum(count * np.abs(mean_prob - observed)) / max(count.sum(), 1))
    return {"mean_prob": mean_prob, "observed": observed, "count": count, "ece": ece}


def band_confusion(true, pred) -> np.ndarray:
    """(B, B) counts: rows true band, columns predicted band (AGE_BANDS; predictions clipped at 0)."""
    t, p = age_band_index(true), age_band_index(np.maximum(pred, 0))
    n = len(AGE_BAND_LABELS)
    matrix = np.zeros((n, n), np.int64)
    np.add.at(matrix, (t[t >= 0], p[t >= 0]), 1)
    return matrix


def error_plots(predictions: list[dict], thumbnail, figure) -> dict:
    """{name: Figure} of the pages the rows have data for; thumbnail(path) -> (h, w, 3) uint8 image of a row;
    figure(width, height) makes an empty Figure."""
    if not predictions:
        return {}
    true, pred = _floats(predictions, "true_age"), _floats(predictions, "pred_age")
    out = {"signed_error_by_age": _signed_error_figure(true, pred, figure)}
    reliability = _reliability_figure(predictions, figure)
    if reliability is not None:
        out["reliability"] = reliability
    out["band_confusion"] = _confusion_figure(band_confusion(true, pred), figure)
    with_paths = [r for r in predictions if r.get("path")]
    if with_paths:
        bands = age_band_index(_floats(with_paths, "true_age"))
        groups = {label: [r for r, b in zip(with_paths, bands) if b == i] for i, label in enumerate(AGE_BAND_LABELS)}
        out["examples_by_band"] = _examples_figure(groups, thumbnail, figure, "age band")
        races = {}
        for r in with_paths:
            if r.get("race") is not None:
                races.setdefault(RACE_NAMES.get(int(r["race"]), str(r["race"])), []).append(r)
        if races:
            out["examples_by_race"] = _examples_figure(dict(sorted(races.items())), thumbnail, figure, "race")
    return out


def _signed_error_figure(true, pred, figure):
    err = pred - true
    fig = figure(7, 4)
    ax = fig.add_subplot()
    ax.scatter(true, err, s=6, alpha=min(1.0, max(0.08, 200 / len(true))), edgecolors="none", label="faces")
    bins = np.floor(true / BIN_YEARS) * BIN_YEARS
    starts = np.unique(bins)
    ax.plot(starts + BIN_YEARS / 2, [err[bins == s].mean() for s in starts], color="tab:red", marker="o", ms=3,
            label=f"mean per {BIN_YEARS}-year bin")
    if len(np.unique(true)) > 1:
        slope, icept = np.polyfit(true, err, 1)
        xs = np.array([true.min(), true.max()])
        ax.plot(xs, icept + slope * xs, color="black", linestyle="--", linewidth=1, label=f"fit: slope {slope:+.3f}")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set(xlabel="True age (years)", ylabel="Predicted − true (years)",
           title=ERROR_PLOT_TITLES["signed_error_by_age"] + " (a falling line: regression to the mean)")
    ax.legend(fontsize=8)
    return fig


def _reliability_figure(predictions, figure):
    true, pred = _floats(predictions, "true_age"), _floats(predictions, "pred_age")
    std = _floats(predictions, "pred_std")
    female, gender = _floats(predictions, "gender_prob"), _floats(predictions, "gender")
    has_std, has_gender = int(np.isfinite(std).any()), int((np.isfinite(female) & np.isfinite(gender)).any())
    if not (has_std or has_gender):
        return None
    fig = figure(4.2 * (has_std + has_gender), 4)
    axes = fig.subplots(1, has_std + has_gender, squeeze=False)[0]
    k = 0
    if has_std:
        levels, observed = zip(*interval_reliability(true, pred, std))
        ax = axes[k]
        ax.plot([0, 1], [0, 1], color="black", linewidth=1, label="perfect")
        ax.plot(levels, observed, marker="o", label="pred ± z·std")
        ax.set(xlabel="Nominal interval level", ylabel="Share of true ages inside", xlim=(0, 1), ylim=(0, 1),
               title="Age intervals (Gaussian, predicted std)", aspect="equal")
        ax.legend(fontsize=8)
        k += 1
    if has_gender:
        ok = np.isfinite(female) & np.isfinite(gender)
        rel = gender_reliability(female[ok], gender[ok])
        used = rel["count"] > 0
        ax = axes[k]
        ax.plot([0, 1], [0, 1], color="black", linewidth=1)
        ax.plot(rel["mean_prob"][used], rel["observed"][used], marker="o")
        for x, y, n in zip(rel["mean_prob"][used], rel["observed"][used], rel["count"][used]):
            ax.annotate(str(n), (x, y), fontsize=6, xytext=(3, -8), textcoords="offset points")
        ax.set(xlabel="Predicted P(female)", ylabel="Observed share female", xlim=(0, 1), ylim=(0, 1),
               title=f"Gender (ECE {rel['ece']:.3f}; n per bin)", aspect="equal")
    fig.suptitle(ERROR_PLOT_TITLES["reliability"], fontsize=10)
    return fig


def _confusion_figure(matrix, figure):
    fig = figure(5.2, 4.4)
    ax = fig.add_subplot()
    share = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, f"{matrix[i, j]}\n{share[i, j]:.0%}" if matrix[i, j] else "0", ha="center", va="center",
                    fontsize=7, color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(AGE_BAND_LABELS)), AGE_BAND_LABELS)
    ax.set_yticks(range(len(AGE_BAND_LABELS)), AGE_BAND_LABELS)
    ax.set(xlabel="Predicted band", ylabel="True band", title=ERROR_PLOT_TITLES["band_confusion"] + " (row shares)")
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def best_and_worst(rows: list[dict], k: int = PER_GROUP) -> tuple[list, list]:
    """The k smallest and the k largest absolute errors (worst first); a group of fewer than 2k rows is
    split so that no row is both."""
    order = sorted(rows, key=lambda r: abs(float(r["pred_age"]) - float(r["true_age"])))
    n_best = min(k, (len(order) + 1) // 2)
    n_worst = min(k, len(order) - n_best)
    return order[:n_best], order[::-1][:n_worst]


def _age_text(value) -> str:
    value = float(value)
    return f"{value:.0f}" if value.is_integer() else f"{value:.1f}"


def _examples_figure(groups: dict, thumbnail, figure, what: str):
    """One row per group: its PER_GROUP best and PER_GROUP worst predictions, captioned 'true/pred'."""
    groups = {name: rows for name, rows in groups.items() if rows}
    cols = 2 * PER_GROUP
    fig = figure(cols * 1.2 + 0.8, 1.45 * max(1, len(groups)) + 0.4)
    axes = fig.subplots(max(1, len(groups)), cols, squeeze=False)
    for ax_row, (name, rows) in zip(axes, groups.items()):
        best, worst = best_and_worst(rows)
        chosen = [(i, "best", r) for i, r in enumerate(best)] + [(PER_GROUP + i, "worst", r) for i, r in enumerate(worst)]
        ax_row[0].set_ylabel(f"{name}\n(n={len(rows)})", fontsize=8)
        for col, kind, row in chosen:
            ax = ax_row[col]
            ax.imshow(thumbnail(row["path"]))
            ax.set_title(f"{kind} {_age_text(row['true_age'])}/{_age_text(row['pred_age'])}", fontsize=7,
                         color="tab:green" if kind == "best" else "tab:red")
        for ax in ax_row:
            ax.set(xticks=[], yticks=[])
            if not ax.images:
                ax.set_frame_on(False)
    fig.suptitle(f"Best and worst predictions by {what} (true/pred)", fontsize=10)
    return fig
