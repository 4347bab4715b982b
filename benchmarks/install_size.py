"""How big is an agekit install? A fresh virtual environment, a normal `pip install` (dependencies included),
then the size of its site-packages and of the biggest installed distributions; optionally the start-up time
of `agekit --version` there.

    python benchmarks/install_size.py                         # predict-only: pip install <this checkout>
    python benchmarks/install_size.py --extras train          # the training install
    python benchmarks/install_size.py --venv /tmp/v --reuse   # measure an existing environment again
    python benchmarks/install_size.py --spec "agekit==0.1.0"  # anything pip accepts

Sizes are bytes on disk of the files (apparent sizes, as `du --apparent-size`), in MB (10^6 bytes). A
distribution's size is the sum of the files its RECORD lists (console scripts in bin/ included); the
site-packages total also counts what no RECORD lists (e.g. bytecode written later).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run by the environment's own python: one row per installed distribution, and site-packages.
PROBE = r"""
import json, os, sys, sysconfig
from importlib import metadata
site = sysconfig.get_paths()["purelib"]
rows = []
for dist in metadata.distributions():
    size = 0
    for f in dist.files or []:
        try:
            size += os.path.getsize(dist.locate_file(f))
        except OSError:
            pass
    rows.append({"name": dist.metadata["Name"], "version": dist.version, "bytes": size})
total = 0
for folder, _, files in os.walk(site):
    for name in files:
        try:
            total += os.lstat(os.path.join(folder, name)).st_size
        except OSError:
            pass
print(json.dumps({"site_packages": site, "total_bytes": total, "python": sys.version.split()[0], "dists": rows}))
"""


def mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def make_venv(venv: Path, spec: str, quiet: bool) -> float:
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv_python(venv))
    t0 = time.perf_counter()
    cmd = [py, "-m", "pip", "install", "--disable-pip-version-check"] + (["-q"] if quiet else []) + [spec]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def measure(venv: Path) -> dict:
    out = subprocess.run([str(venv_python(venv)), "-c", PROBE], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def startup(venv: Path, runs: int = 5) -> dict:
    """Wall time of `agekit --version` (the console script of the environment), median of `runs` after one
    warm-up run (so the page cache is warm and bytecode is written)."""
    exe = venv / ("Scripts/agekit.exe" if os.name == "nt" else "bin/agekit")
    subprocess.run([str(exe), "--version"], check=True, capture_output=True)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([str(exe), "--version"], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return {"command": f"{exe} --version", "runs": runs, "median_s": round(statistics.median(times), 3),
            "times_s": [round(t, 3) for t in times]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", default="/tmp/agekit-install-size", help="environment folder (replaced unless --reuse)")
    parser.add_argument("--spec", help=f"what to pip install (default: this checkout, {ROOT})")
    parser.add_argument("--extras", help="extras of this checkout, e.g. train")
    parser.add_argument("--reuse", action="store_true", help="measure the existing --venv, install nothing")
    parser.add_argument("--top", type=int, default=15, help="list this many of the biggest distributions")
    parser.add_argument("--startup", action="store_true", help="also time `agekit --version` (median of 5)")
    parser.add_argument("--json", help="also write the numbers to this file")
    parser.add_argument("-q", "--quiet", action="store_true", help="pip -q")
    args = parser.parse_args(argv)
    venv = Path(args.venv)
    spec = args.spec or (f"{ROOT}[{args.extras}]" if args.extras else str(ROOT))
    seconds = None
    if not args.reuse:
        seconds = make_venv(venv, spec, args.quiet)
    info = measure(venv)
    dists = sorted(info["dists"], key=lambda d: -d["bytes"])
    print(f"\n{spec} into a fresh venv (Python {info['python']})" + (f", pip took {seconds:.0f} s" if seconds else ""))
    print(f"site-packages: {mb(info['total_bytes'])} in {info['site_packages']}, {len(dists)} distributions")
    print(f"{'distribution':32s} {'version':>14s} {'size':>12s}")
    for d in dists[: args.top]:
        print(f"{d['name']:32s} {d['version']:>14s} {mb(d['bytes']):>12s}")
    rest = dists[args.top:]
    if rest:
        print(f"{f'({len(rest)} others)':32s} {'':>14s} {mb(sum(d['bytes'] for d in rest)):>12s}")
    result = {"spec": spec, "python": info["python"], "site_packages_bytes": info["total_bytes"],
              "pip_seconds": None if seconds is None else round(seconds, 1),
              "distributions": [{k: d[k] for k in ("name", "version", "bytes")} for d in dists]}
    if args.startup:
        result["startup"] = startup(venv)
        s = result["startup"]
        print(f"agekit --version: median {s['median_s']:.3f} s of {s['runs']} ({', '.join(map(str, s['times_s']))})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
