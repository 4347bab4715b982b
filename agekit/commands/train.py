"""agekit train CONFIG [key.sub=value ...]"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from agekit.config import load_config, packaged_configs, resolve_config_path

log = logging.getLogger(__name__)


def register(sub):
    p = sub.add_parser("train", help="train an age estimator from a YAML config",
                       description="Train an age estimator. CONFIG is a YAML file or the name of a packaged "
                                   "config (see `agekit train --list-configs`); key.sub=value pairs override it. "
                                   "Under torchrun it runs DistributedDataParallel.")
    p.add_argument("config", nargs="?", help="config file or packaged config name")
    p.add_argument("overrides", nargs="*", help="overrides such as train.epochs=5 data.root=/data/UTKFace")
    p.add_argument("--run-dir", help="where to write checkpoints and logs (default runs/<name>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--list-configs", action="store_true", help="list the packaged configs and exit")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.list_configs:
        for name, path in sorted(packaged_configs().items()):
            print(f"{name:32s} {path}")
        return 0
    from agekit.engine.trainer import train

    overrides = list(args.overrides) + ([f"run_dir={args.run_dir}"] if args.run_dir else [])
    config = args.config
    if config and "=" in config and not Path(config).exists():
        config, overrides = None, [config] + overrides  # no config file: defaults plus overrides
    cfg = load_config(resolve_config_path(config) if config else None, overrides)
    summary = train(cfg, progress=not args.no_progress)
    if summary.get("world_size", 1) == 1 or _is_rank0():
        print(json.dumps({k: summary[k] for k in ("run_dir", "best_val_mae", "steps", "train_time_s",
                                                  "train_images_per_s")}, indent=2))
    return 0


def _is_rank0() -> bool:

    return os.environ.get("RANK", "0") == "0"
