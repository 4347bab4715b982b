"""`agekit bench`: every method under one protocol, resumable, with a table that says what it measured.

A benchmark is a plan of runs. Each run is one (row, seed) — or (row, seed, held-out subject) for FG-NET
leave-one-person-out — and lives in its own folder under OUT/runs/. The protocol (the resolved base config
without the method) is the same for every run; a row fixes the method and its parameters.

- Done = the run folder holds summary.json (training finished) and eval/metrics.json (test evaluated); done
  runs are never redone. A run with only last.pt resumes from it (the trainer does that); a run with
  summary.json but no eval/metrics.json is only evaluated again.
- A run folder whose config.yaml differs from what the plan asks for is an error, not silently reused:
  the table must only ever mix runs of one protocol.
- After every run (and on Ctrl-C or a failure) the table is rebuilt from whatever has finished.
"""
from __future__ import annotations

import copy
import datetime
import inspect
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from agekit.config import _yaml_number, load_config, validate
from agekit.errors import AgekitError

log = logging.getLogger(__name__)

PROTOCOLS = ("standard", "fgnet_lopo")
DEFAULT_BASE = {"standard": "bench_cpu", "fgnet_lopo": "fgnet_lopo_finetune"}
# Config keys that do not change what a run computes; ignored when checking a run folder against the plan.
COSMETIC_KEYS = {("train", "progress"), ("train", "tensorboard"), ("train", "log_every_steps"),
                 ("train", "num_threads"), ("data", "cache"), ("data", "cache_dir")}
# Keys a bench sets per run; overriding them for the whole bench makes no sense.
PER_RUN_KEYS = ("method", "seed", "run_dir", "name")
# Sweep/param names that mean the label range (data.age_min/age_max). The number of discrete labels of the
# softmax methods is their own parameter `step` (years between labels): --sweep dldl_v2.step=1,2,5,10.
LABEL_RANGE_KEYS = ("age_min", "age_max")


@dataclass
class BenchOptions:
    protocol: str = "standard"
    methods: str | None = None  # 'all' | 'a,b' | None (all, or none when sweeping)
    data: str | None = None
    root: str | None = None
    backbone: str | None = None
    epochs: int | None = None
    seeds: list = field(default_factory=lambda: [0])
    size: int | None = None
    base: str | None = None
    out: str | None = None
    overrides: list = field(default_factory=list)
    method_params: str | None = None
    sweeps: list = field(default_factory=list)
    pretrained: list = field(default_factory=list)
    folds: int | None = None
    progress: bool = True
    eval_report: bool = True  # per-run report with plots and predictions.csv, or metrics.json only
    command: str = "agekit bench"


# ------------------------------------------------------------------------------------------ parsing

def parse_seeds(text) -> list[int]:
    """'3' -> [0, 1, 2] (a count); '0,4,7' or '3,' -> those seeds."""
    text = str(text).strip()
    try:
        if "," in text:
            seeds = [int(s) for s in text.split(",") if s.strip()]
        else:
            seeds = list(range(int(text)))
    except ValueError:
        raise AgekitError(f"--seeds {text!r}: give a count (3 = seeds 0,1,2) or a list (0,4,7)") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise AgekitError(f"--seeds {text!r}: need at least one seed, no repeats, none negative")
    return seeds


def _value(text: str):
    text = text.strip()
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        value = text
    return _yaml_number(value) if isinstance(value, str) else value


def method_names() -> list[str]:
    from agekit.methods import METHODS

    return sorted(METHODS)


def check_method(name: str) -> str:
    known = method_names()
    if name not in known:
        raise AgekitError(f"unknown method '{name}'; known: {', '.join(known)}")
    return name


def method_param_names(name: str) -> list[str]:
    """The keyword parameters of a method's constructor (what method.params may set)."""
    from agekit.methods import METHODS

    sig = inspect.signature(METHODS[check_method(name)].__init__)
    skip = {"self", "in_features", *LABEL_RANGE_KEYS}
    return [p for p in sig.parameters if p not in skip
            and sig.parameters[p].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]


def check_param(method: str, param: str) -> None:
    if param in LABEL_RANGE_KEYS:
        return
    names = method_param_names(method)
    if param not in names:
        hint = ""
        if param in ("label_step", "step", "num_labels", "num_classes"):
            hint = (f" (the number of discrete labels is set by the label interval: {method}.step=1,2,5,10; "
                    f"or vary the label range with {method}.age_min=... / {method}.age_max=...)"
                    if "step" in names else
                    f" ({method} has no label grid; vary its label range with {method}.age_min=... or "
                    f"{method}.age_max=...)")
        raise AgekitError(f"method '{method}' has no parameter '{param}'; its parameters: "
                          f"{', '.join(names) or 'none'}{hint}")


