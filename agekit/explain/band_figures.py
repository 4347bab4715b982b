"""Figures and the Markdown report of agekit.explain.bands (matplotlib, from the eval extra): aggregates only.

bands.png: one row per model, one column per age band: the band's mean normalised saliency map over the
canonical face layout (the template's 5 points and the face regions outlined; no face image).
deletion.png: |change in age| after deleting the most salient vs a random share of the face, per band.
channels.png: per band, the mean activation maps of the checkpoint layer's most band-selective channels.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from agekit.crop import TEMPLATE_112
from agekit.errors import AgekitError
from agekit.explain.geometry import TEMPLATE_REGIONS
from agekit.explain.render import smooth
from agekit.io import atomic_path, write_json_atomic, write_text_atomic


def _figure(width, height):
    try:
        from matplotlib.figure import Figure
    except ModuleNotFoundError:
        raise AgekitError("saliency draws its figures with matplotlib: pip install -e '.[eval]'") from None
    return Figure(figsize=(width, height), layout="constrained")


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def _template_points(spec):
    """Where the template's 5 points and region discs land in an "align" crop of spec (None otherwise)."""
    if spec.rule != "align":
        return None, []
    scale = spec.size / (112.0 * (1.0 + spec.margin))
    offset = (spec.size - 112.0 * scale) / 2.0
    dy = spec.shift * 112.0 * scale
    pts = TEMPLATE_112 * scale + offset
    pts[:, 1] -= dy
    discs = [((cx * scale + offset, cy * scale + offset - dy), r * scale)
             for d in TEMPLATE_REGIONS.values() for (cx, cy), r in d]
    return pts, discs


def bands_figure(result: dict):
    """Models x bands grid of mean maps, one colour scale per model row."""
    # matplotlib (the eval extra) is imported only when drawing
    from matplotlib.patches import Circle

    names = list(result["models"])
    bands = [b for b in next(iter(result["models"].values()))["bands"]]
    grid = result["protocol"]["occlusion"]["grid"]
    fig = _figure(2.2 * len(bands) + 0.8, 2.35 * len(names) + 0.5)
    axes = fig.subplots(len(names), len(bands), squeeze=False)
    for i, name in enumerate(names):
        model = result["models"][name]
        pts, discs = _template_points(result["specs"][name])
        shown = {b: smooth(model["bands"][b]["mean_map"], grid) for b in bands if b in model["bands"]}
        top = max(float(m.max()) for m in shown.values())
        for j, band in enumerate(bands):
            ax = axes[i][j]
            ax.set(xticks=[], yticks=[])
            if band not in model["bands"]:
                ax.set_frame_on(False)
                continue
            b = model["bands"][band]
            im = ax.imshow(shown[band], cmap="turbo", vmin=0, vmax=top)
            size = shown[band].shape[0]
            if pts is not None:
                ax.scatter(pts[:, 0], pts[:, 1], s=10, c="white", edgecolors="black", linewidths=0.5)
                for (cx, cy), r in discs:
                    ax.add_patch(Circle((cx, cy), r, fill=False, color="white", linewidth=0.5, alpha=0.6))
            ax.set(xlim=(-0.5, size - 0.5), ylim=(size - 0.5, -0.5))
            ax.set_title(f"{band} (n={b['n']})", fontsize=9)
            if j == 0:
                ax.set_ylabel(name, fontsize=9)
        fig.colorbar(im, ax=list(axes[i]), shrink=0.8, label="saliency / face mean")
    fig.suptitle("Mean occlusion saliency per age band over aligned faces (dots: template landmarks; circles: "
                 "the regions of the table)", fontsize=10)
    return fig


def deletion_figure(result: dict, fraction: float):
    """Grouped bars per band: salient vs random deletion, per model."""
    names = list(result["models"])
    bands = [b for b in next(iter(result["models"].values()))["bands"]] + ["all"]
    fig = _figure(1.1 * len(bands) + 2.5, 3.6)
    ax = fig.add_subplot()
    width = 0.8 / (2 * len(names))
    x = np.arange(len(bands))
    for i, name in enumerate(names):
        m = result["models"][name]

        def get(b, k, m=m):
            return (m["deletion"] if b == "all" else m["bands"].get(b, {}).get("deletion", {})).get(k, np.nan)

        ax.bar(x + (2 * i) * width - 0.4 + width / 2, [get(b, "salient_mean") for b in bands], width,
               label=f"{name}: most salient {fraction:.0%}")
        ax.bar(x + (2 * i + 1) * width - 0.4 + width / 2, [get(b, "random_mean") for b in bands], width,
               label=f"{name}: random {fraction:.0%}", alpha=0.6)
    ax.set_xticks(x, bands)
    ax.set(ylabel="mean |change in age| (years)", title="Deletion check: hiding the salient pixels vs random ones")
    ax.legend(fontsize=7)
    return fig


