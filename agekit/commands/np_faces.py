"""agekit np-faces: leave-one-person-out evaluation of the personalised face NP on FG-NET;
agekit np-bank: fit the face NP on every FG-NET subject and save it (.npz) for `agekit predict --context-dir`."""
from __future__ import annotations

import datetime
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

from agekit import machine
from agekit.errors import AgekitError
from agekit.personalise.evaluate import evaluate_lopo
from agekit.personalise.features import fgnet_features
from agekit.personalise.fit import FitConfig, fit_face_np
from agekit.personalise.report import write_outputs

log = logging.getLogger(__name__)

DEFAULT_KS = (1, 2, 4, 8)
PLOT_DPI = 90


def _default_data() -> Path:
    return Path(os.environ.get("AGEKIT_DATA", "../shared/data")) / "FGNET"


def register(sub):
    p = sub.add_parser(
        "np-faces", help="evaluate the personalised face NP on FG-NET (leave one person out)",
        description="Leave-one-person-out on FG-NET with the frozen features of an agekit model: the model's "
                    "own estimate, a global ridge model, the multi-task NP without context and with k labelled "
                    "photos of the test person. Writes OUT/results.json, OUT/results.md and OUT/mae_vs_k.png. "
                    "See docs/neural_processes.md.")
    p.add_argument("--checkpoint", "--model", dest="checkpoint", required=True,
                   help="the encoder: an agekit checkpoint (.pt) or an ONNX model from `agekit export` (.onnx)")
    p.add_argument("--data", default=None, help="FG-NET folder (default: $AGEKIT_DATA/FGNET or ../shared/data/FGNET)")
    p.add_argument("--out", default="runs/np_faces", help="output folder (default: runs/np_faces)")
    p.add_argument("--k", default=",".join(map(str, DEFAULT_KS)),
                   help="context sizes, comma-separated (default: 1,2,4,8)")
    p.add_argument("--draws", type=int, default=5, help="random contexts per subject and k (default: 5)")
    p.add_argument("--folds", type=int, default=None, help="only the first N subjects as test folds (quick runs)")
    p.add_argument("--subjects", default=None,
                   help="use only these subjects, comma-separated ids, e.g. 001,002,003 (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed for contexts, fits and training (default: 0)")
    p.add_argument("--steps", type=int, default=None, help="Adam steps for W (default: agekit.personalise.fit)")
    p.add_argument("--target", choices=("log", "linear"), default=None,
                   help="regress log(1 + age) (default) or age")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--no-cache", action="store_true", help="recompute the encoder features")
    p.set_defaults(func=run_eval)

    b = sub.add_parser(
        "np-bank", help="fit the face NP on all FG-NET subjects and save it for personalised prediction",
        description="Fit the multi-task face NP (global model, subject bank, similarity layer, priors) on the "
                    "features of every FG-NET subject and save it as a small .npz that numpy alone can run "
                    "(agekit.runtime.personal.Personalizer; `agekit predict --context-dir`). Use the same model file "
                    "(or its checkpoint) that will make the predictions.")
    b.add_argument("--checkpoint", "--model", dest="checkpoint", required=True,
                   help="the encoder: an agekit checkpoint (.pt) or an ONNX model from `agekit export` (.onnx)")
    b.add_argument("--data", default=None, help="FG-NET folder (default: $AGEKIT_DATA/FGNET or ../shared/data/FGNET)")
    b.add_argument("--out", required=True, help="output .npz file, e.g. agekit/weights/agekit-default.np.npz")
    b.add_argument("--subjects", default=None, help="use only these subjects, comma-separated ids (default: all)")
    b.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    b.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    b.add_argument("--no-cache", action="store_true", help="recompute the encoder features")
    b.set_defaults(func=run_bank)


def parse_ks(text: str) -> tuple:
    try:
        ks = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise AgekitError(f"--k must be comma-separated whole numbers, got {text!r}") from None
    if not ks or any(k < 1 for k in ks) or len(set(ks)) != len(ks):
        raise AgekitError(f"--k must list distinct context sizes >= 1, got {text!r}")
    return tuple(sorted(ks))


def parse_subjects(text):
    if text is None:
        return None
    subjects = [v.strip() for v in text.split(",") if v.strip()]
    if len(subjects) < 3:
        raise AgekitError(f"--subjects needs at least 3 subject ids (comma-separated), got {text!r}")
    return subjects


def _check_common(args) -> Path:
    data = Path(args.data) if args.data else _default_data()
    if not data.is_dir():
        raise AgekitError(f"FG-NET not found at {data} (give --data or set AGEKIT_DATA)")
    if not Path(args.checkpoint).is_file():
        raise AgekitError(f"encoder model not found: {args.checkpoint}")
    if args.threads < 1:
        raise AgekitError(f"--threads must be >= 1, got {args.threads}")
    return data