def parse_methods(text: str | None, sweeping: bool) -> list[str]:
    if text is None:
        return [] if sweeping else method_names()
    text = text.strip()
    if text == "all":
        return method_names()
    names = []
    for name in (n.strip() for n in text.split(",")):
        if name and name not in names:
            names.append(check_method(name))
    if not names:
        raise AgekitError("--methods is empty; give 'all' or names such as dldl_v2,regression")
    return names


def parse_method_params(text: str | None) -> dict[str, dict]:
    """'dldl_v2:lam=0.5,sigma=3;soft_labels:g=5' -> {'dldl_v2': {'lam': 0.5, 'sigma': 3}, 'soft_labels': {'g': 5}}."""
    out: dict[str, dict] = {}
    for part in (p.strip() for p in (text or "").split(";")):
        if not part:
            continue
        if ":" not in part:
            raise AgekitError(f"--method-params '{part}': expected METHOD:key=value[,key=value]")
        method, rest = (s.strip() for s in part.split(":", 1))
        check_method(method)
        for item in (i.strip() for i in rest.split(",")):
            if not item:
                continue
            if "=" not in item:
                raise AgekitError(f"--method-params '{part}': '{item}' must look like key=value")
            key, raw = (s.strip() for s in item.split("=", 1))
            check_param(method, key)
            out.setdefault(method, {})[key] = _value(raw)
    return out


def parse_sweep(text: str) -> tuple[str, str, list[tuple[str, object]]]:
    """'dldl_v2.lam=0.1,1,10' -> ('dldl_v2', 'lam', [('0.1', 0.1), ('1', 1), ('10', 10)])."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise AgekitError(f"--sweep '{text}': expected METHOD.PARAM=v1,v2,... (e.g. dldl_v2.lam=0.1,1,10)")
    key, raw = text.split("=", 1)
    method, param = (s.strip() for s in key.split(".", 1))
    check_method(method)
    check_param(method, param)
    values = [(v.strip(), _value(v)) for v in raw.split(",") if v.strip()]
    if not values:
        raise AgekitError(f"--sweep '{text}': no values")
    return method, param, values


def slug(text: str) -> str:
    """A folder-safe name: 'dldl_v2[lam=0.1]' -> 'dldl_v2.lam=0.1'."""
    text = text.replace("[", ".").replace("]", "").replace(",", ".")
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text).strip("._") or "run"


# ------------------------------------------------------------------------------------------ planning

@dataclass
class Plan:
    kind: str
    out_dir: Path
    protocol_cfg: dict  # resolved base config (the full one, method included as the base had it)
    variants: list  # [{'name', 'method', 'params', 'data', 'slug', ...}]
    runs: list  # [{'name', 'seed', 'fold', 'run_dir', 'cfg'}]
    seeds: list
    command: str
    folds: list = field(default_factory=list)
    checkpoints: list = field(default_factory=list)


def _base_path(name: str | None, kind: str) -> Path:
    from agekit.commands.train import resolve_config_path

    return resolve_config_path(name or DEFAULT_BASE[kind])


def _check_overrides(overrides) -> None:
    for text in overrides:
        key = text.split("=", 1)[0].strip()
        if key.split(".")[0] in PER_RUN_KEYS:
            raise AgekitError(f"override '{text}': the bench sets '{key.split('.')[0]}' per run; use --methods, "
                              "--method-params, --sweep, --seeds or --out")


def _protocol_config(opts: BenchOptions) -> dict:
    _check_overrides(opts.overrides)
    cfg = load_config(_base_path(opts.base, opts.protocol), opts.overrides)
    if opts.data:
        if opts.data != cfg["data"]["dataset"]:
            cfg["data"]["options"] = {}
        cfg["data"]["dataset"] = opts.data
    if opts.root:
        cfg["data"]["root"] = str(opts.root)
    if opts.backbone:
        cfg["model"]["backbone"] = opts.backbone
    if opts.epochs is not None:
        cfg["train"]["epochs"] = int(opts.epochs)
    if opts.size is not None:
        cfg["data"]["crop"]["size"] = int(opts.size)
    validate(cfg)
    return cfg


def _run_config(protocol_cfg: dict, variant: dict, seed: int, run_dir: Path, fold=None) -> dict:
    cfg = copy.deepcopy(protocol_cfg)
    cfg["method"] = {"name": variant["method"], "params": dict(variant["params"])}
    cfg["data"].update(variant.get("data", {}))
    cfg["seed"] = int(seed)
    cfg["name"] = f"bench-{run_dir.parent.name if fold is not None else run_dir.name}" + (
        f"-{fold}" if fold is not None else "")
    cfg["run_dir"] = str(run_dir)
    if fold is not None:
        cfg["data"]["split"]["fold"] = str(fold)
    if variant.get("init_from"):
        cfg["train"]["init_from"] = variant["init_from"]
    validate(cfg)
    return cfg


def _check_variant(cfg: dict, variant: dict) -> None:
    """Fail before any training when a method's parameters are bad (wrong value, label range)."""
    from agekit.methods import create_method

    d = {**cfg["data"], **variant.get("data", {})}
    if not d["age_min"] < d["age_max"]:
        raise AgekitError(f"row '{variant['name']}': age_min ({d['age_min']}) must be below age_max ({d['age_max']})")
    create_method(variant["method"], 8, d["age_min"], d["age_max"], **variant["params"])


