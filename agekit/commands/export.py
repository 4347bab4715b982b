"""agekit export CHECKPOINT --onnx OUT.onnx [--quantize int8] [--calibrate {val,none}] [--data DIR]"""
from __future__ import annotations


def register(sub):
    p = sub.add_parser("export", help="turn a checkpoint into an ONNX model for agekit predict",
                       description="Export a checkpoint to ONNX for the torch-free runtime (agekit predict, "
                                   "AgeEstimator). The file carries the crop rule, age range and, with "
                                   "--calibrate val, split-conformal interval quantiles fitted on the validation "
                                   "split. See docs/predict.md.")
    p.add_argument("checkpoint", help="a .pt checkpoint written by agekit train")
    p.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the model file to write (atomically)")
    p.add_argument("--quantize", choices=["int8", "int8-dynamic"],
                   help="int8: static QDQ quantisation with activation ranges from validation crops (reads the "
                        "validation split even with --calibrate none); int8-dynamic: weights only, no data")
    p.add_argument("--calibrate", choices=["val", "none"], default="val",
                   help="fit split-conformal intervals on the checkpoint's validation split (default: val)")
    p.add_argument("--level", type=float, default=0.9, help="default interval level stored (0.8/0.9/0.95 always)")
    p.add_argument("--data", help="dataset folder (default: the checkpoint's, or under $AGEKIT_DATA)")
    p.add_argument("--metrics", help="metrics.json of `agekit eval` to embed (default: <ckpt dir>/eval-own-test/)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from agekit.engine.export import export_checkpoint

    meta = export_checkpoint(args.checkpoint, args.onnx, calibrate_on=args.calibrate, quantize=args.quantize,
                             data_root=args.data, level=args.level, metrics_file=args.metrics,
                             progress=not args.no_progress)
    print(f"wrote {args.onnx}: {meta['method']} / {meta['backbone']}, ages {meta['age_min']}-{meta['age_max']}, "
          f"crop {meta['crop']['rule']} {meta['crop']['size']}px" + (", gender" if meta["gender"] else ""))
    cal = meta.get("calibration")
    if cal:
        q = "inf" if cal["q"] is None else f"{cal['q']:.3f}"
        print(f"calibration: {cal['level']:.0%} split-conformal on {cal['n']} validation faces, q={q}, "
              f"coverage on val {cal['coverage']:.3f}, val MAE {cal['mae']:.3f}")
    quant = meta.get("quantization")
    if quant and quant.get("cost_on_val"):
        c = quant["cost_on_val"]
        line = f"int8 ({quant['mode']}): mean |age change| {c['mean_abs_change']:.3f} y (max {c['max_abs_change']:.2f})"
        if "mae_float" in c:
            line += f", val MAE {c['mae_float']:.3f} -> {c['mae_int8']:.3f} ({c['mae_increase']:+.3f})"
        print(line)
    return 0
