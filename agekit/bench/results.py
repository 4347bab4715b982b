"""A bench's results: every run's record read from its folder, the rows summarised, the protocol spelled
out (results.json, results.md, results.png via agekit.bench.table)."""
from __future__ import annotations

import copy
import datetime

from agekit import __version__
from agekit.bench.planning import PER_RUN_KEYS, Plan
from agekit.bench.resume import run_record
from agekit.bench.table import summarize_rows, write_results


def build_results(plan: Plan) -> dict:

    by_name = {v["name"]: v for v in plan.variants}
    runs = [run_record(r, by_name[r["name"]]) for r in plan.runs]
    lopo = plan.kind == "fgnet_lopo"
    rows = summarize_rows(plan.variants, runs, lopo=lopo)
    by_row = {r["name"]: r for r in rows}
    for rec in runs:  # size and speed are measured once per row; every run of the row carries them
        row = by_row[rec["name"]]
        if rec["status"] == "done":
            rec["n_params"] = rec["n_params"] if rec["n_params"] is not None else row["n_params"]
            rec["gmacs"] = rec.get("gmacs") if rec.get("gmacs") is not None else row["gmacs"]
            rec["latency_ms"] = row["latency_ms"]
            rec["latency_measured_on"] = row["latency_measured_on"]
    protocol = {k: copy.deepcopy(v) for k, v in plan.protocol_cfg.items() if k not in PER_RUN_KEYS}
    if lopo:
        protocol["data"]["split"].pop("fold", None)
        protocol["train"].pop("init_from", None)
    done = [r for r in runs if r["status"] == "done"]
    headers = []
    for r in done:
        if r.get("split") not in headers:
            headers.append(r.get("split"))
    if not lopo:
        protocol["split_rule"] = headers[0] if len(headers) == 1 else headers or None
    kind_title = "FG-NET leave-one-person-out" if lopo else plan.protocol_cfg["data"]["dataset"]
    return {
        "title": f"agekit bench: {kind_title}, {plan.protocol_cfg['model']['backbone']}, "
                 f"{plan.protocol_cfg['data']['crop']['size']}px",
        "protocol_kind": plan.kind,
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "agekit_version": __version__,
        "command": plan.command,
        "seeds": plan.seeds,
        "folds": plan.folds if lopo else None,
        "pretrained": plan.checkpoints if lopo else None,
        "protocol": protocol,
        "protocol_notes": _protocol_notes(plan, done, headers),
        "rows": rows,
        "runs": runs,
    }


def _protocol_notes(plan: Plan, done: list, headers: list) -> list[str]:
    from agekit.engine.data import data_root

    c, d, t = plan.protocol_cfg, plan.protocol_cfg["data"], plan.protocol_cfg["train"]
    crop = d["crop"]
    notes = [f"data: `{d['dataset']}` at `{data_root(c)}`, labels = integer ages {d['age_min']}..{d['age_max']}"]
    steps = sorted({float(v["params"]["step"]) for v in plan.variants if "step" in v["params"]} - {1.0})
    if steps:
        notes[-1] += (" (rows with `step`: one label every " + ", ".join(f"{s:g}" for s in steps)
                      + " years; their decoded probabilities are mapped onto the integer ages, mean kept exactly)")
    if plan.kind == "fgnet_lopo":
        notes.append(f"split: leave-one-person-out, {len(plan.folds)} folds (held-out subjects "
                     f"{', '.join(plan.folds[:6])}{', ...' if len(plan.folds) > 6 else ''}); validation = a seeded "
                     f"{d['split'].get('val_fraction')} share of the other subjects")
        notes.append("fine-tuned from: " + ", ".join(f"`{p}`" for p in plan.checkpoints)
                     + " (train.init_from; backbone, input size, normalisation and label range taken from it)")
    else:
        split = headers[0] if len(headers) == 1 else None
        if split:
            notes.append("split: " + ", ".join(f"{k}={v}" for k, v in split.items()) + " — the same for every run")
        elif len(headers) > 1:
            notes.append(f"WARNING: the finished runs used {len(headers)} different split rules: {headers}")
        sizes = sorted({(r.get("n_train"), r.get("n_val"), r["n_test"]) for r in done}, key=str)
        if sizes:
            notes.append("images train/val/test: " + "; ".join(f"{a}/{b}/{n}" for a, b, n in sizes)
                         + (" (data.limit_train draws the training subset per seed; every method sees the same "
                            "subset for a given seed)" if d["limit_train"] else ""))
    notes.append(f"backbone: `{c['model']['backbone']}` (pretrained: {c['model']['pretrained']}, pool: "
                 f"{c['model']['pool']}), input {crop['size']}x{crop['size']}, crop rule `{crop['rule']}`")
    aug = c["augment"]
    notes.append("augmentation: " + ("off" if not aug["enabled"] else
                                     ", ".join(f"{k}={v}" for k, v in aug.items() if k != "enabled")))
    budget = f"{t['epochs']} epochs" + (f", at most {t['max_steps']} steps" if t["max_steps"] else "")
    notes.append(f"schedule: {budget}, batch {t['batch_size']}, {t['optimizer']} lr {t['lr']} wd "
                 f"{t['weight_decay']}, {t['scheduler']} schedule, warm-up {t['warmup_epochs']} epochs, "
                 f"early stop patience {t['early_stop_patience']}, precision {t['precision']}")
    notes.append(f"gender head: {'on' if c['gender']['enabled'] else 'off'}"
                 + (f" (loss weight {c['gender']['weight']})" if c["gender"]["enabled"] else ""))
    notes.append(f"seeds: {', '.join(str(s) for s in plan.seeds)} (the seed sets initialisation, batch order and "
                 "augmentation; nothing else varies between the seeds)")
    notes.append("model selection: each run's best.pt (lowest validation MAE) is evaluated once on the whole "
                 "test split" + (" (the held-out subject)" if plan.kind == "fgnet_lopo" else ""))
    devices = sorted({f"{r.get('device')}/{r.get('precision')}" for r in done})
    cpus = sorted({r["cpu"] for r in done if r.get("cpu")})
    if devices:
        notes.append(f"trained on: {', '.join(devices)}; latency CPU: {', '.join(cpus) or '—'}")
    return notes


def write_tables(plan: Plan, with_plot: bool = True) -> dict:

    return write_results(plan.out_dir, build_results(plan), with_plot=with_plot)
