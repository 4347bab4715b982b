"""Evaluation report: metrics.json, predictions.csv, report.md and PNG plots, each written atomically.

Plots use matplotlib's object API (Figure + Agg canvas) rather than pyplot, so no global backend is
switched and nothing needs a display.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from agekit.eval.error_analysis import ERROR_PLOT_TITLES, error_plots, error_summary
from agekit.eval.metrics import AGE_BAND_LABELS
from agekit.io import atomic_path, load_image, write_json_atomic, write_text_atomic

# predictions.csv column order; derived error columns follow pred_age, unknown extra keys go last.
CSV_COLUMNS = ["key", "path", "true_age", "pred_age", "error", "abs_error", "pred_std", "gender",
               "gender_pred", "gender_prob", "race"]
PLOT_TITLES = {
    "pred_vs_true": "Predicted vs true age",
    "mae_by_age": "MAE per 5-year true-age bin",
    "error_hist": "Signed error histogram",
    "examples": "Best and worst predictions",
}
EXAMPLES_PER_ROW = 8
THUMB_PX = 96  # thumbnails are shrunk before plotting so large photos don't bloat the figure
AGE_BIN_YEARS = 5
MAX_HIST_BINS = 200


def write_report(out_dir, metrics: dict, predictions: list[dict], *, title: str, protocol: dict,
                 complexity: dict | None, image_loader=None, extra_sections=(), plots: bool = True,
                 error_analysis: bool = True) -> dict[str, Path]:
    """Write the full report into out_dir and return {name: path} of every file written.

    metrics: compute_metrics() output. predictions: rows {'key', 'path', 'true_age', 'pred_age', and
    optionally 'pred_std', 'gender', 'gender_pred', 'gender_prob', 'race'}. protocol: what was evaluated
    (dataset, split file, checkpoint, ...), printed as given. image_loader(path) -> (H, W, 3) uint8 for
    the example thumbnails, default agekit.io.load_image. extra_sections: Markdown sections (each starting
    with '## ') placed after the standard tables, before the plots. plots=False writes no PNG (no matplotlib
    needed).
    Names: 'metrics', 'predictions', 'report', and the plots written ('pred_vs_true', 'mae_by_age',
    'error_hist', 'examples'; none without predictions, no 'examples' without image paths).
    error_analysis (with plots; on unless turned off) adds the error-analysis pages of agekit.eval.error_analysis
    (ERROR_PLOT_TITLES: signed error against true age, reliability diagrams, confusion of age bands, best and
    worst examples by age band and race) and a report section linking them.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = write_plots(out_dir, predictions, image_loader or load_image) if plots else {}
    errors_section = None
    if plots and error_analysis and predictions:
        errors_section = _write_error_analysis(out_dir, predictions, image_loader or load_image, written)
    written["predictions"] = out_dir / "predictions.csv"
    write_text_atomic(written["predictions"], predictions_csv(predictions))
    written["metrics"] = out_dir / "metrics.json"
    write_json_atomic(written["metrics"],
                      {"title": title, "metrics": metrics, "protocol": protocol, "complexity": complexity})
    # report.md last: its presence means every file it links to is already in place.
    written["report"] = out_dir / "report.md"
    sections = list(extra_sections) + ([errors_section] if errors_section else [])
    write_text_atomic(written["report"], report_markdown(title, metrics, protocol, complexity,
                                                         [name for name in PLOT_TITLES if name in written],
                                                         sections))
    return written


