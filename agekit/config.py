"""Run configuration: defaults, YAML files (a path or a packaged config's name), `key.sub=value` overrides,
validation.

Unknown keys are errors (a typo must not silently fall back to a default); the free-form mappings
`method.params` and `data.options` take any keys because each method or reader defines its own.
"""
from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path

import yaml

from agekit.errors import AgekitError

FREE_FORM = {("method", "params"), ("data", "options")}

DEFAULTS: dict = {
    "name": "run",
    "seed": 0,
    "run_dir": None,  # default: runs/<name>
    "data": {
        "dataset": "utkface",
        "root": None,  # default: $AGEKIT_DATA/<dataset folder>
        "options": {},
        "split": {"kind": "file", "file": "utkface_v1", "fold": None, "k": 5, "seed": 0,
                  "val_fraction": 0.1, "test_fraction": 0.2},
        "crop": {"size": 64, "rule": "full", "margin": 0.4, "zoom": 1.0, "shift": 0.0},
        # where "align" crops get their landmarks: the dataset's own annotation, or the face detector that
        # `agekit predict` runs (detect), so that training sees exactly the crops prediction will make
        "landmarks": "dataset",
        "detector": "default",
        # more crops of the same face for multi-input models, e.g. [{size: 64, rule: full, zoom: 1.4}]:
        # each view gets its own backbone (stem) and their features are concatenated before the head
        "extra_views": [],
        # more datasets whose train and val splits join the main one's, e.g.
        # [{dataset: fgnet, split: {kind: file, file: fgnet_dev_v1}, repeat: 4}]; test stays the main one's
        "extra_datasets": [],
        # even out rare age bands / races in training by repeating their images (power 0 = off)
        "balance": {"by": ["age"], "power": 0.0, "max_repeat": 3.0},
        "cache": True,
        "cache_dir": None,  # default: $AGEKIT_CACHE or ~/.cache/agekit
        "limit_train": None,  # use only N training records (quick runs, tests)
        "limit_eval": None,
        "age_min": 0,
        "age_max": 100,
    },
    "model": {
        "backbone": "resnet18",
        "pretrained": False,
        "pool": "avg",
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    },
    "method": {"name": "dldl_v2", "params": {}},
    "gender": {"enabled": False, "weight": 1.0},
    # photo-domain options (all 0 = off): see agekit.data.augment.AugmentSpec
    "augment": {"enabled": True, "flip": 0.5, "rotate": 10.0, "scale": 0.1, "shift": 0.05,
                "brightness": 0.3, "contrast": 0.2, "landmark_jitter": 0.0, "grayscale": 0.0, "sepia": 0.0,
                "color_cast": 0.0, "gamma": 0.0, "blur": 0.0, "blur_sigma": 1.5, "noise": 0.0,
                "noise_std": 0.04, "lowres": 0.0, "lowres_min": 0.25, "jpeg": 0.0, "jpeg_quality": 15},
    "train": {
        "epochs": 30,
        "batch_size": 128,
        "eval_batch_size": 256,
        "optimizer": "adamw",
        "lr": 1e-3,
        # fine-tuning tiny pretrained weights: each backbone tensor steps relative_lr x its mean |w|
        "relative_lr": None,
        # converted weights without BN statistics (dlib_resnet_face): calibrate BN on this many crops first
        "bn_calibrate_images": 0,
        "weight_decay": 1e-4,
        "momentum": 0.9,
        "scheduler": "cosine",  # cosine | step | plateau | none
        "warmup_epochs": 0.0,
        "step_size": 10,
        "gamma": 0.1,
        "early_stop_patience": 0,  # epochs without validation-MAE gain; 0 = off
        "precision": "auto",  # auto | fp32 | bf16 | fp16
        "channels_last": "auto",  # auto: on for CUDA or bf16; fp32 CPU convs are often slower with it
        "device": "auto",  # auto | cpu | cuda | cuda:N | mps
        "max_steps": None,  # stop after this many optimizer steps
        "val_every_steps": None,  # also validate every N steps (default: each epoch end)
        "log_every_steps": 20,
        "num_threads": None,
        "init_from": None,  # checkpoint to fine-tune from (weights only)
        "init_head": True,  # with init_from: also take the age head (same method and label range)
        "resume": True,  # continue from run_dir/last.pt when it exists
        "tensorboard": True,
        "progress": True,
        "grad_clip": None,
    },
}


