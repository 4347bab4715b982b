"""Training throughput (images/s) with and without the preprocessing cache.

    python benchmarks/throughput.py --data ../shared/data/UTKFace --steps 60

Both runs train the same model on the same UTKFace slice; "uncached" decodes and crops every JPEG in
DataLoader workers on every batch (what the cache removes), "cached" reads crops from the in-memory array.
The cache build itself is timed separately (it happens once per dataset, size and crop rule).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

from agekit.config import load_config
from agekit.engine.trainer import train
from agekit.eval.complexity import cpu_name
from agekit.io import write_json_atomic


def run(data: str, steps: int, backbone: str, size: int, batch: int, cache: bool, cache_dir: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(None, [
            f"data.root={data}", f"data.cache={str(cache).lower()}", f"data.cache_dir={cache_dir}",
            f"data.crop.size={size}", f"data.limit_train={steps * batch}", "data.limit_eval=64",
            f"model.backbone={backbone}", f"train.batch_size={batch}", f"train.max_steps={steps}",
            "train.progress=false", "train.tensorboard=false", f"run_dir={tmp}/run"])
        summary = train(cfg, progress=False)
    return {"images_per_s": summary["train_images_per_s"], "train_time_s": summary["train_time_s"],
            "steps": summary["steps"], "precision": summary["precision"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("AGEKIT_DATA", "../shared/data") + "/UTKFace")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--out", default="benchmarks/results/throughput.json")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as cache_dir:
        t0 = time.perf_counter()
        cached = run(args.data, args.steps, args.backbone, args.size, args.batch, True, cache_dir)
        build_and_train = time.perf_counter() - t0
        cached = run(args.data, args.steps, args.backbone, args.size, args.batch, True, cache_dir)  # warm cache
        uncached = run(args.data, args.steps, args.backbone, args.size, args.batch, False, cache_dir)
    result = {
        "command": "python benchmarks/throughput.py " + " ".join(
            f"--{k} {v}" for k, v in vars(args).items() if k not in ("data", "out")),
        "date": date.today().isoformat(), "machine": f"{cpu_name()}, {os.cpu_count()} cores, {platform.system()}",
        "backbone": args.backbone, "input": args.size, "batch": args.batch, "steps": args.steps,
        "cached": cached, "uncached": uncached,
        "speedup": round(cached["images_per_s"] / uncached["images_per_s"], 2),
        "first_run_with_cache_build_s": round(build_and_train, 1),
    }
    write_json_atomic(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
