"""Memory of `agekit predict` as the batch grows: is it flat from 2,000 to 20,000 files?

    python benchmarks/predict_memory.py --sizes 2000 20000
    python benchmarks/predict_memory.py --sizes 2000 20000 --repo /path/to/other/checkout   # compare a version

Generates tiny noise PNGs (16x16, about 900 bytes each, in folders of 1,000, each with a hidden .done marker
that the summary counts as skipped) once under --work, then runs
`agekit predict FOLDERS --no-detect --output FMT --out FILE --threads 1 --no-progress` in a fresh process for
every (size, format). `--no-detect` makes every file one face, so each file produces a full result (age,
interval, gender, box; the FaceResult also holds the probability vector and the embedding), at about
13 ms a file with the packaged model. Reported per run:

- `peak_traced_mb`: the peak of Python-level allocations (tracemalloc, numpy arrays included), which is
  where results held until the end of the run would show;
- `max_rss_mb`: the process's peak resident memory (ru_maxrss, onnxruntime and the libraries included);
- the number of output rows, checked against the number of files.

The difference between the sizes is the part that grows with the batch.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DRIVER = r"""
import sys, tracemalloc
tracemalloc.start()
from agekit.cli import main
code = main(sys.argv[1:])
print("PEAK_TRACED", tracemalloc.get_traced_memory()[1], file=sys.stderr)
sys.exit(code)
"""

PER_FOLDER = 1000


def make_images(work: Path, n: int) -> list[Path]:
    """Folders of PER_FOLDER tiny PNGs, enough for n files; made once and reused."""
    import numpy as np
    from PIL import Image

    folders = []
    rng = np.random.default_rng(0)
    for k in range((n + PER_FOLDER - 1) // PER_FOLDER):
        folder = work / f"imgs{k:03d}"
        folders.append(folder)
        done = folder / ".done"
        if done.exists():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(PER_FOLDER):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / f"{k:03d}_{i:04d}.png")
        done.write_text("ok\n")
    return folders


def run_once(folders, fmt: str, out: Path, repo: str | None, model: str | None) -> dict:
    argv = ["predict", *map(str, folders), "--no-detect", "--output", fmt, "--out", str(out), "--threads", "1",
            "--no-progress"]
    if model:
        argv += ["--model", model]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if repo:
        env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    peak = next((int(line.split()[1]) for line in err.splitlines() if line.startswith("PEAK_TRACED")), None)
    if out.exists():
        text = out.read_text()
        rows = {"jsonl": lambda: len(text.splitlines()), "csv": lambda: len(text.splitlines()) - 1,
                "json": lambda: len(json.loads(text)), "table": lambda: len(text.splitlines()) - 1}[fmt]()
    else:
        rows = None
    return {"exit_code": proc.returncode, "rows": rows, "wall_s": round(wall, 1),
            "peak_traced_mb": None if peak is None else round(peak / 2**20, 1),
            "max_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: kilobytes
            "stderr_tail": err.strip().splitlines()[-2:]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    p.add_argument("--formats", nargs="+", default=["jsonl"], choices=["jsonl", "csv", "json", "table"])
    p.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "agekit-predict-memory"))
    p.add_argument("--repo", help="import agekit from this checkout instead (PYTHONPATH)")
    p.add_argument("--model", help="--model for agekit predict (default: the packaged model)")
    p.add_argument("--out", help="write the results as JSON here too")
    args = p.parse_args()
    work = Path(args.work)
    folders = make_images(work, max(args.sizes))
    runs = []
    for fmt in args.formats:
        for n in sorted(args.sizes):
            use = folders[: (n + PER_FOLDER - 1) // PER_FOLDER]
            with tempfile.TemporaryDirectory() as tmp:
                r = run_once(use, fmt, Path(tmp) / f"out.{fmt}", args.repo, args.model)
            r.update(files=len(use) * PER_FOLDER, format=fmt)
            runs.append(r)
            print(json.dumps(r), flush=True)
    result = {"command": "python benchmarks/predict_memory.py " + " ".join(sys.argv[1:]),
              "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                          "platform": platform.platform()},
              "repo": args.repo or str(Path(__file__).resolve().parents[1]), "runs": runs}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
