"""agekit eval CHECKPOINT.pt|MODEL.onnx [--data ROOT] [--dataset NAME] [--split test] ...

A .pt checkpoint is scored on its crops (agekit.engine.evaluate); an .onnx model through the predict
pipeline on the raw images (agekit.eval.pipeline).
"""
from __future__ import annotations

import shlex
from pathlib import Path

from agekit.errors import AgekitError
from agekit.eval.pipeline import default_out_dir, evaluate_onnx, write_pipeline_report
from agekit.runtime.onnx_model import is_packaged_name

ONNX_ONLY = ("limit", "thresholds", "shift", "threads")


def register(sub):
    p = sub.add_parser("eval", help="evaluate a checkpoint or an exported ONNX model: metrics, Markdown report, plots",
                       description="Evaluate a .pt checkpoint on a split of its dataset (or another dataset) with the "
                                   "checkpoint's own crop rule, or an exported .onnx model through the predict "
                                   "pipeline (detector, alignment, model) on the dataset's raw images. Writes "
                                   "metrics.json, predictions.csv, report.md and PNG plots.")
    p.add_argument("checkpoint", help="a .pt checkpoint written by agekit train, an .onnx model from agekit export, "
                                      "or a packaged model's name (default, fast)")
    p.add_argument("--data", help="dataset folder (default: the one the checkpoint was trained on; ONNX: "
                                  "$AGEKIT_DATA/<dataset folder>)")
    p.add_argument("--dataset", help="dataset reader name when evaluating on another dataset (ONNX default: the "
                                     "model's training dataset)")
    p.add_argument("--split", default=None, choices=["train", "val", "test", "all"],
                   help="default test; ONNX: test of the dataset's packaged split file (utkface_v1, fgnet_dev_v1), "
                        "all for other datasets")
    p.add_argument("--split-file", help="a split file (key,split) instead of the checkpoint's split rule")
    p.add_argument("--out", help="report folder (default: <checkpoint folder>/eval-<dataset>-<split>; ONNX: "
                                 "runs/eval-<model>-<dataset>-<split>)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps (checkpoints)")
    p.add_argument("--batch-size", type=int, default=256, help="(checkpoints)")
    p.add_argument("--no-latency", action="store_true", help="skip the CPU latency/GMACs measurement (checkpoints)")
    p.add_argument("--no-progress", action="store_true")
    onnx = p.add_argument_group("ONNX models only")
    onnx.add_argument("--limit", type=int, help="a seeded subset of N images of the split")
    onnx.add_argument("--thresholds", help="ages for the age-check table, e.g. 13,16,18,21,25")
    onnx.add_argument("--shift", nargs="?", const="all", default=None,
                      help="also score the images under image shifts (all, or names: grayscale,sepia,jpeg20,"
                           "face32,blur,underexposed,warm_cast)")
    onnx.add_argument("--threads", type=int, help="onnxruntime threads (default $OMP_NUM_THREADS, else all cores)")
    p.set_defaults(func=run)


def parse_thresholds(text: str | None) -> tuple[float, ...]:
    """'13,16,18' -> (13.0, 16.0, 18.0); None/'' -> (). Bad or negative numbers raise AgekitError."""
    if not text:
        return ()
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise AgekitError(f"--thresholds: expected ages separated by commas (e.g. 13,16,18), got {text!r}") from None
    if not values or any(not 0 <= v <= 150 for v in values):
        raise AgekitError(f"--thresholds: ages must be between 0 and 150, got {text!r}")
    return tuple(sorted(set(values)))


def parse_shift(text: str | None):
    """None -> False, 'all' -> True, 'a,b' -> ['a', 'b']."""
    if text is None:
        return False
    if text == "all":
        return True
    return [s.strip() for s in text.split(",") if s.strip()]


def run(args) -> int:

    if is_packaged_name(args.checkpoint) or Path(args.checkpoint).suffix.lower() == ".onnx":
        return run_onnx(args)
    given = [f"--{name}" for name in ONNX_ONLY if getattr(args, name) not in (None, False)]
    if given:
        raise AgekitError(f"{', '.join(given)}: only for .onnx models (checkpoints are scored on their crops)")
    return run_checkpoint(args)


def run_checkpoint(args) -> int:
    from agekit.engine.evaluate import evaluate_checkpoint

    split = args.split or "test"
    ckpt = Path(args.checkpoint)
    out = Path(args.out) if args.out else ckpt.parent / f"eval-{args.dataset or 'own'}-{split}"
    split_spec = {"kind": "file", "file": args.split_file} if args.split_file else None
    result = evaluate_checkpoint(ckpt, split=split, dataset=args.dataset, root=args.data,
                                 split_spec=split_spec, out_dir=out, device=args.device,
                                 batch_size=args.batch_size, latency=not args.no_latency,
                                 progress=not args.no_progress)
    m = result["metrics"]
    lo, hi = m["mae_ci95"]
    print(f"{result['protocol']['dataset']} {split}: n={m['n']} MAE {m['mae']:.3f} "
          f"(95% CI {lo:.3f}-{hi:.3f}) RMSE {m['rmse']:.3f} CS(5) {m['cs']['5']:.3f}"
          + (f" gender acc {m['gender_accuracy']:.3f}" if "gender_accuracy" in m else ""))
    print(f"report: {result['files'].get('report', out)}")
    return 0


def onnx_command(args) -> str:
    """The command line that reruns this ONNX evaluation (the options given; defaults left out)."""
    parts = ["agekit", "eval", args.checkpoint]
    for name in ("data", "dataset", "split", "split_file", "limit", "thresholds", "shift", "threads", "out"):
        value = getattr(args, name)
        if value is not None:
            parts += [f"--{name.replace('_', '-')}", str(value)]
    return shlex.join(parts)


def run_onnx(args) -> int:

    command = onnx_command(args)
    result = evaluate_onnx(args.checkpoint, dataset=args.dataset, root=args.data, split=args.split,
                           split_file=args.split_file, limit=args.limit, thresholds=parse_thresholds(args.thresholds),
                           shift=parse_shift(args.shift), progress=not args.no_progress, threads=args.threads,
                           command=command)
    out = Path(args.out) if args.out else default_out_dir(result["protocol"])
    files = write_pipeline_report(out, result)
    m, p = result["metrics"], result["protocol"]
    lo, hi = m["mae_ci95"]
    cov = m["coverage"]
    print(f"{p['dataset']} {p['split']}: {m['images']} images, {m['found']} faces, {m['misses']} misses; "
          f"MAE {m['mae']:.3f} (95% CI {lo:.3f}-{hi:.3f}) signed error {m['signed_error']:+.3f} "
          f"coverage {cov['coverage']:.3f} (nominal {cov['level']:g})"
          + (f" gender acc {m['gender_accuracy']:.3f}" if "gender_accuracy" in m else ""))
    print(f"report: {files['report']}")
    return 0