def plan_standard(opts: BenchOptions) -> Plan:
    for flag, value in (("--pretrained", opts.pretrained), ("--folds", opts.folds)):
        if value:
            raise AgekitError(f"{flag} belongs to --protocol fgnet_lopo")
    cfg = _protocol_config(opts)
    sweeps = [parse_sweep(s) for s in opts.sweeps]
    methods = parse_methods(opts.methods, sweeping=bool(sweeps))
    extra = parse_method_params(opts.method_params)
    base_method = cfg["method"]["name"]

    def params_for(method):
        own = dict(cfg["method"]["params"]) if method == base_method else {}
        return {**own, **extra.get(method, {})}

    variants = [{"name": m, "method": m, "params": params_for(m), "data": {}} for m in methods]
    for method, param, values in sweeps:
        for raw, value in values:
            v = {"name": f"{method}[{param}={raw}]", "method": method, "params": params_for(method), "data": {}}
            if param in LABEL_RANGE_KEYS:
                v["data"] = {param: value}
            else:
                v["params"] = {**v["params"], param: value}
            variants.append(v)
    if not variants:
        raise AgekitError("nothing to run: give --methods and/or --sweep")
    names = [v["name"] for v in variants]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise AgekitError(f"row {dupes[0]!r} is asked for twice")
    for v in variants:
        v["slug"] = slug(v["name"])
        _check_variant(cfg, v)
    _check_backbone(cfg, variants[0])
    out_dir = Path(opts.out or Path("runs") / f"bench-{cfg['data']['dataset']}-{slug(cfg['model']['backbone'])}")
    runs = []
    for seed in opts.seeds:  # seed-major: an interrupted bench has whole seeds done first
        for v in variants:
            run_dir = out_dir / "runs" / f"{v['slug']}-s{seed}"
            runs.append({"name": v["name"], "seed": seed, "fold": None, "run_dir": run_dir,
                         "cfg": _run_config(cfg, v, seed, run_dir)})
    return Plan("standard", out_dir, cfg, variants, runs, list(opts.seeds), opts.command)


def _check_backbone(cfg: dict, variant: dict) -> None:
    from agekit.models import list_backbones

    name = cfg["model"]["backbone"]
    if not (name.startswith("timm:") or name in list_backbones()):
        raise AgekitError(f"unknown backbone '{name}'; known: {', '.join(sorted(list_backbones()))} (or timm:<name>)")


def lopo_crop(base: dict, pretrained: dict) -> dict:
    """The fine-tuning crop: the checkpoint's input size (and other crop settings), aligned on FG-NET's landmarks.

    A checkpoint trained on aligned crops keeps its own window (margin and shift belong together); one
    trained on whole chips gets the base config's aligned margin and no shift.
    """
    window = ("margin", "shift")
    crop = {**base, **{k: v for k, v in pretrained.items() if k not in ("rule", *window)}, "rule": "align"}
    if pretrained.get("rule") == "align":
        crop.update({k: pretrained[k] for k in window if k in pretrained})
    else:
        crop["shift"] = 0.0
    return crop


