"""Do the explain maps mean something? The deletion check, and the per-band saliency figures for docs/.

    python benchmarks/explain_deletion.py --per-band 40 --checkpoint runs/agekit_default/best.pt

For each model (default: the two packaged models, `default` = dlib ResNet DLDL-v2 and `fast` = ResNet-10t
DLDL-v2; the repository holds no trained model of another method, so the comparison is between backbones of
one method), a seeded sample of --per-band faces per age band of the UTKFace test split (agekit/splits/
utkface_v1.csv) is found with the first model's detector and explained by occlusion (agekit.explain.bands).
Deletion check: the most salient 10% of each aligned face's pixels vs a random 10% (3 draws), filled with
the face's mean colour; mean |change in the estimated age| for both. Writes
benchmarks/results/explain_deletion.json and .md, and the aggregate figures (bands.png, deletion.png,
channels.png: mean maps only, no dataset face) into docs/img/explain/.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from datetime import date
from pathlib import Path

from agekit import machine

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="default,fast")
    parser.add_argument("--per-band", type=int, default=40)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--checkpoint", help="training checkpoint of the first model (channels per band)")
    parser.add_argument("--data", help="UTKFace folder (default $AGEKIT_DATA/UTKFace)")
    parser.add_argument("--figures", default=str(ROOT / "docs" / "img" / "explain"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "explain_deletion"))
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    args = parser.parse_args()

    from agekit.explain.band_figures import _json_ready
    from agekit.explain.bands import run_bands, write_bands

    t0 = time.perf_counter()
    result = run_bands(args.models.split(","), dataset="utkface", root=args.data, split="test",
                       per_band=args.per_band, fraction=args.fraction, threads=args.threads,
                       checkpoint=args.checkpoint, progress=True)
    seconds = time.perf_counter() - t0
    figures = Path(args.figures)
    files = write_bands(figures, result)
    data = _json_ready(result)
    data["run"] = {"command": "python benchmarks/explain_deletion.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None and k not in ("figures", "out")),
        "seconds": round(seconds, 1), "date": str(date.today()), "machine": machine.describe(),
        "cpus": os.cpu_count(), "note": "2-vCPU VM shared with other jobs"}
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    report = files["report"].read_text().replace("](", "](../../docs/img/explain/")
    out.with_suffix(".md").write_text(report + f"\n\nRun: `{data['run']['command']}`, {seconds / 60:.1f} min on a "
                                      f"{data['run']['note']}, {data['run']['date']}.\n")
    print(f"{seconds:.0f} s; wrote {out.with_suffix('.json')}, {out.with_suffix('.md')} and {figures}")


if __name__ == "__main__":
    main()
