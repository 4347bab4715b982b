"""`agekit predict FOLDER --workers N`: wall time of the whole command, one process against several.

    python benchmarks/predict_workers.py [--chips 40 1000] [--photos 200] [--rounds 5] \
        [--configs "--workers 1" "--workers 2" ...]

The folders: for each --chips N, N UTKFace chips (200x200 JPEGs, a seeded subset of $AGEKIT_DATA/UTKFace,
copied to a temporary folder and deleted after; nothing of them is kept); for each --photos N, N copies of
examples/astronaut.jpg (512x512) scaled to 256-512 px and flipped every other one (more pixels to search
per face). Each configuration is `python -m agekit predict FOLDER --output
jsonl --out TMP --no-progress` plus its options, timed end to end (start-up and model loads included: that is
what a user waits for); the configurations run in turn, round after round, so they see the same machine
load (the development machine is shared), and every output is compared with the first configuration's
(the same rows, in the same order). Reports medians, each configuration's speed-up over the first (median of
the per-round ratios) and the load average before and after; writes --out (.json and .md beside it).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = HERE / "results" / "predict_workers.json"
DEFAULT_CONFIGS = ("--workers 1", "--workers auto", "--workers 1 --threads 1", "--workers 2", "--workers 2 --threads 2")


def make_folder(folder: Path, kind: str, n: int, data: Path, seed: int) -> str:
    if kind == "chips":
        utk = data / "UTKFace"
        if not utk.is_dir():
            raise SystemExit(f"--chips needs the UTKFace folder: {utk} not found (--data, or use --photos)")
        names = sorted(p.name for p in utk.iterdir() if p.suffix.lower() == ".jpg")
        for name in random.Random(seed).sample(names, min(n, len(names))):
            shutil.copyfile(utk / name, folder / name)
        return f"{min(n, len(names))} UTKFace chips (200x200 JPEG, seed {seed})"
    from PIL import Image

    image = Image.open(ROOT / "examples" / "astronaut.jpg").convert("RGB")
    for i in range(n):
        scale = 0.5 + 0.5 * (i % 5) / 4
        im = image.resize((int(image.width * scale), int(image.height * scale)))
        (im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if i % 2 else im).save(folder / f"{i:05d}.jpg", quality=90)
    return f"{n} copies of examples/astronaut.jpg (256-512 px, flipped every other)"


def run_once(folder: Path, options: str, out: Path) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # agekit's own thread default
    cmd = [sys.executable, "-m", "agekit", "predict", str(folder), "--output", "jsonl", "--out", str(out),
           "--no-progress", *shlex.split(options)]
    start = time.perf_counter()
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return seconds, hashlib.sha256(out.read_bytes()).hexdigest()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("AGEKIT_DATA", str(ROOT.parent / "shared" / "data")))
    p.add_argument("--chips", type=int, nargs="*", default=[40, 1000], help="folder sizes of UTKFace chips")
    p.add_argument("--photos", type=int, nargs="*", default=[200], help="folder sizes of astronaut photos")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS),
                   help="option strings, one per configuration; the first is the reference")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return p.parse_args(argv)


def measure(work: Path, kind: str, n: int, args) -> dict:
    folder = work / f"{kind}-{n}"
    folder.mkdir()
    described = make_folder(folder, kind, n, Path(args.data), args.seed)
    n_files = len(list(folder.iterdir()))
    run_once(folder, args.configs[0], work / "warm.jsonl")  # page cache and .pyc files warm
    times = {c: [] for c in args.configs}
    digests = {c: set() for c in args.configs}
    loads = []
    for r in range(args.rounds):
        loads.append(os.getloadavg()[0])
        for c in args.configs:
            seconds, digest = run_once(folder, c, work / "out.jsonl")
            times[c].append(seconds)
            digests[c].add(digest)
            print(f"{described}: round {r + 1}: {c}: {seconds:.2f} s", file=sys.stderr)
    shutil.rmtree(folder)
    reference = args.configs[0]
    results = []
    for c in args.configs:
        ratios = [ref / t for ref, t in zip(times[reference], times[c])]
        results.append({"options": c, "seconds": [round(t, 3) for t in times[c]],
                        "median_s": round(statistics.median(times[c]), 3),
                        "images_per_s": round(n_files / statistics.median(times[c]), 1),
                        "speedup_vs_first": round(statistics.median(ratios), 3)})
    return {"folder": described, "files": n_files, "load_1min_before_each_round": loads,
            "same_output_as_first": all(d == digests[reference] and len(d) == 1 for d in digests.values()),
            "results": results}


def main(argv=None) -> int:
    from agekit import machine, markdown

    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="agekit-workers-"))
    load_start = list(os.getloadavg())
    try:
        folders = [measure(work, kind, n, args) for kind, sizes in (("chips", args.chips), ("photos", args.photos))
                   for n in sizes]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_end = list(os.getloadavg())
    report = {
        "command": " ".join(["python benchmarks/predict_workers.py", *map(shlex.quote, argv or sys.argv[1:])]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine.describe(),
        "load_average_at_start": load_start, "load_average_at_end": load_end, "rounds": args.rounds,
        "timed": "wall time of the whole `python -m agekit predict FOLDER --output jsonl --out FILE` (start-up, "
                 "model loads, all files), OMP_NUM_THREADS unset",
        "folders": folders,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    text = (f"# `agekit predict --workers`\n\n{report['date']}, {report['machine'].get('cpu')} "
            f"({report['machine'].get('cores')} cores, shared with other jobs), load average {load_start[0]:.2f} "
            f"at start, {load_end[0]:.2f} at end; {args.rounds} interleaved rounds; {report['timed']}.\n")
    for f in folders:
        rows = [[f"`{r['options']}`", f"{r['median_s']:.2f}", f"{r['images_per_s']:.0f}",
                 f"{r['speedup_vs_first']:.2f}x"] for r in f["results"]]
        loads = f["load_1min_before_each_round"]
        text += (f"\n## {f['folder']}\n\nload average {min(loads):.2f}-{max(loads):.2f} before the rounds\n\n"
                 + markdown.table(["options", "median s", "images/s", "speed-up (median of per-round ratios)"], rows)
                 + f"\n\nOutputs identical to the first configuration's: "
                   f"{'yes' if f['same_output_as_first'] else 'NO'}.\n")
    text += f"\nCommand: `{report['command']}`\n"
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0 if all(f["same_output_as_first"] for f in folders) else 1


if __name__ == "__main__":
    sys.exit(main())
