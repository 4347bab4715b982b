"""agekit predict PATH... : age (with a calibrated interval) and gender of every face, with the ONNX runtime.
Videos, cameras and streams (a video file, --camera N, an rtsp/http stream URL) go to agekit.video.cli."""
from __future__ import annotations

from agekit.errors import AgekitError
from agekit.runtime.cli import (
    add_common_arguments,
    fmt_number,
    gender_text,
    interval_text,
    run_command,
)
from agekit.video.cli import run_video, video_inputs
from agekit.video.tracking import DETECT_EVERY


def register(sub):

    p = sub.add_parser("predict", help="estimate the age and gender of the faces in photos",
                       description="Find the faces in photos and estimate each one's age (point estimate, std and a "
                                   "calibrated interval) and gender, with the packaged ONNX model or --model. "
                                   "Files, folders (recursive) and globs; a file that fails is reported and the "
                                   "rest go on; exit code 1 when any failed. See docs/predict.md. Videos, "
                                   "--camera N and stream URLs: the faces are tracked and each person gets one "
                                   "steady age (docs/video.md).")
    add_common_arguments(p)
    for action in p._actions:  # PATH may be left out when --camera gives the source (checked in run)
        if action.dest == "paths":
            action.nargs, action.required = "*", False
    video = p.add_argument_group("videos, cameras and streams (docs/video.md)")
    video.add_argument("--camera", type=int, action="append", metavar="N",
                       help="read camera N (0: the first webcam); may be repeated")
    video.add_argument("--every", type=int, default=1, metavar="N", help="analyse every N-th frame (default 1)")
    video.add_argument("--detect-every", type=int, metavar="K",
                       help="run the face detector on every K-th analysed frame; the tracker carries the boxes "
                            "in between (default 2)")
    video.add_argument("--max-seconds", type=float, metavar="S",
                       help="stop after S seconds of video (files) or of reading (cameras, streams)")
    video.add_argument("--frames-out", metavar="FILE",
                       help="also write one JSON line per analysed frame (track ids, boxes, per-frame and steady "
                            "ages) to FILE")
    p.add_argument("--context-dir", metavar="DIR",
                   help="personalise the estimates with photos of the same person with known ages: DIR holds the "
                        "photos and ages.csv with columns file,age (see docs/neural_processes.md); needs the face "
                        "NP bank MODEL.np.npz beside the model (agekit np-bank)")
    p.set_defaults(func=run)


def columns(level: float):

    return [("age", lambda f, e: fmt_number(f.age)), ("std", lambda f, e: fmt_number(f.std)),
            (f"{level:.0%} interval", lambda f, e: interval_text(f)),
            ("gender", lambda f, e: gender_text(f)),
            ("box", lambda f, e: ",".join(f"{v:.0f}" for v in f.box)),
            ("score", lambda f, e: fmt_number(f.score, 2)), ("rotation", lambda f, e: f.rotation),
            ("flags", lambda f, e: ",".join(f.flags))]


def csv_columns(level: float):

    return [("age", lambda f, e: fmt_number(f.age, 2)), ("std", lambda f, e: fmt_number(f.std, 2)),
            ("lo", lambda f, e: fmt_number(f.interval[0], 2)), ("hi", lambda f, e: fmt_number(f.interval[1], 2)),
            ("level", lambda f, e: f.level), ("gender", lambda f, e: f.gender or ""),
            ("gender_prob", lambda f, e: fmt_number(f.gender_prob, 4)), ("female_prob", lambda f, e: fmt_number(f.female_prob, 4)),
            ("x1", lambda f, e: fmt_number(f.box[0], 1)), ("y1", lambda f, e: fmt_number(f.box[1], 1)),
            ("x2", lambda f, e: fmt_number(f.box[2], 1)), ("y2", lambda f, e: fmt_number(f.box[3], 1)),
            ("score", lambda f, e: fmt_number(f.score, 4)), ("rotation", lambda f, e: f.rotation),
            ("flags", lambda f, e: ";".join(f.flags))]


def run(args) -> int:

    if not args.paths and not args.camera:
        raise AgekitError("give at least one PATH (a photo, folder, video or stream URL) or --camera N")
    video_flags = [f for f, v in (("--every", args.every != 1), ("--detect-every", args.detect_every),
                                  ("--max-seconds", args.max_seconds), ("--frames-out", args.frames_out)) if v]
    if args.camera or any("://" in p or "." in p for p in args.paths):

        sources = video_inputs(args)
        if sources is not None:

            args.detect_every = args.detect_every or DETECT_EVERY
            return run_video(args, sources)
    if video_flags:
        raise AgekitError(f"{video_flags[0]} applies to videos, cameras and streams only")
    cols = csv_columns(args.level) if args.output == "csv" else columns(args.level)
    return run_command(args, cols)
