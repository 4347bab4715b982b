"""Outputs of `agekit np-faces`: results.json, results.md and mae_vs_k.png, each written atomically."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from agekit.io import atomic_path, write_json_atomic, write_text_atomic

LABELS = {
    "encoder": "encoder's own estimate (zero-shot)",
    "global": "global ridge model (non-personal)",
    "np": "NP, no context (mixture over training subjects)",
    "np+join": "NP + context, join (own F joins the mixture)",
    "np+residual": "NP + context, residual correction",
    "np+join+residual": "NP + context, join + residual",
    "global+offset": "ablation: global + context correction (no mixture)",
    "encoder+offset": "encoder's own estimate + context correction (the product)",
}
COLORS = {"encoder": "tab:gray", "global": "black", "np": "tab:blue", "np+join": "tab:orange",
          "np+residual": "tab:red", "np+join+residual": "tab:purple", "global+offset": "tab:green",
          "encoder+offset": "tab:brown"}


def write_outputs(out: Path, results: dict) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    png = out / "mae_vs_k.png"
    fig = mae_figure(results)
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    results = {**results, "files": {"json": str(out / "results.json"), "markdown": str(out / "results.md"),
                                    "plot": str(png)}}
    write_json_atomic(out / "results.json", results)
    write_text_atomic(out / "results.md", markdown(results))
    return [out / "results.json", out / "results.md", png]


def _ks(results) -> list[str]:
    return [k for k in results["summary"]]


def mae_figure(results: dict):
    from matplotlib.figure import Figure

    summary = results["summary"]
    ks = _ks(results)
    x = np.arange(len(ks))
    fig = Figure(figsize=(7.5, 4.6), layout="constrained")
    ax = fig.subplots()
    settings = list(summary[ks[-1]]["settings"]) if len(ks) > 1 else list(summary[ks[0]]["settings"])
    for setting in settings:
        xs, ys, es = [], [], []
        for i, k in enumerate(ks):
            row = summary[k]["settings"].get(setting)
            if row is None:
                continue
            xs.append(i)
            ys.append(row["mean"])
            es.append(row["se"])
        style = "--" if setting in ("encoder", "global", "np") else "-"
        ax.errorbar(np.array(xs) + 0.03 * (settings.index(setting) - 3), ys, yerr=es, marker="o", ms=4,
                    linestyle=style, color=COLORS.get(setting), label=LABELS.get(setting, setting), capsize=2)
    ax.set_xticks(x, [f"{k}\n({summary[k]['folds']} subj.)" for k in ks])
    ax.set_xlabel("k = labelled photos of the test person (context)")
    ax.set_ylabel("MAE (years) on the other photos")
    enc = results.get("encoder", {})
    ax.set_title(f"FG-NET leave-one-person-out, encoder {enc.get('backbone', '?')}: MAE vs k "
                 f"(mean ± s.e. over subjects)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig


def _fmt(row) -> str:
    return f"{row['mean']:.2f} ± {row['std']:.2f}"


def _diff(row) -> str:
    return f"{row['diff_vs_global']:+.2f} ± {row['diff_se']:.2f}"


def verdict(results: dict) -> list[str]:
    """Plain sentences: does personalisation help, and by how much."""
    s = results["summary"]
    default = f"np+{results.get('default_variant', 'residual')}"
    lines = []
    z = s["0"]["settings"]
    d = z["np"]
    lines.append(f"Without context, the NP (mixture over the training subjects) has MAE {d['mean']:.2f} against "
                 f"the global model's {z['global']['mean']:.2f} (paired difference {_diff(d)} years, better for "
                 f"{d['folds_better_than_global']} of {s['0']['folds']} subjects); the encoder alone has "
                 f"{z['encoder']['mean']:.2f}.")
    for k in _ks(results)[1:]:
        row = s[k]["settings"]
        if default not in row:
            continue
        d, g = row[default], row["global"]
        rel = 100.0 * d["diff_vs_global"] / g["mean"] if g["mean"] else float("nan")
        sig = abs(d["diff_vs_global"]) > 2 * d["diff_se"]
        lines.append(f"k = {k}: {LABELS[default]} {d['mean']:.2f} against the global model's {g['mean']:.2f} on the "
                     f"same photos: {d['diff_vs_global']:+.2f} ± {d['diff_se']:.2f} years ({rel:+.0f}%), better "
                     f"for {d['folds_better_than_global']} of {s[k]['folds']} subjects"
                     + ("" if sig else " (within two standard errors of no change)") + ".")
    product = [(k, s[k]["settings"]["encoder+offset"]) for k in _ks(results)[1:]
               if "encoder+offset" in s[k]["settings"]]
    if product:
        lines.append("What `agekit predict --context-dir` does (the encoder's own estimate + the context correction) "
                     "against the encoder alone on the same photos: " + "; ".join(
                         f"k = {k}: {d['mean']:.2f} vs {s[k]['settings']['encoder']['mean']:.2f} "
                         f"({d['diff_vs_encoder']:+.2f} ± {d['diff_vs_encoder_se']:.2f}, better for "
                         f"{d['folds_better_than_encoder']}/{s[k]['folds']})" for k, d in product) + ".")
    return lines


def markdown(results: dict) -> str:
    s = results["summary"]
    ks = _ks(results)
    enc = results.get("encoder", {})
    data = results.get("data", {})
    proto = results.get("protocol", {})
    default = f"np+{results.get('default_variant', 'residual')}"
    units = "log(1 + age) units" if proto.get("fit", {}).get("target", "log") == "log" else "years"
    out = ["# Personalised age estimation on FG-NET: the multi-task NP", ""]
    out += [f"Command: `{results.get('command', '')}`", "",
            f"Encoder: {enc.get('kind', '')} `{enc.get('path', '')}` ({enc.get('backbone', '?')}, sha1 "
            f"{str(enc.get('sha1', ''))[:12]}), crops {enc.get('crop')}; features frozen.", "",
            f"Data: {data.get('root', '')}: {data.get('images', '?')} images of {data.get('subjects', '?')} subjects "
            f"(skipped: {len(data.get('skipped_no_landmarks', []))} without landmarks, "
            f"{len(data.get('skipped_unreadable', []))} unreadable). Leave one person out over "
            f"{len(results['subjects'])} subjects; {proto.get('draws')} random contexts per subject and k "
            f"(seed {proto.get('seed')}); a subject's MAE is the mean over draws, then mean ± std over subjects.",
            "", f"Machine: {results.get('machine', {}).get('processor', '?')}, "
            f"{results.get('machine', {}).get('cpu_count', '?')} CPUs, torch threads "
            f"{results.get('machine', {}).get('threads', '?')}, load average "
            f"{results.get('machine', {}).get('load_average', '?')}. Date: {results.get('date', '')}. Time: "
            f"{results.get('seconds_total', '?')} s in total (features {results.get('feature_seconds', '?')} s, "
            f"folds {results.get('seconds', '?')} s).", ""]
    out += ["## Verdict", ""] + [f"- {line}" for line in verdict(results)] + [""]
    out += ["## MAE (years), mean ± std over test subjects", "",
            "| setting | " + " | ".join(f"k = {k} ({s[k]['folds']} subj.)" for k in ks) + " |",
            "| --- | " + " | ".join("---" for _ in ks) + " |"]
    settings = list(s[ks[-1]]["settings"]) if len(ks) > 1 else list(s["0"]["settings"])
    for setting in settings:
        cells = [(_fmt(s[k]["settings"][setting]) if setting in s[k]["settings"] else "—") for k in ks]
        name = LABELS.get(setting, setting) + (" **(default)**" if setting == default else "")
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    out += ["", "Every column scores the same photos for every row (k > 0: the photos that are not context).",
            "", "## Difference to the global model (paired over subjects; negative = better)", "",
            "Mean ± standard error of (setting − global) over subjects, and in how many subjects the setting "
            "was better.", "", "| setting | " + " | ".join(f"k = {k}" for k in ks) + " |",
            "| --- | " + " | ".join("---" for _ in ks) + " |"]
    for setting in settings:
        if setting == "global":
            continue
        cells = [(f"{_diff(s[k]['settings'][setting])} ({s[k]['settings'][setting]['folds_better_than_global']}"
                  f"/{s[k]['folds']})" if setting in s[k]["settings"] else "—") for k in ks]
        out.append(f"| {LABELS.get(setting, setting)} | " + " | ".join(cells) + " |")
    skipped = {k: v for k, v in results.get("skipped", {}).items() if v}
    if skipped:
        out += ["", "Skipped (fewer than k + 1 photos): " + "; ".join(
            f"k = {k}: {len(v)} subject(s) ({', '.join(v)})" for k, v in skipped.items()) + "."]
    out += ["", "![MAE vs k](mae_vs_k.png)", "", "## Is the uncertainty honest?", "",
            f"Predictive std = sqrt(a · mixture spread + variance of the person's residual model) in {units}, "
            "converted to years at the estimate; the 90% interval is ±1.645 std in those units.", "",
            "| setting | k | photos | coverage of the 90% interval | Spearman(std, abs. error) | mean std | RMSE |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    calib = results.get("calibration", {})
    for setting in ["np", default] + [c for c in calib if c not in ("np", default)]:
        if setting not in calib:
            continue
        for k, row in calib[setting]["by_k"].items():
            out.append(f"| {LABELS.get(setting, setting)} | {k} | {row['n']} | {100 * row['coverage90']:.1f}% | "
                       f"{row['spearman_std_abs_error']:.2f} | {row['mean_std']:.2f} | {row['rmse']:.2f} |")
    for setting in ("np", default):
        if setting not in calib:
            continue
        out += ["", f"Binned by predicted std (quintiles), {LABELS.get(setting, setting)}"
                + (", all k pooled" if setting != "np" else ", k = 0") + ":", "",
                "| predicted std (years) | photos | mean predicted std | RMSE | MAE | coverage 90% |",
                "| --- | --- | --- | --- | --- | --- |"]
        for b in calib[setting]["bins"]:
            out.append(f"| {b['std_from']:.1f}–{b['std_to']:.1f} | {b['n']} | {b['mean_std']:.2f} | "
                       f"{b['rmse']:.2f} | {b['mae']:.2f} | {100 * b['coverage90']:.1f}% |")
    fits = results.get("fits", [])
    if fits:
        med = lambda key: float(np.median([f[key] for f in fits]))  # noqa: E731
        pri = np.median(np.array([f["prior"] for f in fits]), axis=0)
        res = np.median(np.array([f["resid_prior"] for f in fits]), axis=0)
        out += ["", "## Fits (median over folds)", "",
                f"Ridge penalty of g {med('alpha'):g}; inverse temperature beta {med('beta'):.2f}; early-stopped "
                f"at step {med('best_step'):.0f}; mixture-spread weight a {med('mix_scale'):.3f}; subject prior "
                f"(sigma_b, sigma_w, sigma) = ({pri[0]:.3f}, {pri[1]:.4f}, {pri[2]:.3f}); residual prior "
                f"({res[0]:.3f}, {res[1]:.4f}, {res[2]:.3f}) in {units}; {med('seconds'):.1f} s per fit."]
    return "\n".join(out) + "\n"
