"""agekit check --min-age 18 PATH... : over / under / uncertain for every face, with the probability."""
from __future__ import annotations

from agekit.runtime.cli import (
    add_common_arguments,
    fmt_number,
    interval_text,
    run_command,
)


def register(sub):

    p = sub.add_parser("check", help="age check: is each face over a minimum age (over/under/uncertain)",
                       description="For each face: 'over' when its calibrated interval lies at or above --min-age, "
                                   "'under' when it lies below, else 'uncertain' (the buffer zone near the "
                                   "threshold), with P(age >= min-age) from the calibrated distribution. Same "
                                   "inputs, outputs and exit codes as agekit predict. See docs/predict.md.")
    p.add_argument("--min-age", type=float, required=True, metavar="AGE", help="the age threshold, e.g. 18")
    add_common_arguments(p)
    p.set_defaults(func=run)


def per_face(min_age: float):
    def make(estimator):
        def fields(face) -> dict:
            decision, prob = estimator.check_age(face, min_age)
            return {"decision": decision, "p_over": round(prob, 4), "min_age": min_age,
                    "label": f"{decision} {min_age:g} (p={prob:.2f})"}
        return fields
    return make


def columns(args):

    m = f"{args.min_age:g}"
    if args.output == "csv":
        return [("decision", lambda f, e: e["decision"]), ("p_over", lambda f, e: fmt_number(e["p_over"], 4)),
                ("min_age", lambda f, e: e["min_age"]), ("age", lambda f, e: fmt_number(f.age, 2)),
                ("lo", lambda f, e: fmt_number(f.interval[0], 2)), ("hi", lambda f, e: fmt_number(f.interval[1], 2)),
                ("level", lambda f, e: f.level), ("x1", lambda f, e: fmt_number(f.box[0], 1)),
                ("y1", lambda f, e: fmt_number(f.box[1], 1)), ("x2", lambda f, e: fmt_number(f.box[2], 1)),
                ("y2", lambda f, e: fmt_number(f.box[3], 1)), ("score", lambda f, e: fmt_number(f.score, 4)),
                ("rotation", lambda f, e: f.rotation), ("flags", lambda f, e: ";".join(f.flags))]
    return [("decision", lambda f, e: e["decision"]), (f"P(age>={m})", lambda f, e: fmt_number(e["p_over"], 2)),
            ("age", lambda f, e: fmt_number(f.age)), (f"{args.level:.0%} interval", lambda f, e: interval_text(f)),
            ("box", lambda f, e: ",".join(f"{v:.0f}" for v in f.box)), ("flags", lambda f, e: ",".join(f.flags))]


def run(args) -> int:

    return run_command(args, columns(args), per_face=per_face(args.min_age))