def _write_error_analysis(out_dir: Path, predictions: list[dict], image_loader, written: dict) -> str:
    """Write the error-analysis PNGs into out_dir (names added to `written`); return the report section."""
    for name, fig in error_plots(predictions, lambda path: _thumbnail(path, image_loader), _figure).items():
        written[name] = out_dir / f"{name}.png"
        with atomic_path(written[name]) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    summary = error_summary(predictions)
    rows = [("Slope of signed error on true age", "–" if summary["slope"] is None else f"{summary['slope']:+.3f}"),
            ("Mean signed error, true age < 20", _signed_years(summary["young_bias"])),
            ("Mean signed error, true age ≥ 60", _signed_years(summary["old_bias"]))]
    for level, observed in summary.get("interval_reliability", []):
        if level in (0.5, 0.9):
            rows.append((f"Share inside the Gaussian {level:.0%} interval (pred ± z·std)", _percent(observed)))
    if summary.get("gender_ece") is not None:
        rows.append(("Gender expected calibration error (10 bins)", f"{summary['gender_ece']:.3f}"))
    links = "\n\n".join(f"![{ERROR_PLOT_TITLES[n]}]({n}.png)" for n in ERROR_PLOT_TITLES if n in written)
    return ("## Error analysis\n\nA negative slope means regression to the mean: the young are made older and the "
            "old younger. Reliability: a calibrated model lies on the diagonal.\n\n"
            + _table(["Measure", "Value"], rows) + "\n\n" + links)


def _signed_years(value) -> str:
    return "–" if value is None else f"{value:+.2f}"


# ---------------------------------------------------------------- predictions.csv

def predictions_csv(predictions: list[dict]) -> str:
    """CSV text of the prediction rows plus signed error (pred - true) and absolute error columns."""
    rows = [_with_errors(row) for row in predictions]
    present = {key for row in rows for key in row}
    columns = [c for c in CSV_COLUMNS if c in present]
    columns += sorted(present - set(CSV_COLUMNS))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _csv_value(row.get(key)) for key in columns})
    return buffer.getvalue()


def _with_errors(row: dict) -> dict:
    error = float(row["pred_age"]) - float(row["true_age"])
    return {**row, "error": error, "abs_error": abs(error)}


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4f}".rstrip("0").rstrip(".")
    return value


# ---------------------------------------------------------------- report.md

def report_markdown(title: str, metrics: dict, protocol: dict, complexity: dict | None,
                    plots: list[str], extra_sections=()) -> str:
    """The Markdown report; `plots` are the names of the PNGs written beside it, `extra_sections` more
    Markdown sections placed after the standard ones."""
    sections = [f"# {title}", _protocol_section(protocol), _headline_section(metrics), _cs_section(metrics)]
    sections += _group_sections(metrics)
    if "uncertainty" in metrics:
        sections.append(_uncertainty_section(metrics["uncertainty"]))
    sections += list(extra_sections)
    if complexity:
        sections.append(_complexity_section(complexity))
    if plots:
        sections.append("## Plots\n\n" + "\n\n".join(f"![{PLOT_TITLES[p]}]({p}.png)" for p in plots))
    return "\n\n".join(sections) + "\n"


def _protocol_section(protocol: dict) -> str:
    rows = [(key.replace("_", " "), _protocol_value(value)) for key, value in protocol.items()]
    return "## Protocol\n\n" + _table(["Setting", "Value"], rows)


def _protocol_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    return str(value)


def _headline_section(metrics: dict) -> str:
    low, high = metrics["mae_ci95"]
    rows = [
        ("Samples", str(metrics["n"])),
        ("MAE (years)", f"{metrics['mae']:.2f} (95% CI {low:.2f}–{high:.2f})"),
        ("RMSE (years)", f"{metrics['rmse']:.2f}"),
    ]
    if metrics.get("epsilon_error") is not None:
        rows.append(("ε-error (ChaLearn LAP)", f"{metrics['epsilon_error']:.4f}"))
    if "gender_accuracy" in metrics:
        rows.append(("Gender accuracy", _percent(metrics["gender_accuracy"])))
    return "## Headline metrics\n\n" + _table(["Metric", "Value"], rows)


def _cs_section(metrics: dict) -> str:
    thetas = list(metrics["cs"])
    header = ["θ (years)"] + thetas
    return ("## Cumulative score\n\nFraction of samples whose absolute error is ≤ θ years.\n\n"
            + _table(header, [["CS"] + [_percent(metrics["cs"][t]) for t in thetas]]))


