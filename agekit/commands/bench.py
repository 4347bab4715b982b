"""agekit bench: train and evaluate every method under one protocol and write a citable table."""
from __future__ import annotations

import argparse
import shlex

from agekit.bench import BenchOptions, run_bench
from agekit.bench.parsing import parse_seeds
from agekit.bench.table import DASH

EPILOG = """\
examples:
  agekit bench --methods all --data utkface --backbone light_cnn64 --epochs 3 --seeds 3
  agekit bench --methods dldl_v2,regression --base utkface_resnet18_dldlv2 --seeds 2 train.lr=1e-3
  agekit bench --methods dldl_v2 --sweep dldl_v2.lam=0.1,1,10 --method-params 'soft_labels:g=5'
  agekit bench --sweep dldl_v2.step=0.5,1,2,5,10          # number of discrete labels (DLDL-v2 ablation)
  agekit bench --sweep soft_labels.g=1,3,5,7               # soft-label gap (light study ablation)
  agekit bench --protocol fgnet_lopo --pretrained runs/utkface_quick/best.pt --folds 5

Runs live in OUT/runs/<row>-s<seed>/ and are never redone once they hold summary.json and
eval/metrics.json; run the same command again after Ctrl-C to continue. OUT gets results.json,
results.md (protocol, command and table) and results.png.
"""


def register(sub):
    p = sub.add_parser(
        "bench", help="train and evaluate many methods under one protocol; write a results table",
        description="Train every chosen method on the same data, split, backbone, augmentation, schedule and "
                    "budget (only the method, its parameters and the seed vary), evaluate each run's best "
                    "checkpoint on the test split, and write results.json, results.md and results.png. "
                    "key.sub=value pairs override the base config for every run.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*",
                   help="overrides of the base config for every run, e.g. train.lr=1e-3 data.limit_train=4000")
    p.add_argument("--methods", help="'all' or NAME,NAME (default: all; none when only --sweep is given)")
    p.add_argument("--protocol", default="standard", choices=["standard", "fgnet_lopo"],
                   help="standard: train/val/test split of --data; fgnet_lopo: FG-NET leave-one-person-out "
                        "fine-tuning from --pretrained")
    p.add_argument("--data", help="dataset reader name (default: the base config's)")
    p.add_argument("--root", help="dataset folder (default: $AGEKIT_DATA/<dataset folder>)")
    p.add_argument("--backbone", help="backbone name (default: the base config's)")
    p.add_argument("--epochs", type=int, help="training epochs per run (default: the base config's)")
    p.add_argument("--seeds", default="1", help="number of seeds (3 = seeds 0,1,2) or a list such as 0,4,7 "
                                                "(default 1)")
    p.add_argument("--size", type=int, help="input size in pixels (default: the base config's)")
    p.add_argument("--base", help="base config file or packaged config name (default: bench_cpu; "
                                  "fgnet_lopo_finetune for --protocol fgnet_lopo)")
    p.add_argument("--out", help="output folder (default runs/bench-<data>-<backbone>)")
    p.add_argument("--method-params", help="per-method parameters: 'dldl_v2:lam=0.5,sigma=3;soft_labels:g=5'")
    p.add_argument("--sweep", action="append", default=[], metavar="METHOD.PARAM=V1,V2",
                   help="ablation: one row per value, e.g. dldl_v2.lam=0.1,1,10; dldl_v2.step=1,2,5,10 "
                        "varies the years between labels (number of discrete labels) of the softmax methods; "
                        "METHOD.age_min / METHOD.age_max vary the label range; repeatable")
    p.add_argument("--pretrained", action="append", default=[], metavar="CKPT",
                   help="fgnet_lopo: checkpoint to fine-tune on each fold (repeat to compare several)")
    p.add_argument("--folds", type=int, help="fgnet_lopo: only the first N subjects (a quick run)")
    p.add_argument("--no-eval-report", action="store_true",
                   help="per run, write only eval/metrics.json (no plots, predictions.csv or report.md)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def command_line(args) -> str:
    """The command that reproduces this bench, with every choice spelled out."""
    argv = ["--protocol", args.protocol] if args.protocol != "standard" else []
    for flag, value in (("--methods", args.methods), ("--data", args.data), ("--root", args.root),
                        ("--backbone", args.backbone), ("--epochs", args.epochs), ("--seeds", args.seeds),
                        ("--size", args.size), ("--base", args.base), ("--out", args.out),
                        ("--method-params", args.method_params), ("--folds", args.folds)):
        if value is not None:
            argv += [flag, str(value)]
    for sweep in args.sweep:
        argv += ["--sweep", sweep]
    for ckpt in args.pretrained:
        argv += ["--pretrained", ckpt]
    return "agekit bench " + shlex.join(argv + list(args.overrides))


def run(args) -> int:

    opts = BenchOptions(protocol=args.protocol, methods=args.methods, data=args.data, root=args.root,
                        backbone=args.backbone, epochs=args.epochs, seeds=parse_seeds(args.seeds), size=args.size,
                        base=args.base, out=args.out, overrides=list(args.overrides),
                        method_params=args.method_params, sweeps=list(args.sweep), pretrained=list(args.pretrained),
                        folds=args.folds, progress=not args.no_progress,
                        eval_report=not args.no_eval_report, command=command_line(args))
    out = run_bench(opts)
    plan, results = out["plan"], out["results"]
    print(f"{len(results['rows'])} rows, {sum(r['status'] == 'done' for r in results['runs'])} of "
          f"{len(results['runs'])} runs finished")

    for row in results["rows"]:
        if row["mae_mean"] is None:
            mae = "not run"
        else:
            std = DASH if row["mae_std"] is None else f"{row['mae_std']:.2f}"
            mae = f"{row['mae_mean']:.2f} ± {std} (n={row['n']})"
        pooled = f"  pooled MAE {row['pooled_mae']:.2f}" if row.get("pooled_mae") is not None else ""
        print(f"  {row['name']:28s} MAE {mae}{pooled}")
    print(f"table: {plan.out_dir / 'results.md'}")
    return 0
