"""agekit eval CHECKPOINT [--data ROOT] [--dataset NAME] [--split test]"""
from __future__ import annotations

from pathlib import Path


def register(sub):
    p = sub.add_parser("eval", help="evaluate a checkpoint: metrics, Markdown report, plots",
                       description="Evaluate a checkpoint on a split of its dataset (or another dataset) with the "
                                   "checkpoint's own crop rule. Writes metrics.json, predictions.csv, report.md and "
                                   "PNG plots.")
    p.add_argument("checkpoint", help="a .pt checkpoint written by agekit train")
    p.add_argument("--data", help="dataset folder (default: the one the checkpoint was trained on)")
    p.add_argument("--dataset", help="dataset reader name when evaluating on another dataset")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "all"])
    p.add_argument("--split-file", help="a split file (key,split) instead of the checkpoint's split rule")
    p.add_argument("--out", help="report folder (default: <checkpoint folder>/eval-<dataset>-<split>)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--no-latency", action="store_true", help="skip the CPU latency/GMACs measurement")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from agekit.engine.evaluate import evaluate_checkpoint

    ckpt = Path(args.checkpoint)
    out = Path(args.out) if args.out else ckpt.parent / f"eval-{args.dataset or 'own'}-{args.split}"
    split_spec = {"kind": "file", "file": args.split_file} if args.split_file else None
    result = evaluate_checkpoint(ckpt, split=args.split, dataset=args.dataset, root=args.data,
                                 split_spec=split_spec, out_dir=out, device=args.device,
                                 batch_size=args.batch_size, latency=not args.no_latency,
                                 progress=not args.no_progress)
    m = result["metrics"]
    lo, hi = m["mae_ci95"]
    print(f"{result['protocol']['dataset']} {args.split}: n={m['n']} MAE {m['mae']:.3f} "
          f"(95% CI {lo:.3f}-{hi:.3f}) RMSE {m['rmse']:.3f} CS(5) {m['cs']['5']:.3f}"
          + (f" gender acc {m['gender_accuracy']:.3f}" if "gender_accuracy" in m else ""))
    print(f"report: {result['files'].get('report', out)}")
    return 0
