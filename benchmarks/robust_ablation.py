"""Ablation of the robust-model recipe (agekit/configs/agekit_default.yaml), judged on generalisation.

Each variant removes one ingredient of the recipe and is trained at a reduced budget (a seeded 3,000-image
subset of the UTKFace training split, plus the FG-NET development-train subjects when the variant has them,
2 epochs), exported with split-conformal calibration on its validation split, and scored through the real
predict pipeline (detector, alignment, ONNX model) on:
- the FG-NET test subjects of agekit/splits/fgnet_dev_v1.csv (never trained on): MAE, signed error, 90%
  interval coverage;
- a seeded subset of the UTKFace test split, clean and in grayscale: MAE, gender accuracy.

    python benchmarks/robust_ablation.py [--variants full,no_photo_aug,...] [--utk-limit 600] [--seeds 0]

Runs go to --work (default runs/robust-ablation/<variant>-s<seed>; a finished step is not redone); the
table goes to --out (default benchmarks/results/robust_ablation/results.{json,md}).
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET = ["data.limit_train=3000", "data.limit_eval=600", "train.epochs=2", "train.progress=false",
          "train.tensorboard=false"]
PHOTO_OFF = ["augment.landmark_jitter=0", "augment.grayscale=0", "augment.sepia=0", "augment.color_cast=0",
             "augment.gamma=0", "augment.blur=0", "augment.noise=0", "augment.lowres=0", "augment.jpeg=0"]
VARIANTS = {
    "full": ("the whole recipe", []),
    "no_photo_aug": ("without photo-domain augmentation and landmark jitter", PHOTO_OFF),
    "no_fgnet": ("UTKFace only (no FG-NET development-train subjects)", ["data.extra_datasets=[]"]),
    "no_balance": ("without age/race repeat-factor balancing", ["data.balance.power=0"]),
    "scratch": ("same network from random initialisation (no face-recognition weights)",
                ["model.backbone=dlib_resnet", "train.relative_lr=null", "train.bn_calibrate_images=0",
                 "train.lr=2e-3"]),
}


def run(cmd: list[str], log: Path) -> None:
    print("$", shlex.join(cmd), flush=True)
    with log.open("a") as f:
        f.write("$ " + shlex.join(cmd) + "\n")
        f.flush()
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {shlex.join(cmd)}; see {log}")


def metrics(path: Path) -> dict:
    return json.loads(path.read_text())["metrics"]


def one(variant: str, seed: int, work: Path, utk_limit: int) -> dict:
    desc, overrides = VARIANTS[variant]
    run_dir = work / f"{variant}-s{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "commands.log"
    t0 = time.time()
    if not (run_dir / "summary.json").is_file():
        run(["agekit", "train", "agekit_default", f"run_dir={run_dir}", f"seed={seed}", *BUDGET, *overrides], log)
    model = run_dir / "model.onnx"
    if not model.is_file():
        run(["agekit", "export", str(run_dir / "best.pt"), "--onnx", str(model), "--no-progress"], log)
    fg_dir, utk_dir = run_dir / "eval-fgnet-test", run_dir / "eval-utkface-test"
    if not (fg_dir / "metrics.json").is_file():
        run(["agekit", "eval", str(model), "--dataset", "fgnet", "--out", str(fg_dir), "--threads", "1",
             "--no-progress"], log)
    if not (utk_dir / "metrics.json").is_file():
        run(["agekit", "eval", str(model), "--dataset", "utkface", "--limit", str(utk_limit), "--shift", "grayscale",
             "--out", str(utk_dir), "--threads", "1", "--no-progress"], log)
    fg, utk = metrics(fg_dir / "metrics.json"), metrics(utk_dir / "metrics.json")
    gray = utk["shift"]["grayscale"]
    return {"variant": variant, "seed": seed, "description": desc, "overrides": overrides,
            "fgnet_test": {"n": fg["n"], "mae": fg["mae"], "signed_error": fg["signed_error"],
                           "coverage": fg["coverage"]["coverage"]},
            "utkface_test": {"n": utk["n"], "mae": utk["mae"], "gender_accuracy": utk.get("gender_accuracy"),
                             "grayscale_mae": gray["mae"], "grayscale_gender_accuracy": gray["gender_accuracy"]},
            "seconds": round(time.time() - t0, 1)}


def table(rows: list[dict]) -> str:
    head = ("| variant | FG-NET test MAE | signed | 90% coverage | UTKFace MAE | gray MAE | gender | gray gender |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- |\n")
    lines = []
    for r in rows:
        f, u = r["fgnet_test"], r["utkface_test"]
        lines.append(f"| {r['variant']} (seed {r['seed']}) | {f['mae']:.2f} | {f['signed_error']:+.2f} | "
                     f"{f['coverage']:.3f} | {u['mae']:.2f} | {u['grayscale_mae']:.2f} | "
                     f"{u['gender_accuracy']:.3f} | {u['grayscale_gender_accuracy']:.3f} |")
    return head + "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seeds", default="0", help="comma-separated seeds")
    p.add_argument("--utk-limit", type=int, default=600)
    p.add_argument("--work", default="runs/robust-ablation")
    p.add_argument("--out", default="benchmarks/results/robust_ablation")
    args = p.parse_args(argv)
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name in names:
            rows.append(one(name, seed, Path(args.work), args.utk_limit))
            result = {"command": shlex.join(["python", "benchmarks/robust_ablation.py", *(argv or sys.argv[1:])]),
                      "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                      "machine": f"{platform.processor() or platform.machine()}, {platform.node()}",
                      "budget": BUDGET, "rows": rows}
            (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
            (out / "results.md").write_text(f"# Robust-model ablation\n\nCommand: `{result['command']}` "
                                            f"({result['date']})\n\nBudget: `{' '.join(BUDGET)}`\n\n" + table(rows))
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
