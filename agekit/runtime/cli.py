"""What `agekit predict` and `agekit check` share: options, the per-file loop, output formats.

Each input file is processed on its own: a file that fails (unreadable, no face, bad box) becomes an error
row and the batch goes on; the exit code is 1 when any input failed (2 for usage errors, raised as
AgekitError before any file is read). --out and --save-annotated files are written atomically.

Extension point: `build_estimator(args)` makes the estimator every command uses; options that change how
faces are scored (e.g. personalisation) add their arguments in `add_common_arguments` and wrap it there.
"""
from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from agekit.errors import AgekitError, ImageError

OUTPUTS = ("table", "json", "jsonl", "csv")


def add_common_arguments(p) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (searched recursively) or globs")
    p.add_argument("--model", help="'default' (the packaged face-pretrained model), 'fast' (the packaged small "
                                   "model, for slow devices) or an ONNX file made by `agekit export`")
    p.add_argument("--output", choices=OUTPUTS, default="table", help="result format (default: table)")
    p.add_argument("--out", metavar="FILE", help="write the results to FILE (atomically) instead of stdout")
    p.add_argument("--save-annotated", metavar="DIR", help="write each photo with its faces drawn into DIR")
    p.add_argument("--min-face", type=float, default=0, metavar="PX",
                   help="ignore detected faces whose box is smaller than PX pixels (default 0)")
    p.add_argument("--max-faces", type=int, metavar="N", help="keep at most N faces per image, best first")
    p.add_argument("--threshold", type=float, metavar="T", help="detector score threshold (default: the detector's)")
    p.add_argument("--detector", default="default", help="face detector (default: the one the model was trained with)")
    p.add_argument("--detect-size", type=int, metavar="PX",
                   help="shrink photos whose longer side exceeds PX before detection (CenterFace default 1280); "
                        "320 is about 4x faster on a 640x480 photo but misses faces smaller than about 40 px")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--no-detect", action="store_true",
                       help="each image is one pre-cropped face (the whole image is the face's box)")
    where.add_argument("--boxes", metavar="FILE_or_x1,y1,x2,y2",
                       help="face boxes instead of detection: numbers (';' between boxes) for every image, or a "
                            "JSON/CSV file (see docs/predict.md)")
    p.add_argument("--level", type=float, default=0.9, help="interval level, 0 < level < 1 (default 0.9)")
    p.add_argument("--threads", type=int, help="CPU threads for onnxruntime (default: $OMP_NUM_THREADS or all)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar for folders")


def build_estimator(args):
    from agekit.runtime.estimator import AgeEstimator

    if args.max_faces is not None and args.max_faces < 1:
        raise AgekitError(f"--max-faces must be >= 1, got {args.max_faces}")
    if not 0 < args.level < 1:
        raise AgekitError(f"--level must be between 0 and 1 (e.g. 0.9), got {args.level}")
    options = {}
    if args.detect_size is not None:
        if args.detect_size < 32:
            raise AgekitError(f"--detect-size must be at least 32 pixels, got {args.detect_size}")
        options["max_side"] = args.detect_size
    context = None
    if getattr(args, "context_dir", None):  # agekit predict --context-dir: validated before any photo is read
        from agekit.np.personal import read_ages_csv

        context = read_ages_csv(args.context_dir)
    estimator = AgeEstimator(model=args.model, detector=args.detector, threshold=args.threshold,
                             min_face=args.min_face, max_faces=args.max_faces, level=args.level,
                             threads=args.threads, detector_options=options)
    if context is None:
        return estimator
    from agekit.np.personal import ContextEstimator

    return ContextEstimator(estimator, context, report=lambda line: print(line, file=sys.stderr))