def _group_sections(metrics: dict) -> list[str]:
    sections = []
    if "mae_by_band" in metrics:
        # Every band is listed so an empty one is visible rather than silently missing.
        bands = {b: metrics["mae_by_band"].get(b, {"n": 0, "mae": None}) for b in AGE_BAND_LABELS}
        sections.append(_group_table("MAE by true-age band", "Band", bands))
    for key, heading, label in (("mae_by_gender", "MAE by gender", "Gender"), ("mae_by_race", "MAE by race", "Race")):
        if key in metrics:
            sections.append(_group_table(heading, label, metrics[key]))
    return sections


def _group_table(heading: str, label: str, groups: dict) -> str:
    rows = [(name, str(g["n"]), _years(g["mae"])) for name, g in groups.items()]
    return f"## {heading}\n\n" + _table([label, "n", "MAE (years)"], rows)


def _uncertainty_section(u: dict) -> str:
    rho = u["spearman_std_vs_abs_err"]
    rows = [
        ("Samples with a predicted std", str(u["n"])),
        ("Mean predicted std (years)", _years(u["mean_pred_std"])),
        ("Spearman ρ(std, |error|)", "–" if rho is None else f"{rho:.3f}"),
        ("Coverage of pred ± 1.645·std (nominal 90%)", _percent(u["coverage_90"])),
    ]
    return "## Predicted uncertainty\n\n" + _table(["Measure", "Value"], rows)


def _complexity_section(cx: dict) -> str:
    """Table of the model_complexity() fields present in cx (a caller may have skipped some)."""
    formatters = {
        "params": ("Parameters", lambda v: f"{v / 1e6:.2f} M"),
        "params_trainable": ("Trainable parameters", lambda v: f"{v / 1e6:.2f} M"),
        "gmacs": ("GMACs", lambda v: f"{v:.3f}"),
        "input_size": ("Input size", lambda v: f"{v}×{v}"),
        "latency_ms_median": ("CPU latency, batch 1, median", lambda v: f"{v:.1f} ms"),
        "latency_ms_p90": ("CPU latency, batch 1, p90", lambda v: f"{v:.1f} ms"),
        "threads": ("Threads", str),
        "torch": ("torch", str),
        "cpu": ("CPU", str),
    }
    rows = [(name, fmt(cx[key])) for key, (name, fmt) in formatters.items() if cx.get(key) is not None]
    return "## Model complexity\n\n" + _table(["Measure", "Value"], rows)


def _table(header: list, rows: list) -> str:
    lines = [_row(header), "|" + "---|" * len(header)]
    return "\n".join(lines + [_row(r) for r in rows])