def plan_lopo(opts: BenchOptions) -> Plan:
    from agekit.data.records import AGE_VALID_RANGE, read_dataset
    from agekit.engine.checkpoint import read_checkpoint
    from agekit.engine.data import data_root

    if opts.methods or opts.method_params or opts.sweeps:
        raise AgekitError("with --protocol fgnet_lopo the method comes from each --pretrained checkpoint; "
                          "--methods, --method-params and --sweep do not apply")
    if not opts.pretrained:
        raise AgekitError("--protocol fgnet_lopo needs --pretrained CHECKPOINT (fine-tuned on each fold)")
    cfg = _protocol_config(opts)
    ckpts = []
    for path in opts.pretrained:
        ckpt_cfg = read_checkpoint(path)["config"]
        ckpts.append((str(Path(path).resolve()), ckpt_cfg))
    first = ckpts[0][1]
    for path, c in ckpts[1:]:
        for key in ("backbone",):
            if c["model"][key] != first["model"][key]:
                raise AgekitError(f"{path}: backbone {c['model'][key]} differs from {first['model'][key]} of the "
                                  "first checkpoint; one bench compares methods on one backbone")
        if c["data"]["crop"]["size"] != first["data"]["crop"]["size"]:
            raise AgekitError(f"{path}: input size differs from the first checkpoint's")
    if opts.backbone and opts.backbone != first["model"]["backbone"]:
        raise AgekitError(f"--backbone {opts.backbone}: the checkpoint's backbone is {first['model']['backbone']}")
    if opts.size and int(opts.size) != int(first["data"]["crop"]["size"]):
        raise AgekitError(f"--size {opts.size}: the checkpoint was trained at {first['data']['crop']['size']}")
    # the checkpoint fixes the network and its input: backbone, pooling, normalisation, crop size, labels
    for key in ("backbone", "pool", "mean", "std"):
        cfg["model"][key] = copy.deepcopy(first["model"][key])
    cfg["model"]["pretrained"] = False
    cfg["data"]["crop"] = lopo_crop(cfg["data"]["crop"], first["data"]["crop"])
    if "extra_views" in first["data"] and "extra_views" in cfg["data"]:
        cfg["data"]["extra_views"] = copy.deepcopy(first["data"]["extra_views"])
    cfg["data"]["age_min"], cfg["data"]["age_max"] = first["data"]["age_min"], first["data"]["age_max"]
    cfg["data"]["split"]["kind"] = "lopo"
    cfg["train"]["init_from"] = None
    validate(cfg)

    d = cfg["data"]
    records = read_dataset(d["dataset"], data_root(cfg), **d["options"]).records
    subjects = sorted({str(r.subject) for r in records
                       if r.subject is not None and AGE_VALID_RANGE[0] <= r.age <= AGE_VALID_RANGE[1]})
    if not subjects:
        raise AgekitError(f"{data_root(cfg)}: dataset '{d['dataset']}' has no subject ids; "
                          "leave-one-person-out needs them")
    if opts.folds is not None:
        if opts.folds < 1:
            raise AgekitError("--folds must be at least 1")
        subjects = subjects[:opts.folds]

    variants = []
    for path, c in ckpts:
        name = c["method"]["name"]
        if any(v["name"] == name for v in variants):
            name = f"{name}@{Path(path).parent.name}"
        variants.append({"name": name, "method": c["method"]["name"], "params": dict(c["method"]["params"]),
                         "data": {}, "init_from": path, "slug": slug(name)})
    out_dir = Path(opts.out or Path("runs") / f"bench-fgnet_lopo-{slug(cfg['model']['backbone'])}")
    runs = []
    for seed in opts.seeds:
        for v in variants:
            for subject in subjects:
                run_dir = out_dir / "runs" / f"{v['slug']}-s{seed}" / slug(subject)
                runs.append({"name": v["name"], "seed": seed, "fold": subject, "run_dir": run_dir,
                             "cfg": _run_config(cfg, v, seed, run_dir, fold=subject)})
    return Plan("fgnet_lopo", out_dir, cfg, variants, runs, list(opts.seeds), opts.command, folds=subjects,
                checkpoints=[p for p, _ in ckpts])


def make_plan(opts: BenchOptions) -> Plan:
    if opts.protocol not in PROTOCOLS:
        raise AgekitError(f"unknown protocol '{opts.protocol}'; choose from {', '.join(PROTOCOLS)}")
    return plan_lopo(opts) if opts.protocol == "fgnet_lopo" else plan_standard(opts)