@dataclass
class FileResult:
    file: str
    faces: list = field(default_factory=list)  # FaceResult
    extra: list = field(default_factory=list)  # per face: dict of command-specific fields
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def process(args, estimator, inputs, per_face=None) -> list[FileResult]:
    """Run the estimator over the inputs; `per_face(face) -> dict` adds command-specific fields."""
    from tqdm import tqdm

    from agekit.runtime.annotate import annotated_name, label, save_annotated
    from agekit.runtime.estimator import as_image
    from agekit.runtime.inputs import Boxes

    items, any_folder = inputs
    boxes = Boxes(args.boxes) if args.boxes else None
    out_dir = Path(args.save_annotated) if args.save_annotated else None
    taken: set = set()
    results = []
    bar = tqdm(items, unit="img", file=sys.stderr, disable=args.no_progress or not any_folder or len(items) < 2,
               desc="predicting")
    for item in bar:
        res = FileResult(str(item.path), error=item.error)
        results.append(res)
        if item.error:
            continue
        try:
            image = as_image(item.path)
            if args.no_detect:
                faces = estimator.predict_crops([image], aligned=False)
            else:
                file_boxes = boxes.for_file(item.path) if boxes else None
                if boxes and file_boxes is None:
                    raise AgekitError("no box given for this file in --boxes")
                faces = estimator.predict(image, boxes=file_boxes)
            if not faces:
                raise AgekitError("no face found")
            res.faces = faces
            res.extra = [per_face(f) if per_face else {} for f in faces]
            if out_dir is not None:
                labels = [label(f, e.get("label")) for f, e in zip(faces, res.extra)]
                save_annotated(annotated_name(item.path, item.root, out_dir, taken), image, faces, labels)
        except ImageError as exc:
            res.error = exc.reason
        except AgekitError as exc:
            res.error = str(exc)
        except Exception as exc:  # one odd file must not stop a batch
            if getattr(args, "verbose", False):
                raise
            detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            res.error = f"unexpected error ({type(exc).__name__}: {detail})"
    bar.close()
    return results


# ---- output ------------------------------------------------------------------------------------------
def records(results: list[FileResult]) -> list[dict]:
    out = []
    for r in results:
        if r.ok:
            faces = [{"face": i + 1, **f.to_dict(), **{k: v for k, v in e.items() if k != "label"}}
                     for i, (f, e) in enumerate(zip(r.faces, r.extra))]
            out.append({"file": r.file, "ok": True, "faces": faces})
        else:
            out.append({"file": r.file, "ok": False, "error": r.error})
    return out


def _fmt(v, digits=1):
    return "" if v is None else f"{v:.{digits}f}"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows if len(row) > i and len(row) > 2) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        if len(row) == 2:  # an error row: file + message
            lines.append(f"{row[0]:<{widths[0]}}  {row[1]}")
        else:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines) + "\n"


def render(results: list[FileResult], fmt: str, columns) -> str:
    """columns: [(header, f(face, extra) -> str or number)] for table and CSV."""
    if fmt == "json":
        return json.dumps(records(results), indent=2) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(rec) + "\n" for rec in records(results))
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["file", "face"] + [h for h, _ in columns] + ["error"])
        for r in results:
            if not r.ok:
                writer.writerow([r.file, ""] + [""] * len(columns) + [r.error])
            for i, (f, e) in enumerate(zip(r.faces, r.extra)):
                writer.writerow([r.file, i + 1] + [get(f, e) for _, get in columns] + [""])
        return buffer.getvalue()
    rows = [["file", "face"] + [h for h, _ in columns]]
    for r in results:
        if not r.ok:
            rows.append([r.file, f"error: {r.error}"])
        for i, (f, e) in enumerate(zip(r.faces, r.extra)):
            rows.append([r.file, str(i + 1)] + [str(get(f, e)) for _, get in columns])
    return _table(rows)


def finish(args, results: list[FileResult], columns) -> int:
    """Write the results (stdout or --out), print the summary, return the exit code."""
    from agekit.io import write_text_atomic

    text = render(results, args.output, columns)
    if args.out:
        write_text_atomic(args.out, text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    failed = sum(not r.ok for r in results)
    n = len(results)
    if failed or n > 1:
        print(f"{n} file{'s' if n != 1 else ''}, {n - failed} ok, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def run_command(args, columns, per_face=None) -> int:
    from agekit.runtime.inputs import expand_inputs

    estimator = build_estimator(args)
    inputs = expand_inputs(args.paths)
    results = process(args, estimator, inputs, per_face=per_face(estimator) if per_face else None)
    return finish(args, results, columns)


def interval_text(f) -> str:
    return f"{f.interval[0]:.1f}-{f.interval[1]:.1f}"


def gender_text(f) -> str:
    return "" if f.gender is None else f"{f.gender} ({f.gender_prob:.2f})"
