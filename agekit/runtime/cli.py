"""What `agekit predict` and `agekit check` share: options, the loop over the inputs, output formats (scoring
one file or a chunk of files: agekit.runtime.scoring).

Each input file is processed on its own: a file that fails (unreadable, no face, bad box, a failed download)
becomes an error row and the batch goes on; the exit code is 1 when any input failed. Usage errors (bad
options, an unknown detector, an --out or --save-annotated that cannot be written or would overwrite an input)
are raised as AgekitError (exit 2) before any image is read. Results are written as each file is done
(agekit.runtime.outputs: --out rules, --resume); Ctrl-C or SIGTERM writes what is done and exits 130 / 143.
With --workers N, chunks of files are scored in N processes (agekit.runtime.workers) and written in order.

Extension point: `build_estimator(args)` makes the estimator every command uses; options that change how
faces are scored (e.g. personalisation) add their arguments in `add_common_arguments` and wrap it there.
"""
from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
import threading
from pathlib import Path

from tqdm import tqdm

from agekit.detect import list_detectors
from agekit.errors import AgekitError
from agekit.runtime import scoring
from agekit.runtime.annotate import plan_annotated
from agekit.runtime.context import ContextEstimator, read_ages_csv
from agekit.runtime.estimator import AgeEstimator
from agekit.runtime.inputs import Boxes, expand_inputs
from agekit.runtime.onnx_model import resolve_model
from agekit.runtime.outputs import (
    Destination,
    ResultWriter,
    check_out,
    open_destination,
)
from agekit.runtime.scoring import CHUNK_FILES, FileResult, record
from agekit.runtime.workers import (
    WorkerStopped,
    auto_workers,
    parse_workers,
    start_pool,
)

OUTPUTS = ("table", "json", "jsonl", "csv")


def add_common_arguments(p) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="image files, folders (searched recursively), globs, http(s) URLs, or - for stdin")
    p.add_argument("--model", help="'default' (the packaged face-pretrained model), 'fast' (the packaged small "
                                   "model, for slow devices) or an ONNX file made by `agekit export`")
    p.add_argument("--output", choices=OUTPUTS, default="table", help="result format (default: table)")
    p.add_argument("--out", metavar="FILE",
                   help="write the results to FILE instead of stdout ('-': stdout): a file is replaced atomically, "
                        "a FIFO or device is written into, a symlink is written through to its target")
    p.add_argument("--resume", action="store_true",
                   help="with --output jsonl|csv --out FILE: skip the inputs already in FILE and append the rest "
                        "(rows are flushed one by one, so an interrupted run can be resumed)")
    p.add_argument("--save-annotated", metavar="DIR", help="write each photo with its faces drawn into DIR")
    p.add_argument("--min-face", type=float, default=0, metavar="PX",
                   help="ignore detected faces whose box is smaller than PX pixels (default 0)")
    p.add_argument("--max-faces", type=int, metavar="N", help="keep at most N faces per image, best first")
    p.add_argument("--threshold", type=float, metavar="T", help="detector score threshold (default: the detector's)")
    p.add_argument("--detector", default="default", help="face detector (default: the one the model was trained with)")
    p.add_argument("--detector-model", metavar="PATH",
                   help="the face detector's model file (yunet: a face_detection_yunet*.onnx from the OpenCV Zoo)")
    p.add_argument("--detect-size", type=int, metavar="PX",
                   help="search each photo once, shrunk to at most PX pixels on its longer side, instead of the "
                        "default coarse-to-fine search; 1280 is the search of earlier versions, 320 is fastest but "
                        "misses faces smaller than about 40 px")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--no-detect", action="store_true",
                       help="each image is one pre-cropped face (the whole image is the face's box)")
    where.add_argument("--boxes", metavar="FILE_or_x1,y1,x2,y2",
                       help="face boxes instead of detection: numbers (';' between boxes) for every image, or a "
                            "JSON/CSV file (see docs/predict.md)")
    p.add_argument("--level", type=float, default=0.9, help="interval level, 0 < level < 1 (default 0.9)")
    p.add_argument("--threads", type=int, help="CPU threads for onnxruntime (default: $OMP_NUM_THREADS, else the idle "
                                               "physical cores, at most 4; with --workers, shared out among them)")
    p.add_argument("--workers", default="auto", metavar="N",
                   help="score the files in N processes, one model each; 'auto' (default): one per core from 200 "
                        "files on, else 1; the output is the same, in the same order (see docs/batch.md)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar for folders")