def _merge(base: dict, extra: dict, path=()) -> dict:
    for key, value in extra.items():
        here = path + (key,)
        name = ".".join(here)
        if key not in base:
            raise AgekitError(f"unknown config key '{name}'")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise AgekitError(f"config key '{name}' must be a mapping, got {value!r}")
            if here in FREE_FORM:
                base[key] = {**base[key], **value}
            else:
                _merge(base[key], value, here)
        else:
            base[key] = value
    return base


def parse_override(text: str) -> dict:
    """'train.lr=3e-4' -> {'train': {'lr': 0.0003}} (value parsed as YAML)."""
    if "=" not in text:
        raise AgekitError(f"override '{text}' must look like key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):
        value = yaml_number(value)
    out: dict = value
    for part in reversed(key.strip().split(".")):
        if not part:
            raise AgekitError(f"override '{text}' has an empty key part")
        out = {part: out}
    return out


def yaml_number(value: str):
    # YAML 1.1 reads '1e-3' as a string; users mean a number.
    try:
        return float(value) if any(c in value for c in "eE.") else value
    except ValueError:
        return value


def packaged_configs() -> dict[str, Path]:
    """The configs shipped in agekit/configs: {name: path}."""
    folder = resources.files("agekit") / "configs"
    return {p.name[:-5]: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


def resolve_config_path(name: str) -> Path:
    """A config file path, or the name of a packaged config (`agekit train --list-configs`)."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise AgekitError(f"config file not found: {path}")
        return path
    configs = packaged_configs()
    if name not in configs:
        raise AgekitError(f"no config file or packaged config named '{name}'; packaged: {', '.join(sorted(configs))}")
    return configs[name]


def load_config(path=None, overrides=()) -> dict:
    """Defaults <- YAML file <- overrides, validated."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise AgekitError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise AgekitError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise AgekitError(f"{path}: top level must be a mapping")
        _merge(cfg, _numbers(data))
    for text in overrides:
        _merge(cfg, parse_override(text))
    validate(cfg)
    return cfg


def _numbers(obj):
    if isinstance(obj, dict):
        return {k: _numbers(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_numbers(v) for v in obj]
    return yaml_number(obj) if isinstance(obj, str) else obj


def validate(cfg: dict) -> None:
    t, d = cfg["train"], cfg["data"]
    choices = {
        ("train", "optimizer"): ("adam", "adamw", "sgd"),
        ("train", "scheduler"): ("cosine", "step", "plateau", "none"),
        ("train", "precision"): ("auto", "fp32", "bf16", "fp16"),
        ("train", "channels_last"): ("auto", True, False),
        ("data", "landmarks"): ("dataset", "detect"),
    }
    for (section, key), allowed in choices.items():
        if cfg[section][key] not in allowed:
            raise AgekitError(f"config {section}.{key}={cfg[section][key]!r}: choose from {', '.join(allowed)}")
    for key in ("epochs", "batch_size", "eval_batch_size"):
        if not isinstance(t[key], int) or t[key] < 1:
            raise AgekitError(f"config train.{key} must be a positive integer, got {t[key]!r}")
    if not isinstance(t["lr"], (int, float)) or t["lr"] <= 0:
        raise AgekitError(f"config train.lr must be a positive number, got {t['lr']!r}")
    if d["landmarks"] == "detect" and d["crop"]["rule"] != "align":
        raise AgekitError("config data.landmarks=detect needs data.crop.rule=align (detected landmarks are "
                          "only used to align)")
    if not d["age_min"] < d["age_max"]:
        raise AgekitError(f"config data.age_min ({d['age_min']}) must be below data.age_max ({d['age_max']})")


def dump_config(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
