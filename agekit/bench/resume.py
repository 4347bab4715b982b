"""Run state on disk, which makes a bench resumable.

- Done = the run folder holds summary.json (training finished) and eval/metrics.json (test evaluated); done
  runs are never redone. A run with only last.pt resumes from it (the trainer does that); a run with
  summary.json but no eval/metrics.json is only evaluated again.
- A run folder whose config.yaml differs from what the plan asks for is an error, not silently reused:
  the table must only ever mix runs of one protocol.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from agekit.config import DEFAULTS
from agekit.errors import AgekitError

# Config keys that do not change what a run computes; ignored when checking a run folder against the plan.
COSMETIC_KEYS = {("train", "progress"), ("train", "tensorboard"), ("train", "log_every_steps"),
                 ("train", "num_threads"), ("data", "cache"), ("data", "cache_dir")}


def _comparable(cfg: dict) -> dict:
    cfg = json.loads(json.dumps(cfg, default=str))
    for section, key in COSMETIC_KEYS:
        cfg.get(section, {}).pop(key, None)
    return cfg


MISSING = "<missing>"


def _default_at(path):

    node = DEFAULTS
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return MISSING
        node = node[key]
    return node


def _differences(old, new, path=()) -> list[str]:
    """Differences between two configs; a key the older run's config lacks counts as equal when the plan
    holds its default (a setting added to agekit later, which defaults to the earlier behaviour)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _differences(old.get(key, MISSING), new.get(key, MISSING), path + (str(key),))
        return out
    if old == MISSING and new != MISSING and _same(json.loads(json.dumps(_default_at(path), default=str)), new):
        return []
    if not _same(old, new):
        return [f"{'.'.join(path)}: {old!r} there, {new!r} now"]
    return []


def _same(a, b) -> bool:
    numbers = isinstance(a, (int, float)) and isinstance(b, (int, float))
    return a == b or (numbers and float(a) == float(b))


def check_run_folder(run: dict) -> None:
    """A run folder made under another protocol must not be reused (its numbers would enter the table)."""
    path = run["run_dir"] / "config.yaml"
    if not path.is_file():
        return
    try:
        old = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        raise AgekitError(f"{path}: unreadable; delete the folder {run['run_dir']} to redo that run") from None
    diffs = _differences(_comparable(old), _comparable(run["cfg"]))
    if diffs:
        more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
        raise AgekitError(f"{run['run_dir']} was trained under a different configuration ({diffs[0]}{more}); "
                          "use another --out, or delete that folder to redo the run")


def read_json(path: Path):
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def eval_dir(run: dict) -> Path:
    return run["run_dir"] / "eval"


def is_done(run: dict) -> bool:
    return (run["run_dir"] / "summary.json").is_file() and (eval_dir(run) / "metrics.json").is_file()


def run_record(run: dict, variant: dict) -> dict:
    """What the table needs from one run, read from its folder."""
    rd = run["run_dir"]
    rec = {"name": run["name"], "method": variant["method"], "params": variant["params"], "seed": run["seed"],
           "fold": run["fold"], "run_dir": str(rd)}
    summary, ev = read_json(rd / "summary.json"), read_json(eval_dir(run) / "metrics.json")
    error = rd / "bench_error.txt"
    if summary is None or ev is None:
        if error.is_file():
            rec.update(status="failed", error=error.read_text().strip().splitlines()[-1][:300])
        elif summary is not None:
            rec["status"] = "trained, not evaluated"
        elif (rd / "last.pt").is_file():
            rec["status"] = "interrupted"
        else:
            rec["status"] = "pending"
        return rec
    m, cx = ev["metrics"], ev.get("complexity")
    rec.update(status="done", test_mae=m["mae"], test_mae_ci95=m.get("mae_ci95"), test_rmse=m.get("rmse"),
               cs5=m["cs"]["5"], epsilon_error=m.get("epsilon_error"), gender_accuracy=m.get("gender_accuracy"),
               n_test=m["n"], train_time_s=summary["train_time_s"], best_val_mae=summary["best_val_mae"],
               best_step=summary.get("best_step"), steps=summary["steps"],
               epochs_completed=summary.get("epochs_completed"), n_train=summary.get("n_train"),
               n_val=summary.get("n_val"), split=summary.get("split"), device=summary.get("device"),
               precision=summary.get("precision"),
               n_params=cx["params"] if cx else None, gmacs=cx["gmacs"] if cx else None,
               latency_ms=cx["latency_ms_median"] if cx else None, cpu=cx["cpu"] if cx else None)
    return rec