# ------------------------------------------------------------------------------------------ run state

def _comparable(cfg: dict) -> dict:
    cfg = json.loads(json.dumps(cfg, default=str))
    for section, key in COSMETIC_KEYS:
        cfg.get(section, {}).pop(key, None)
    return cfg


MISSING = "<missing>"


def _default_at(path):
    from agekit.config import DEFAULTS

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


def _read_json(path: Path):
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
    summary, ev = _read_json(rd / "summary.json"), _read_json(eval_dir(run) / "metrics.json")
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


# ------------------------------------------------------------------------------------------ results

def build_results(plan: Plan) -> dict:
    from agekit import __version__
    from agekit.bench.table import summarize_rows

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
    from agekit.bench.table import write_results

    return write_results(plan.out_dir, build_results(plan), with_plot=with_plot)


# ------------------------------------------------------------------------------------------ running

def _train(cfg: dict, progress: bool) -> dict:
    from agekit.engine.trainer import train

    return train(cfg, progress=progress)


def _evaluate(run: dict, latency: bool, progress: bool, report: bool = True) -> dict:
    """Test-split evaluation of the run's best.pt into run_dir/eval/ (full report, or metrics.json only)."""
    from agekit.engine.evaluate import evaluate_checkpoint
    from agekit.io import write_json_atomic

    device = str(run["cfg"]["train"]["device"])
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    result = evaluate_checkpoint(run["run_dir"] / "best.pt", split="test", out_dir=eval_dir(run) if report else None,
                                 device=device if device.startswith("cuda") else "cpu", latency=latency,
                                 progress=progress)
    if not report:
        write_json_atomic(eval_dir(run) / "metrics.json", {"title": f"{run['name']} seed {run['seed']}",
                                                           "metrics": result["metrics"],
                                                           "protocol": result["protocol"],
                                                           "complexity": result["complexity"]})
    return result


def _row_has_latency(plan: Plan, run: dict) -> bool:
    for other in plan.runs:
        if other["name"] == run["name"] and other is not run and is_done(other):
            ev = _read_json(eval_dir(other) / "metrics.json") or {}
            if ev.get("complexity"):
                return True
    return False


def execute(plan: Plan, progress: bool = True, eval_report: bool = True) -> dict:
    """Train and evaluate every unfinished run of the plan; rebuild the tables after each. Returns the results."""
    for run in plan.runs:
        check_run_folder(run)
    todo = [r for r in plan.runs if not is_done(r)]
    log.info("bench: %d runs planned, %d already finished, %d to do -> %s", len(plan.runs),
             len(plan.runs) - len(todo), len(todo), plan.out_dir)
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    failures = []
    try:
        for i, run in enumerate(todo, 1):
            label = f"{run['name']} seed {run['seed']}" + (f" fold {run['fold']}" if run["fold"] is not None else "")
            log.info("bench [%d/%d] %s", i, len(todo), label)
            error_file = run["run_dir"] / "bench_error.txt"
            try:
                if not (run["run_dir"] / "summary.json").is_file():
                    _train(run["cfg"], progress)
                result = _evaluate(run, latency=not _row_has_latency(plan, run), progress=progress,
                                   report=eval_report)
                error_file.unlink(missing_ok=True)
                log.info("bench %s: test MAE %.3f", label, result["metrics"]["mae"])
            except (AgekitError, KeyboardInterrupt):
                raise
            except Exception as exc:  # one method failing must not lose the others' results
                log.exception("bench %s failed", label)
                run["run_dir"].mkdir(parents=True, exist_ok=True)
                message = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
                error_file.write_text(message + "\n")
                failures.append((label, message))
            write_tables(plan, with_plot=False)
    except KeyboardInterrupt:
        log.warning("bench interrupted: finished runs are kept and the interrupted one saved its last.pt; "
                    "run the same command to continue")
        raise
    finally:
        results = build_results(plan)
        from agekit.bench.table import write_results

        write_results(plan.out_dir, results)
    if failures:
        raise AgekitError(f"{len(failures)} of {len(todo)} runs failed (first: {failures[0][0]}: {failures[0][1]}); "
                          f"the others are in {plan.out_dir / 'results.md'}; run the same command to retry")
    return results


def run_bench(opts: BenchOptions) -> dict:
    plan = make_plan(opts)
    return {"plan": plan, "results": execute(plan, progress=opts.progress, eval_report=opts.eval_report)}
