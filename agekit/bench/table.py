"""Benchmark results: per-row statistics over seeds (or folds), results.json, results.md and results.png.

Everything here works from plain dicts (the per-run records the runner collects), so the table can be
rebuilt at any time from whatever runs have finished. Conventions:

- MAE mean and sample standard deviation (numpy ddof=1) over the finished seeds; with one seed the
  std is undefined and printed as '—'. The number of seeds behind each mean is always printed.
- A row with fewer finished runs than planned is marked unfinished; a row with none is 'not run'.
- FG-NET leave-one-person-out rows give the MAE mean ± std over folds (each fold's MAE averaged over
  seeds first) and, separately, the pooled MAE over every held-out image (folds weighted by size).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import yaml

from agekit.io import atomic_path, write_json_atomic, write_text_atomic

DASH = "—"


def mean_std(values) -> tuple[float | None, float | None]:
    """(mean, sample std with ddof=1) of a list of numbers; std None for fewer than 2, both None for none."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return None, None
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), (float(arr.std(ddof=1)) if len(arr) >= 2 else None)


def _mean(values):
    return mean_std(values)[0]


def fmt_mae(mean, std, n: int, unit: str = "seed") -> str:
    """'3.41 ± 0.12 (n=3 seeds)'; one value: '3.41 ± — (n=1 seed)'; nothing: '—'."""
    if mean is None:
        return DASH
    spread = DASH if std is None else f"{std:.2f}"
    return f"{mean:.2f} ± {spread} (n={n} {unit}{'' if n == 1 else 's'})"


def _num(value, digits=2) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def _pct(value) -> str:
    return DASH if value is None else f"{100.0 * value:.1f}%"


def _params(value) -> str:
    if value is None:
        return DASH
    return f"{value / 1e6:.2f}M" if value >= 1e5 else f"{value / 1e3:.1f}k"


def _duration(seconds) -> str:
    if seconds is None:
        return DASH
    if seconds < 10:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


# ------------------------------------------------------------------------------------------ aggregation

def summarize_rows(variants: list[dict], runs: list[dict], lopo: bool = False) -> list[dict]:
    """One summary per variant (in the given order) from the per-run records (finished or not)."""
    rows = []
    for v in variants:
        mine = [r for r in runs if r["name"] == v["name"]]
        done = [r for r in mine if r["status"] == "done"]
        row = {"name": v["name"], "method": v["method"], "params": v["params"], "data": v.get("data", {}),
               "runs_planned": len(mine), "runs_done": len(done),
               "status": "done" if mine and len(done) == len(mine) else ("partial" if done else "not run")}
        measured = next((r for r in done if r.get("latency_ms") is not None), None)
        row["n_params"] = next((r["n_params"] for r in done if r.get("n_params") is not None), None)
        row["gmacs"] = measured.get("gmacs") if measured else None
        row["latency_ms"] = measured["latency_ms"] if measured else None
        row["latency_measured_on"] = measured["run_dir"] if measured else None
        if lopo:
            row.update(_lopo_stats(done))
        else:
            seeds = sorted({r["seed"] for r in done})
            maes = [next(r["test_mae"] for r in done if r["seed"] == s) for s in seeds]
            mean, std = mean_std(maes)
            row.update(seeds_done=seeds, mae_values=maes, mae_mean=mean, mae_std=std, n=len(maes),
                       cs5_mean=_mean([r["cs5"] for r in done]),
                       epsilon_error_mean=_mean([r.get("epsilon_error") for r in done]),
                       gender_accuracy_mean=_mean([r.get("gender_accuracy") for r in done]),
                       train_time_s_mean=_mean([r["train_time_s"] for r in done]))
        rows.append(row)
    key = (lambda r: (r["mae_mean"] is None, r["mae_mean"] or 0.0, r["name"]))
    return sorted(rows, key=key)


def _lopo_stats(done: list[dict]) -> dict:
    folds = sorted({r["fold"] for r in done})
    per_fold = {f: _mean([r["test_mae"] for r in done if r["fold"] == f]) for f in folds}
    mean, std = mean_std(list(per_fold.values()))
    n_img = sum(r["n_test"] for r in done)
    pooled = sum(r["test_mae"] * r["n_test"] for r in done) / n_img if n_img else None
    pooled_cs5 = sum(r["cs5"] * r["n_test"] for r in done) / n_img if n_img else None
    return {"folds_done": folds, "fold_mae": per_fold, "mae_mean": mean, "mae_std": std, "n": len(folds),
            "pooled_mae": pooled, "pooled_cs5": pooled_cs5, "pooled_images": n_img,
            "seeds_done": sorted({r["seed"] for r in done}),
            "train_time_s_total": sum(r["train_time_s"] for r in done) if done else None}


# ------------------------------------------------------------------------------------------ Markdown