# ---- options and the estimator ----------------------------------------------------------------------------
def _detects(args) -> bool:
    return not getattr(args, "no_detect", False) and not getattr(args, "boxes", None)


def check_arguments(args) -> None:
    """Usage errors that need nothing read: raised before the model, the inputs or the outputs are touched."""

    if hasattr(args, "workers"):
        args.workers = parse_workers(args.workers)
    if args.max_faces is not None and args.max_faces < 1:
        raise AgekitError(f"--max-faces must be >= 1, got {args.max_faces}")
    if not 0 < args.level < 1:
        raise AgekitError(f"--level must be between 0 and 1 (e.g. 0.9), got {args.level}")
    if args.detect_size is not None and args.detect_size < 32:
        raise AgekitError(f"--detect-size must be at least 32 pixels, got {args.detect_size}")
    name = str(getattr(args, "detector", None) or "default")
    if name.lower() != "default" and name.lower() not in list_detectors():
        raise AgekitError(f"--detector {name}: unknown face detector; choose from default, "
                          f"{', '.join(list_detectors())}")
    model_path = getattr(args, "detector_model", None)
    if model_path and not Path(model_path).expanduser().is_file():
        raise AgekitError(f"--detector-model {model_path}: file not found")
    if getattr(args, "resume", False) and (args.output not in ("jsonl", "csv") or args.out in (None, "-")):
        raise AgekitError("--resume needs --output jsonl or csv and --out FILE (the file to read and append to)")


def _detector_options(args) -> dict:
    options = {}
    if args.detect_size is not None:
        options["max_side"] = args.detect_size
    if getattr(args, "detector_model", None):
        options["model_path"] = str(Path(args.detector_model).expanduser())
    return options


def _start_detector(args, estimator) -> None:
    """Create the face detector now, so that a detector that cannot run is a usage error, not one error
    row per file."""
    name = str(estimator.detector_name or "default").lower()
    if name == "yunet" and not getattr(args, "detector_model", None):
        raise AgekitError("face detector 'yunet' needs --detector-model PATH (a face_detection_yunet*.onnx file "
                          "from the OpenCV Zoo; no package ships one)")
    try:
        _ = estimator.detector
    except TypeError as exc:  # an option this backend does not take
        flag = next((f for key, f in (("max_side", "--detect-size"), ("model_path", "--detector-model"))
                     if key in str(exc)), "an option")
        raise AgekitError(f"{flag} is not an option of face detector '{estimator.detector_name}'") from None


def build_estimator(args):

    check_arguments(args)
    context = None
    if getattr(args, "context_dir", None):  # agekit predict --context-dir: validated before any photo is read

        context = read_ages_csv(args.context_dir)
    estimator = AgeEstimator(model=args.model, detector=args.detector, threshold=args.threshold,
                             min_face=args.min_face, max_faces=args.max_faces, level=args.level,
                             threads=args.threads, detector_options=_detector_options(args))
    if _detects(args):
        _start_detector(args, estimator)
    if context is None:
        return estimator

    return ContextEstimator(estimator, context, report=lambda line: print(line, file=sys.stderr))


def fmt_number(v, digits=1):
    """A table or CSV cell: the number with `digits` decimals; empty for None."""
    return "" if v is None else f"{v:.{digits}f}"


