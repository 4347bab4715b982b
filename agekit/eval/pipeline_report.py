"""Markdown sections of the predict-pipeline evaluation (agekit.eval.pipeline): faces found, bias and
coverage per true-age band, MAE per group with intervals, age checks, image shifts.

Each function takes the `summarise` metrics dict (or a part of it) and returns one '## ' section; they
are appended to agekit.eval.report's standard sections.
"""
from __future__ import annotations

from agekit.eval.report import _percent, _table, _years

MISSES_LISTED = 10


def pipeline_sections(metrics: dict) -> list[str]:
    """Every section the metrics have data for, in reading order."""
    sections = [faces_section(metrics), band_section(metrics["by_band"]), coverage_section(metrics["coverage"])]
    groups = group_ci_section(metrics)
    if groups:
        sections.append(groups)
    sections.append(checks_section(metrics.get("thresholds") or {}, metrics["challenge25"]))
    if "shift" in metrics:
        sections.append(shift_section(metrics["shift"]))
    return sections


def faces_section(m: dict) -> str:
    """Images, faces found, misses, and the first missed images with their reasons."""
    rows = [("Images", str(m["images"])), ("Labelled face found", str(m["found"])),
            ("Misses (left out of every metric)", f"{m['misses']} ({_percent(m['miss_rate'])})")]
    text = "## Faces found\n\n" + _table(["", "Count"], rows)
    if m["missed"]:
        listed = m["missed"][:MISSES_LISTED]
        text += "\n\n" + _table(["Missed image", "Reason"], [(x["key"], x["reason"]) for x in listed])
        if len(m["missed"]) > len(listed):
            text += f"\n\n… and {len(m['missed']) - len(listed)} more (all in metrics.json, `missed`)."
    return text


def band_section(bands: dict) -> str:
    """Signed error (mean pred - true), MAE and interval coverage per true-age band."""
    rows = [(label, str(b["n"]), _years(b["mean_true"]), _years(b["mean_pred"]), _signed(b["signed_error"]),
             _years(b["mae"]), _percent(b["coverage"])) for label, b in bands.items()]
    return ("## By true-age band\n\nSigned error = mean(predicted − true): positive where the model makes people "
            "older, negative where it makes them younger. A model that pulls everyone toward its training bulk "
            "shows + in the young bands and − in the old.\n\n"
            + _table(["Band", "n", "Mean true", "Mean predicted", "Signed error", "MAE", "Interval coverage"], rows))


def coverage_section(c: dict) -> str:
    """The returned interval's coverage overall."""
    rows = [("Nominal level", _percent(c["level"])),
            ("Coverage (true age inside the interval)", _percent(c["coverage"])),
            ("Coverage − nominal", "–" if c["gap"] is None else f"{100 * c['gap']:+.1f} points"),
            ("Mean interval width (years)", _years(c["mean_width"])), ("Faces", str(c["n"]))]
    return "## Interval coverage\n\nThe interval AgeEstimator returns (split-conformal when the model is " \
           "calibrated).\n\n" + _table(["Measure", "Value"], rows)


def group_ci_section(m: dict) -> str | None:
    """MAE per gender and race with bootstrap 95% intervals; None when no group label is known."""
    rows = []
    for key, kind in (("mae_by_gender_ci", "gender"), ("mae_by_race_ci", "race")):
        for name, g in (m.get(key) or {}).items():
            lo, hi = g["mae_ci95"]
            rows.append((kind, name, str(g["n"]), f"{g['mae']:.2f} ({lo:.2f}–{hi:.2f})"))
    if not rows:
        return None
    return ("## MAE by group, with 95% intervals\n\nPercentile bootstrap, 1000 resamples within each group.\n\n"
            + _table(["Group", "Label", "n", "MAE (95% CI)"], rows))


def checks_section(thresholds: dict, challenge: dict) -> str:
    """One table per threshold (overall, then per gender and race) and the Challenge-25 line."""
    low, high = challenge["ages"]
    text = ("## Age checks\n\n"
            f"**Challenge {challenge['limit']:g}**: of the {challenge['n']} people aged {low}–{high}, "
            f"{_share(challenge)} have an estimated age under {challenge['limit']:g} (would be asked for ID).")
    if not thresholds:
        return text
    text += ("\n\n`AgeEstimator.check_age(face, T)` answers over / under / uncertain (over only when the whole "
             "interval is at or above T). Below T: *false pass* = answered over. At or above T: *false refuse* "
             "= answered under. Shares with Wilson 95% intervals.")
    header = ["Group", "n < T", "false pass", "refused", "uncertain", "n ≥ T", "false refuse", "passed",
              "uncertain"]
    for key, entry in thresholds.items():
        rows = [_check_row("all", entry["overall"])]
        rows += [_check_row(name, t) for name, t in entry.get("by_gender", {}).items()]
        rows += [_check_row(name, t) for name, t in entry.get("by_race", {}).items()]
        text += f"\n\n### T = {key}\n\n" + _table(header, rows)
    return text


def shift_section(shift: dict) -> str:
    """The shift table: one row per condition, the clean one first."""
    rows = []
    for name, s in shift.items():
        same = "–" if name == "clean" or s["delta_mae_common"] is None else \
            f"{s['clean_mae_common']:.2f} → {s['mae_common']:.2f} ({s['delta_mae_common']:+.2f})"
        rows.append((name, s["description"], f"{s['found']}/{s['images']}", str(s["misses"]), _years(s["mae"]),
                     same, _signed(s["signed_error"]), _percent(s["gender_accuracy"]), _percent(s["coverage"]),
                     _percent(s["flagged"])))
    return ("## Image shifts\n\nThe same images transformed before the pipeline (agekit.eval.shift). "
            "'Same faces' compares the clean and the shifted MAE over the images found in both runs, so the "
            "change is what the shift did to the estimates, not which faces the detector lost. Flagged: faces "
            "marked small or blurry.\n\n"
            + _table(["Condition", "What", "Found", "Misses", "MAE", "Same faces: clean → shifted (Δ)",
                      "Signed error", "Gender acc.", "Coverage", "Flagged"], rows))


def _check_row(name: str, t: dict) -> list:
    below, above = t["below"], t["at_or_above"]
    return [name, str(below["n"]), _share(below["false_pass"]), _share(below["refused"]),
            _share(below["uncertain"]), str(above["n"]), _share(above["false_refuse"]), _share(above["passed"]),
            _share(above["uncertain"])]


def _share(s: dict) -> str:
    """'12.5% (3.5–36.0)' for a thresholds.share dict; '–' when n = 0."""
    if s["share"] is None:
        return "–"
    lo, hi = s["ci95"]
    return f"{100 * s['share']:.1f}% ({100 * lo:.1f}–{100 * hi:.1f})"


def _signed(value) -> str:
    return "–" if value is None else f"{value:+.2f}"
