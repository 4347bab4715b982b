"""Training throughput (images/s) with and without the preprocessing cache.

    python benchmarks/throughput.py --backbones light_cnn64 resnet18 --steps 20

For each backbone, the same short training run on the same UTKFace slice twice: "cached" reads crops from
the in-memory array, "uncached" decodes and crops every JPEG in 2 DataLoader workers on every batch (what
the cache removes). "loader only" times delivering one epoch of batches without training, which is the
ceiling the data path puts on any model. The one-off cache build is timed separately.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import date

from agekit.config import load_config
from agekit.crop import view_specs
from agekit.engine.data import BatchSource, load_splits
from agekit.engine.trainer import train
from agekit.machine import cpu_name
from agekit.io import write_json_atomic


def overrides(args, backbone, cache, cache_dir, run_dir):
    return [f"data.root={args.data}", f"data.cache={str(cache).lower()}", f"data.cache_dir={cache_dir}",
            f"data.crop.size={args.size}", f"data.limit_train={args.steps * args.batch}", "data.limit_eval=64",
            f"model.backbone={backbone}", f"train.batch_size={args.batch}", f"train.max_steps={args.steps}",
            "train.progress=false", "train.tensorboard=false", f"run_dir={run_dir}"]


def train_rate(args, backbone, cache, cache_dir) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        summary = train(load_config(None, overrides(args, backbone, cache, cache_dir, f"{tmp}/run")), progress=False)
    return {"images_per_s": summary["train_images_per_s"], "train_time_s": summary["train_time_s"],
            "precision": summary["precision"]}


def loader_rate(args, cache, cache_dir) -> float:
    cfg = load_config(None, overrides(args, "light_cnn64", cache, cache_dir, "unused"))
    data = load_splits(cfg, ("train",), None, progress=False)["train"]
    source = BatchSource(data, args.batch, shuffle=True, seed=0, specs=view_specs(cfg))
    t0, n = time.perf_counter(), 0
    for _, ages, _ in source.batches(0):
        n += len(ages)
    return round(n / (time.perf_counter() - t0), 1)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("AGEKIT_DATA", "../shared/data") + "/UTKFace")
    p.add_argument("--backbones", nargs="+", default=["light_cnn64", "resnet18"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--out", default="benchmarks/results/throughput.json")
    args = p.parse_args()
    result = {"command": f"python benchmarks/throughput.py --backbones {' '.join(args.backbones)} "
                         f"--steps {args.steps} --size {args.size} --batch {args.batch}",
              "date": date.today().isoformat(),
              "machine": f"{cpu_name()}, {os.cpu_count()} cores, {platform.system()}, torch threads default",
              "images": args.steps * args.batch, "input": args.size, "batch": args.batch, "runs": {}}
    with tempfile.TemporaryDirectory() as cache_dir:
        cfg = load_config(None, overrides(args, "light_cnn64", True, cache_dir, "unused"))
        t0 = time.perf_counter()
        load_splits(cfg, ("train",), None, progress=False)
        result["cache_build_s"] = round(time.perf_counter() - t0, 1)
        result["loader_only_images_per_s"] = {"cached": loader_rate(args, True, cache_dir),
                                              "uncached": loader_rate(args, False, cache_dir)}
        for backbone in args.backbones:
            cached = train_rate(args, backbone, True, cache_dir)
            uncached = train_rate(args, backbone, False, cache_dir)
            result["runs"][backbone] = {"cached": cached, "uncached": uncached,
                                        "speedup": round(cached["images_per_s"] / uncached["images_per_s"], 2)}
    write_json_atomic(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