def render(results: list[FileResult], fmt: str, columns) -> str:
    """The whole output for a list of results (what the CLI writes row by row)."""

    class _Buffer(Destination):
        def __init__(self):
            self.fh = io.StringIO()

    dest = _Buffer()
    writer = ResultWriter(dest, fmt, columns, record)
    for r in results:
        writer.add(r)
    writer.end()
    return dest.fh.getvalue()


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so that the run writes what it has done."""


@contextlib.contextmanager
def sigterm_raises():
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def _signals_held():
    """Ctrl-C and SIGTERM wait while the output is being completed and renamed."""
    main = threading.current_thread() is threading.main_thread() and hasattr(signal, "pthread_sigmask")
    if main:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        if main:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def _protected_files(args, items) -> dict:
    """Real path -> what it is, for every file an output must never overwrite."""

    protected = {}
    for flag, value in (("--context-dir", getattr(args, "context_dir", None)), ("--boxes", args.boxes),
                        ("--detector-model", getattr(args, "detector_model", None))):
        if value:
            path = Path(value).expanduser()
            for p in ([path / "ages.csv"] if flag == "--context-dir" else [path]):
                if p.is_file():
                    protected[os.path.realpath(p)] = f"the {flag} file"
    with contextlib.suppress(Exception):
        model = resolve_model(args.model)
        if model.is_file():
            protected[os.path.realpath(model)] = "the model file"
    for item in items:
        if item.real is not None:
            protected[item.real] = "the input file"
    return protected


def _check_overwrite(flag: str, given: str, path: Path, protected: dict) -> None:
    real = os.path.realpath(path)
    what = protected.get(real)
    if what is None and os.path.exists(real):
        st = os.stat(real)
        for p, w in protected.items():
            with contextlib.suppress(OSError):
                other = os.stat(p)
                if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                    what = w
                    break
    if what is not None:
        raise AgekitError(f"{flag} {given} is {what}: it would be overwritten; give another file")


def _skipped_text(skipped) -> str:
    total = sum(skipped.values())
    detail = ", ".join(f"{reason}: {n}" for reason, n in sorted(skipped.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"{total} skipped ({detail})"


def run_command(args, columns, per_face=None) -> int:
    """The whole of `agekit predict` / `agekit check`: every check first (exit 2, nothing read, nothing
    written), then each input read, scored and written as it is done."""

    from agekit.runtime.outputs import (
        ResultWriter,
        check_out,
        open_destination,
        read_resume,
        writable_folder,
    )

    check_arguments(args)
    expansion = expand_inputs(args.paths)
    items = expansion.items
    boxes = Boxes(args.boxes) if args.boxes else None
    target = check_out(args.out)
    header = ["file", "face"] + [h for h, _ in columns] + ["error"]
    protected = _protected_files(args, items)
    if target.kind == "file":
        _check_overwrite("--out", target.given, target.path, protected)
        protected[os.path.realpath(target.path)] = "the --out file"
    resume = read_resume(target, args.output, header) if getattr(args, "resume", False) else None
    plan = [None] * len(items)
    if args.save_annotated:
        out_dir = Path(args.save_annotated).expanduser()
        if target.kind == "file" and os.path.realpath(out_dir) == os.path.realpath(target.path):
            raise AgekitError(f"--out {target.given} and --save-annotated {args.save_annotated} name the same path")
        writable_folder(out_dir, "--save-annotated", args.save_annotated)
        plan = plan_annotated(items, out_dir, protected)
    todo = [i for i, item in enumerate(items) if resume is None or not resume.has(item)]
    chunk_files, pool = CHUNK_FILES, None
    workers = getattr(args, "workers", 1)
    workers = min(auto_workers(len(todo)) if workers == "auto" else workers, len(todo))
    if any(items[i].url == "-" for i in todo):
        workers = 1  # standard input can be read only here: worker processes have none
    if workers > 1:  # the workers load the model (each its own); this process only writes

        pool = start_pool(args, per_face, boxes, workers)
        chunk_files = max(1, min(CHUNK_FILES, -(-len(todo) // (2 * workers))))  # every worker gets work
    else:
        estimator = build_estimator(args)
        per_face_fn = per_face(estimator) if per_face else None
    chunks = (([items[i] for i in todo[k:k + chunk_files]], [plan[i] for i in todo[k:k + chunk_files]])
              for k in range(0, len(todo), chunk_files))  # (inputs, annotated destinations), made as needed

    def chunk_results():
        if pool is not None:
            yield from pool.results(chunks)
            return
        for chunk_items, chunk_plan in chunks:
            yield scoring.process_chunk(args, estimator, chunk_items, boxes, per_face_fn, chunk_plan)

    # every check passed: from here on, outputs are created and images read
    try:
        if args.save_annotated:
            try:
                out_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise AgekitError(f"--save-annotated {args.save_annotated}: {exc.strerror or exc}") from None
        dest = open_destination(target, resume)
    except BaseException:
        if pool is not None:
            pool.close()
        raise
    writer = ResultWriter(dest, args.output, columns, record, write_header=resume is None or resume.need_header)
    ok = failed = 0
    status = write_error = stopped = None
    finished = False
    bar = tqdm(total=len(todo), unit="img", file=sys.stderr, desc="predicting",
               disable=args.no_progress or not expansion.any_folder or len(todo) < 2)
    try:
        with sigterm_raises():
            for results in chunk_results():
                for res in results:
                    writer.add(res)
                    ok, failed = ok + res.ok, failed + (not res.ok)
                    bar.update()
        finished = True
    except KeyboardInterrupt:
        status = 130
    except Terminated:
        status = 143
    except BrokenPipeError:
        status = 141
    except OSError as exc:  # the output cannot be written (disk full, ...): keep what is done
        write_error = exc
    except WorkerStopped as exc:  # a worker process died: keep what is done
        stopped = exc
    except BaseException:
        with _signals_held(), contextlib.suppress(Exception):
            writer.end()
            dest.commit() if writer.count else dest.discard()
        raise
    finally:
        bar.close()
        if pool is not None:
            pool.close(stop=not finished)
    with _signals_held():
        status, write_error = _close_output(target, dest, writer, status, write_error, resume is not None)
    if write_error is not None:
        raise AgekitError(write_error)
    if stopped is not None:
        where = "stdout" if target.kind == "stdout" else target.given
        raise AgekitError(f"{stopped}; the results of the {ok + failed} files before it are in {where}"
                          + (" (run again with --resume to continue)" if args.output in ("jsonl", "csv")
                             and target.kind == "file" else ""))

    n = ok + failed
    line = f"{n} file{'s' if n != 1 else ''}, {ok} ok, {failed} failed"
    skipped = expansion.skipped
    if skipped:
        line += "; " + _skipped_text(skipped)
    if resume is not None and len(todo) < len(items):
        line += f"; {len(items) - len(todo)} already in {target.given} (--resume)"
    if status in (130, 143):
        where = "stdout" if target.kind == "stdout" else target.given
        print(f"agekit: interrupted after {n} of {len(todo)} files; their results are in {where}"
              + (" (run again with --resume to continue)" if args.output in ("jsonl", "csv")
                 and target.kind == "file" else ""), file=sys.stderr)
    if status == 141:
        print("agekit: the output was closed (broken pipe); stopped", file=sys.stderr)
    if failed or n > 1 or skipped or resume is not None or status:
        print(line, file=sys.stderr)
    if status:
        return status
    return 1 if failed else 0


def _close_output(target, dest, writer, status, write_error, resuming: bool):
    """Complete the output after the loop (done, interrupted or broken): returns (status, error message)."""
    if status == 141:  # the reader went away: nothing more can be written there
        if target.kind == "stdout":
            _quiet_stdout()
        with contextlib.suppress(OSError):
            dest.commit() if writer.count or target.kind != "file" else dest.discard()
        return status, None
    if status is not None and writer.count == 0 and not resuming and target.kind == "file":
        dest.discard()  # interrupted before any file was done: an existing --out stays as it was
        return status, None
    try:
        if write_error is None:
            writer.end()
        dest.commit()
    except BrokenPipeError:
        if target.kind == "stdout":
            _quiet_stdout()
        return 141, None
    except OSError as exc:
        write_error = write_error or exc
    if write_error is None:
        return status, None
    where = getattr(dest, "tmp", None)
    kept = f"; the results so far are in {where}" if where is not None and where.exists() else ""
    return status, f"could not write {target.shown} ({write_error.strerror or write_error}){kept}"


def _quiet_stdout() -> None:
    """After a broken pipe on stdout: point it at /dev/null so that Python's exit flush stays silent."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def finish(args, results: list[FileResult], columns) -> int:
    """Write a list of results (stdout or --out) and print the summary; returns the exit code."""

    dest = open_destination(check_out(args.out))
    writer = ResultWriter(dest, args.output, columns, record)
    for r in results:
        writer.add(r)
    writer.end()
    dest.commit()
    failed = sum(not r.ok for r in results)
    n = len(results)
    if failed or n > 1:
        print(f"{n} file{'s' if n != 1 else ''}, {n - failed} ok, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def interval_text(f) -> str:
    return f"{f.interval[0]:.1f}-{f.interval[1]:.1f}"


def gender_text(f) -> str:
    return "" if f.gender is None else f"{f.gender} ({f.gender_prob:.2f})"