def markdown(results: dict) -> str:
    lopo = results["protocol_kind"] == "fgnet_lopo"
    lines = [f"# {results['title']}", "", "Command:", "", "```bash", results["command"], "```", "",
             "## Protocol", "",
             "Every row was trained and evaluated under this protocol; only the method (and its parameters) "
             "and the seed vary" + (" (and the held-out subject: one fold per subject)." if lopo else "."), ""]
    lines += [f"- {line}" for line in results["protocol_notes"]]
    lines += ["", "<details><summary>Resolved configuration (without the method)</summary>", "", "```yaml",
              _yaml(results["protocol"]).rstrip(), "```", "", "</details>", ""]
    params = [r for r in results["rows"] if r["params"] or r["data"]]
    if params:
        lines += ["Method settings that differ from the defaults:", ""]
        lines += [f"- `{r['name']}`: " + ", ".join(f"{k}={v}" for k, v in {**r["params"], **r["data"]}.items())
                  for r in params]
        lines.append("")
    lines += ["## Results", ""]
    lines += _lopo_table(results["rows"]) if lopo else _table(results["rows"])
    unfinished = [r for r in results["rows"] if r["status"] != "done"]
    if unfinished:
        lines += ["", "Unfinished (run the same command again to complete them): " + ", ".join(
            f"`{r['name']}` {r['runs_done']}/{r['runs_planned']}" for r in unfinished) + "."]
    failed = [r for r in results["runs"] if r["status"] == "failed"]
    if failed:
        lines += ["", "Failed runs: " + "; ".join(f"`{r['name']}` seed {r['seed']}"
                                                   + (f" fold {r['fold']}" if r.get("fold") else "")
                                                   + f": {r.get('error', '?')}" for r in failed)]
    return "\n".join(lines) + "\n"


def _table(rows: list[dict]) -> list[str]:
    head = ["method", "test MAE (mean ± std)", "CS(5)", "ε-error", "gender acc", "params", "train time / run",
            "CPU latency ms"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        name = f"`{r['name']}`" + ("" if r["status"] == "done" else
                                   f" (unfinished {r['runs_done']}/{r['runs_planned']})")
        out.append("| " + " | ".join([
            name, fmt_mae(r["mae_mean"], r["mae_std"], r["n"]), _pct(r["cs5_mean"]), _num(r["epsilon_error_mean"], 3),
            _pct(r["gender_accuracy_mean"]), _params(r["n_params"]), _duration(r["train_time_s_mean"]),
            _num(r["latency_ms"]),
        ]) + " |")
    out += ["", "MAE in years on the test split (best-validation checkpoint of each run): mean ± sample std "
                "(ddof=1) over the seeds, '—' where a row has one seed. CS(5), ε-error and gender accuracy "
                "are means over the same seeds; ε-error needs apparent-age std labels, gender accuracy a "
                "gender head; '—' where not applicable. Train time: the training steps with their data "
                "loading (not validation or testing), mean per run. Latency: batch-1 CPU forward, 1 thread, "
                "median of 30, measured once per row."]
    return out


def _lopo_table(rows: list[dict]) -> list[str]:
    head = ["method", "MAE over folds (mean ± std)", "pooled MAE", "pooled CS(5)", "held-out images", "params",
            "train time (all folds)", "CPU latency ms"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        name = f"`{r['name']}`" + ("" if r["status"] == "done" else
                                   f" (unfinished {r['runs_done']}/{r['runs_planned']})")
        out.append("| " + " | ".join([
            name, fmt_mae(r["mae_mean"], r["mae_std"], r["n"], unit="fold"), _num(r["pooled_mae"]),
            _pct(r["pooled_cs5"]), str(r["pooled_images"] or DASH), _params(r["n_params"]),
            _duration(r["train_time_s_total"]), _num(r["latency_ms"]),
        ]) + " |")
    out += ["", "Leave-one-person-out: each fold fine-tunes on all other subjects and tests on one held-out "
                "subject. 'MAE over folds' is the mean ± sample std (ddof=1) of the per-subject MAEs (each "
                "subject weighs the same); 'pooled MAE' is the MAE over all held-out images together (each "
                "image weighs the same, the number usually quoted for FG-NET). The two differ when subjects "
                "have different numbers of photos."]
    return out


def _yaml(obj) -> str:

    return yaml.safe_dump(obj, sort_keys=False)


# ------------------------------------------------------------------------------------------ plot

def plot(results: dict, path) -> None:
    """results.png: MAE mean with ± std error bars per row (rows without a finished run are left out)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in results["rows"] if r["mae_mean"] is not None]
    fig = Figure(figsize=(max(4.0, 0.8 * len(rows) + 2.0), 4.0), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if rows:
        x = np.arange(len(rows))
        means = [r["mae_mean"] for r in rows]
        errs = [r["mae_std"] if r["mae_std"] is not None and math.isfinite(r["mae_std"]) else 0.0 for r in rows]
        ax.bar(x, means, yerr=errs, capsize=4, color="#4c72b0", alpha=0.85)
        ax.set_xticks(x)
        ax.set_xticklabels([f"{r['name']}\n(n={r['n']})" for r in rows], rotation=30, ha="right", fontsize=8)
    unit = "folds" if results["protocol_kind"] == "fgnet_lopo" else "seeds"
    ax.set_ylabel("test MAE (years)")
    ax.set_title(f"{results['title']}\nmean ± sample std over {unit}", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")


# ------------------------------------------------------------------------------------------ writing

def write_results(out_dir, results: dict, with_plot: bool = True) -> dict:
    """Write results.json, results.md (and results.png) into out_dir; return {name: path}."""

    out_dir = Path(out_dir)
    files = {"json": out_dir / "results.json", "md": out_dir / "results.md"}
    write_json_atomic(files["json"], results)
    write_text_atomic(files["md"], markdown(results))
    if with_plot:
        files["png"] = out_dir / "results.png"
        plot(results, files["png"])
    return files