def _row(cells) -> str:
    # A '|' or newline inside a value would break the table row.
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _years(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def _percent(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


# ---------------------------------------------------------------- plots

def write_plots(out_dir: Path, predictions: list[dict], image_loader) -> dict[str, Path]:
    """Write the PNG plots for `predictions` into out_dir; returns {name: path} of those written."""
    if not predictions:
        return {}
    true = np.array([float(r["true_age"]) for r in predictions])
    pred = np.array([float(r["pred_age"]) for r in predictions])
    figures = {
        "pred_vs_true": _pred_vs_true_figure(true, pred),
        "mae_by_age": _mae_by_age_figure(true, pred),
        "error_hist": _error_hist_figure(pred - true),
    }
    with_paths = [r for r in predictions if r.get("path")]
    if with_paths:
        figures["examples"] = _examples_figure(with_paths, image_loader)
    written = {}
    for name, fig in figures.items():
        written[name] = out_dir / f"{name}.png"
        with atomic_path(written[name]) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    return written


def _figure(width: float, height: float):
    from matplotlib.figure import (
        Figure,  # imported here so metrics/report tables work without matplotlib
    )

    return Figure(figsize=(width, height), layout="constrained")


def _pred_vs_true_figure(true: np.ndarray, pred: np.ndarray):
    """Scatter of predicted against true age (N,) with the identity line."""
    fig = _figure(5, 5)
    ax = fig.add_subplot()
    ax.scatter(true, pred, s=8, alpha=min(1.0, max(0.1, 200 / len(true))), edgecolors="none")
    low, high = min(true.min(), pred.min()), max(true.max(), pred.max())
    ax.plot([low, high], [low, high], color="black", linewidth=1, label="pred = true")
    ax.set(xlabel="True age (years)", ylabel="Predicted age (years)", title=PLOT_TITLES["pred_vs_true"],
           aspect="equal")
    ax.legend(loc="upper left")
    return fig


def _mae_by_age_figure(true: np.ndarray, pred: np.ndarray):
    """Bar per 5-year bin of true age (floor(age / 5) * 5) with that bin's MAE, sample count on top."""
    fig = _figure(7, 4)
    ax = fig.add_subplot()
    bins = np.floor(true / AGE_BIN_YEARS) * AGE_BIN_YEARS
    starts = np.unique(bins)
    maes = [np.abs(pred - true)[bins == s].mean() for s in starts]
    bars = ax.bar(starts + AGE_BIN_YEARS / 2, maes, width=AGE_BIN_YEARS * 0.9)
    ax.bar_label(bars, labels=[str(int((bins == s).sum())) for s in starts], fontsize=7)
    ax.set(xlabel="True age (years, 5-year bins; n above bars)", ylabel="MAE (years)",
           title=PLOT_TITLES["mae_by_age"])
    return fig


def _error_hist_figure(error: np.ndarray):
    """Histogram of signed errors pred - true (N,) in 1-year bins, with the mean (bias) marked.

    A range wider than MAX_HIST_BINS years (a broken model) falls back to that many equal bins.
    """
    fig = _figure(6, 4)
    ax = fig.add_subplot()
    edges = np.arange(np.floor(error.min()), np.ceil(error.max()) + 2) - 0.5
    ax.hist(error, bins=edges if len(edges) <= MAX_HIST_BINS + 1 else MAX_HIST_BINS)
    ax.axvline(0, color="black", linewidth=1)
    ax.axvline(error.mean(), color="tab:red", linestyle="--", label=f"mean {error.mean():+.2f}")
    ax.set(xlabel="Predicted − true age (years)", ylabel="Samples", title=PLOT_TITLES["error_hist"])
    ax.legend()
    return fig


def _examples_figure(rows: list[dict], image_loader):
    """Two rows of thumbnails: the 8 smallest and the 8 largest absolute errors, captioned 'true/pred'.

    With fewer than 16 rows the two sets overlap.
    """
    order = sorted(rows, key=lambda r: abs(float(r["pred_age"]) - float(r["true_age"])))
    best, worst = order[:EXAMPLES_PER_ROW], order[::-1][:EXAMPLES_PER_ROW]
    fig = _figure(EXAMPLES_PER_ROW * 1.3, 3.2)
    axes = fig.subplots(2, EXAMPLES_PER_ROW, squeeze=False)
    for ax_row, examples, label in ((axes[0], best, "best"), (axes[1], worst, "worst")):
        ax_row[0].set_ylabel(label)
        for ax, row in zip(ax_row, examples):
            ax.imshow(_thumbnail(row["path"], image_loader))
            ax.set_title(f"{_age(row['true_age'])}/{_age(row['pred_age'])}", fontsize=8)
        for ax in ax_row:
            ax.set(xticks=[], yticks=[])
            if not ax.images:
                ax.set_frame_on(False)
    fig.suptitle(PLOT_TITLES["examples"] + " (true/pred)", fontsize=10)
    return fig


def _thumbnail(path, image_loader) -> np.ndarray:
    """(h, w, 3) uint8 thumbnail of the image, or a grey tile when it cannot be loaded."""

    try:
        image = Image.fromarray(np.asarray(image_loader(path), dtype=np.uint8))
    except Exception:  # noqa: BLE001 - a missing thumbnail must not cost the whole report
        return np.full((THUMB_PX, THUMB_PX, 3), 128, dtype=np.uint8)
    image.thumbnail((THUMB_PX, THUMB_PX))
    return np.asarray(image.convert("RGB"))


def _age(value) -> str:
    """'34' for whole ages, '34.6' otherwise."""
    value = float(value)
    return f"{value:.0f}" if value.is_integer() else f"{value:.1f}"