def channels_figure(channels: dict):
    """Rows: bands; columns: the layer's most band-selective channels' mean activation maps."""
    bands = list(channels["bands"])
    top = max(len(c["channels"]) for c in channels["bands"].values())
    fig = _figure(1.6 * top + 1, 1.7 * len(bands) + 0.5)
    axes = fig.subplots(len(bands), top, squeeze=False)
    for i, band in enumerate(bands):
        c = channels["bands"][band]
        for j in range(top):
            ax = axes[i][j]
            ax.set(xticks=[], yticks=[])
            if j >= len(c["channels"]):
                ax.set_frame_on(False)
                continue
            ax.imshow(c["mean_maps"][j], cmap="turbo")
            ax.set_title(f"ch {c['channels'][j]} (z {c['selectivity'][j]:+.1f})", fontsize=7)
            if j == 0:
                ax.set_ylabel(f"{band} (n={c['n']})", fontsize=8)
    fig.suptitle(f"{channels['layer']}: channels responding most to each band (mean activation maps)", fontsize=9)
    return fig


def _json_ready(result: dict) -> dict:
    models = {}
    for name, m in result["models"].items():
        bands = {b: {k: v for k, v in d.items() if k != "mean_map"} for b, d in m["bands"].items()}
        models[name] = {"n_faces": m["n_faces"], "deletion": m["deletion"], "bands": bands}
    out = {"protocol": result["protocol"], "models": models, "misses": result["misses"]}
    if "channels" in result:
        ch = result["channels"]
        out["channels"] = {"layer": ch["layer"], "bands": {b: {k: v for k, v in c.items() if k != "mean_maps"}
                                                           for b, c in ch["bands"].items()}}
    return out


def report_markdown(result: dict, files: dict) -> str:
    p = result["protocol"]
    lines = ["# Saliency per age band", "",
             (f"Dataset {p['dataset']} ({p['split']} split), up to {p['per_band']} faces per band "
              f"(seed {p['seed']}); {p['found']} faces found, {p['misses']} misses. Occlusion grid "
              f"{p['occlusion']['grid']} ({p['occlusion']['copies_per_face']} occluded copies per face), fill "
              f"{p['occlusion']['fill']}."), "",
             "| Model | method / backbone | file |", "|---|---|---|"]
    lines += [f"| {n} | {p['methods'][n]} | {p['models'][n]} |" for n in result["models"]]
    lines += ["", f"![mean saliency per band]({files['bands'].name})", "", "## Where the saliency lies", "",
              "Mean saliency inside each face region relative to the whole crop's mean (1.00 = average).", ""]
    for name, m in result["models"].items():
        bands = m["bands"]
        regions = next((list(b["region_shares"]) for b in bands.values() if b["region_shares"]), None)
        if not regions:
            continue
        lines += [f"### {name}", "", "| Band | n | MAE | " + " | ".join(regions) + " |",
                  "|---|---|---|" + "---|" * len(regions)]
        for band, b in bands.items():
            cells = [f"{b['region_shares'][r]:.2f}" for r in regions]
            lines.append(f"| {band} | {b['n']} | {b['mae']:.2f} | " + " | ".join(cells) + " |")
        lines.append("")
    frac = p["deletion"]["fraction"]
    lines += ["## Deletion check", "",
              (f"Mean |change in the estimated age| after hiding the most salient {frac:.0%} of the face's pixels "
               f"vs a random {frac:.0%} (mean of {p['deletion']['random_draws']} draws), filled with the "
               f"{p['deletion']['fill']} fill. Salient > random: share of faces where the salient deletion moved the "
               "estimate more. 95% interval: paired bootstrap of the mean difference."), "",
              "| Model | Band | n | Salient | Random | Ratio | Salient > random | Difference (95% CI) |",
              "|---|---|---|---|---|---|---|---|"]
    for name, m in result["models"].items():
        for band, d in [*((b, v["deletion"]) for b, v in m["bands"].items()), ("all", m["deletion"])]:
            lo, hi = d["difference_ci95"]
            ratio = "–" if d["ratio"] is None else f"{d['ratio']:.2f}"
            lines.append(f"| {name} | {band} | {d['n']} | {d['salient_mean']:.2f} | {d['random_mean']:.2f} | "
                         f"{ratio} | {d['salient_wins']:.0%} | {d['difference']:+.2f} ({lo:+.2f} to {hi:+.2f}) |")
    lines += ["", f"![deletion check]({files['deletion'].name})", ""]
    if "channels" in files:
        ch = result["channels"]
        lines += ["## Channels per band", "",
                  (f"Layer `{ch['layer']}` of {p['checkpoint']}: per band, the channels whose mean activation is "
                   "highest relative to all sampled faces (z: (band mean − overall mean) / overall std)."), "",
                  "| Band | n | channels (z) |", "|---|---|---|"]
        for band, c in ch["bands"].items():
            cells = ", ".join(f"{k} ({z:+.1f})" for k, z in zip(c["channels"], c["selectivity"]))
            lines.append(f"| {band} | {c['n']} | {cells} |")
        lines += ["", f"![channels per band]({files['channels'].name})", ""]
    return "\n".join(lines)


def write_band_report(out: Path, result: dict) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    files = {"bands": _save(bands_figure(result), out / "bands.png"),
             "deletion": _save(deletion_figure(result, result["protocol"]["deletion"]["fraction"]),
                               out / "deletion.png")}
    if "channels" in result:
        files["channels"] = _save(channels_figure(result["channels"]), out / "channels.png")
    files["json"] = out / "bands.json"
    write_json_atomic(files["json"], _json_ready(result))
    files["report"] = out / "bands.md"
    write_text_atomic(files["report"], report_markdown(result, files))
    return files


def load_json(path) -> dict:
    return json.loads(Path(path).read_text())
