"""A bench's plan: the protocol (the resolved base config without the method), its rows (method and
parameters) and its runs, one per (row, seed), or (row, seed, held-out subject) for FG-NET
leave-one-person-out, each with its own folder under OUT/runs/ and its full config."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from agekit.bench.parsing import (
    LABEL_RANGE_KEYS,
    BenchOptions,
    parse_method_params,
    parse_methods,
    parse_sweep,
    slug,
)
from agekit.config import load_config, resolve_config_path, validate
from agekit.data.records import AGE_VALID_RANGE, read_dataset
from agekit.errors import AgekitError

PROTOCOLS = ("standard", "fgnet_lopo")
DEFAULT_BASE = {"standard": "bench_cpu", "fgnet_lopo": "fgnet_lopo_finetune"}
# Keys a bench sets per run; overriding them for the whole bench makes no sense.
PER_RUN_KEYS = ("method", "seed", "run_dir", "name")


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
