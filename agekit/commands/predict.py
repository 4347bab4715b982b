"""agekit predict PATH... : age (with a calibrated interval) and gender of every face, with the ONNX runtime."""
from __future__ import annotations


def register(sub):
    from agekit.runtime.cli import add_common_arguments

    p = sub.add_parser("predict", help="estimate the age and gender of the faces in photos",
                       description="Find the faces in photos and estimate each one's age (point estimate, std and a "
                                   "calibrated interval) and gender, with the packaged ONNX model or --model. "
                                   "Files, folders (recursive) and globs; a file that fails is reported and the "
                                   "rest go on; exit code 1 when any failed. See docs/predict.md.")
    add_common_arguments(p)
    p.add_argument("--context-dir", metavar="DIR",
                   help="personalise the estimates with photos of the same person with known ages: DIR holds the "
                        "photos and ages.csv with columns file,age (see docs/neural_processes.md); needs the face "
                        "NP bank MODEL.np.npz beside the model (agekit np-bank)")
    p.set_defaults(func=run)


def columns(level: float):
    from agekit.runtime.cli import _fmt, gender_text, interval_text

    return [("age", lambda f, e: _fmt(f.age)), ("std", lambda f, e: _fmt(f.std)),
            (f"{level:.0%} interval", lambda f, e: interval_text(f)),
            ("gender", lambda f, e: gender_text(f)),
            ("box", lambda f, e: ",".join(f"{v:.0f}" for v in f.box)),
            ("score", lambda f, e: _fmt(f.score, 2)), ("rotation", lambda f, e: f.rotation),
            ("flags", lambda f, e: ",".join(f.flags))]


def csv_columns(level: float):
    from agekit.runtime.cli import _fmt

    return [("age", lambda f, e: _fmt(f.age, 2)), ("std", lambda f, e: _fmt(f.std, 2)),
            ("lo", lambda f, e: _fmt(f.interval[0], 2)), ("hi", lambda f, e: _fmt(f.interval[1], 2)),
            ("level", lambda f, e: f.level), ("gender", lambda f, e: f.gender or ""),
            ("gender_prob", lambda f, e: _fmt(f.gender_prob, 4)), ("female_prob", lambda f, e: _fmt(f.female_prob, 4)),
            ("x1", lambda f, e: _fmt(f.box[0], 1)), ("y1", lambda f, e: _fmt(f.box[1], 1)),
            ("x2", lambda f, e: _fmt(f.box[2], 1)), ("y2", lambda f, e: _fmt(f.box[3], 1)),
            ("score", lambda f, e: _fmt(f.score, 4)), ("rotation", lambda f, e: f.rotation),
            ("flags", lambda f, e: ";".join(f.flags))]


def run(args) -> int:
    from agekit.runtime.cli import run_command

    cols = csv_columns(args.level) if args.output == "csv" else columns(args.level)
    return run_command(args, cols)