def _set_threads(n: int) -> None:
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass


def _fit_config(args, **extra):

    cfg = FitConfig(seed=args.seed, **extra)
    if getattr(args, "steps", None) is not None:
        if args.steps < 0:
            raise AgekitError(f"--steps must be >= 0, got {args.steps}")
        cfg.steps = args.steps
    if getattr(args, "target", None):
        cfg.target = args.target
    return cfg


def _command_line(args) -> str:
    """The command that reproduces this run (options at their defaults left out)."""
    parts = ["agekit np-faces", f"--checkpoint {args.checkpoint}"]
    if args.data:
        parts.append(f"--data {args.data}")
    parts.append(f"--out {args.out}")
    defaults = {"k": ",".join(map(str, DEFAULT_KS)), "draws": 5, "folds": None, "subjects": None, "seed": 0,
                "steps": None,
                "target": None, "threads": 1}
    for name, default in defaults.items():
        value = getattr(args, name)
        if value != default:
            parts.append(f"--{name} {value}")
    if args.no_cache:
        parts.append("--no-cache")
    return " ".join(parts)


def run_eval(args) -> int:
    ks = parse_ks(args.k)
    data = _check_common(args)
    if args.draws < 1:
        raise AgekitError(f"--draws must be >= 1, got {args.draws}")
    if args.folds is not None and args.folds < 1:
        raise AgekitError(f"--folds must be >= 1, got {args.folds}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise AgekitError(f"--out {out} exists and is not a folder")
    cfg = _fit_config(args)
    _set_threads(args.threads)

    t0 = time.perf_counter()
    ff = fgnet_features(args.checkpoint, data, use_cache=not args.no_cache, subjects=parse_subjects(args.subjects))
    feat_s = time.perf_counter() - t0
    log.info("%d images of %d subjects, %d features each (%.1f s)", len(ff), len(set(ff.subjects.tolist())),
             ff.features.shape[1], feat_s)

    def progress(i, n, subject, maes):
        if i == n or i % 10 == 0:
            log.info("fold %d/%d (subject %s)", i, n, subject)

    results = evaluate_lopo(ff, cfg, ks=ks, draws=args.draws, seed=args.seed, folds=args.folds, progress=progress)
    results.update({
        "command": _command_line(args),
        "encoder": ff.info["encoder"], "data": {"root": str(data), "images": len(ff),
                                                  "subjects": len(set(ff.subjects.tolist())),
                                                  "skipped_no_landmarks": ff.info["skipped_no_landmarks"],
                                                  "skipped_unreadable": ff.info.get("skipped_unreadable", [])},
        "protocol": {"ks": list(ks), "draws": args.draws, "seed": args.seed, "folds": args.folds,
                     "fit": asdict(cfg)},
        "default_variant": cfg.variant, "min_context": cfg.min_context,
        "feature_seconds": round(feat_s, 1), "seconds_total": round(time.perf_counter() - t0, 1),
        "machine": machine.describe(), "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    })
    files = write_outputs(out, results)
    s = results["summary"]
    print(f"{'k':>3s} {'folds':>5s} " + " ".join(f"{name:>16s}" for name in s["0"]["settings"]))
    for k, row in s.items():
        print(f"{k:>3s} {row['folds']:5d} " + " ".join(f"{v['mean']:7.2f} ± {v['std']:5.2f}"
                                                       for v in row["settings"].values()))
    print(f"total {results['seconds_total']:.0f} s; wrote " + ", ".join(str(f) for f in files))
    return 0


def run_bank(args) -> int:
    data = _check_common(args)
    out = Path(args.out)
    if out.suffix != ".npz":
        raise AgekitError(f"--out must end in .npz, got {out}")
    if out.is_dir():
        raise AgekitError(f"--out {out} is a folder")
    _set_threads(args.threads)

    t0 = time.perf_counter()
    ff = fgnet_features(args.checkpoint, data, use_cache=not args.no_cache, subjects=parse_subjects(args.subjects))
    cfg = _fit_config(args)
    enc = ff.info["encoder"]
    cfg.age_min, cfg.age_max = float(enc["age_range"][0]), float(enc["age_range"][1])
    meta = {"encoder": enc, "bank": f"FG-NET ({data.name}): {len(set(ff.subjects.tolist()))} subjects, "
                                     f"{len(ff)} images", "date": datetime.date.today().isoformat()}
    model, report = fit_face_np(ff.features, ff.ages, ff.subjects, cfg, meta=meta, encoder_ages=ff.encoder_age)
    model.save(out)
    print(f"fitted on {len(ff)} images of {len(model.subjects)} subjects ({enc['backbone']}, "
          f"{ff.features.shape[1]} features) in {time.perf_counter() - t0:.0f} s; wrote {out} "
          f"({out.stat().st_size / 1024:.0f} KiB)")
    return 0
