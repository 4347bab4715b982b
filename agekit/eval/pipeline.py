"""Score an exported ONNX model through the real predict pipeline on a dataset's raw images.

    from agekit.eval.pipeline import evaluate_onnx
    result = evaluate_onnx("agekit/weights/agekit-default.onnx", "fgnet", split="all", thresholds=(18,),
                           out_dir="runs/eval-fgnet")

Each image file goes through `agekit.runtime.AgeEstimator.predict` exactly as a user's photo would
(detector with its rotation retry, landmark alignment, model, calibrated interval). Of the faces found,
the labelled one is the one training picks (`agekit.data.detected.main_face`: the largest, discounted by
its distance from the centre). An image without a face (or unreadable) is a miss: counted, listed with its
reason, and left out of the metrics, so the metrics are over found faces and the miss rate is beside them.

Torch-free: this needs only what prediction needs (onnxruntime, OpenCV, numpy); the report's plots need
matplotlib and are skipped without it.
"""
from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from agekit import __version__
from agekit.data.detected import main_face
from agekit.data.records import AGE_VALID_RANGE, default_root, read_dataset
from agekit.data.splits import assign_splits, hash_unit, seeded_subset, select
from agekit.errors import AgekitError, ImageError
from agekit.eval.breakdown import (
    band_table,
    inside_interval,
    interval_coverage,
    mae_by_group_ci,
)
from agekit.eval.metrics import (
    GENDER_NAMES,
    RACE_NAMES,
    compute_metrics,
    gender_accuracy,
)
from agekit.eval.pipeline_report import pipeline_sections
from agekit.eval.report import write_report
from agekit.eval.shift import SHIFTS, apply_shift
from agekit.eval.thresholds import challenge25, threshold_key, threshold_report
from agekit.io import load_image, write_text_atomic
from agekit.runtime import AgeEstimator
from agekit.runtime.onnx_model import resolve_model

# The packaged split file each dataset's test split comes from (others: every image, or a seeded random
# split when train/val/test is asked for).
DEFAULT_SPLIT_FILES = {"utkface": "utkface_v1", "fgnet": "fgnet_dev_v1"}
# The checkpoint path's rule for a dataset without a split of its own (agekit.engine.evaluate).
RANDOM_SPLIT = {"kind": "random", "seed": 0, "val_fraction": 0.1, "test_fraction": 0.2}
SHIFT_CSV_COLUMNS = ["shift", "key", "true_age", "found", "pred_age", "female_prob", "interval_lo", "interval_hi",
                     "reason"]
FACE_CHOICE = "agekit.data.detected.main_face over the faces AgeEstimator.predict returns"
MISS_RULE = "no face found (or unreadable image): counted and listed, left out of the metrics"


# ------------------------------------------------------------------------------------------ protocol
def resolve_split(dataset: str, split: str | None, split_file: str | None) -> tuple[str, dict | None]:
    """(split, split spec for agekit.data.splits.assign_splits, or None for every image).

    Default: the test split of the dataset's packaged split file (DEFAULT_SPLIT_FILES), else all images.
    An explicit train/val/test for a dataset without a split file uses a seeded random split.
    """
    if split is not None and split not in ("train", "val", "test", "all"):
        raise AgekitError(f"unknown split '{split}'; choose from train, val, test, all")
    file = split_file or DEFAULT_SPLIT_FILES.get(dataset)
    if split is None:
        split = "test" if file else "all"
    if split == "all":
        return split, None
    return split, ({"kind": "file", "file": file} if file else dict(RANDOM_SPLIT))


def select_records(records, split: str, spec: dict | None) -> tuple[list, dict]:
    """The records of `split` under `spec` (None: all of them) and the split rule's header."""
    if spec is None:
        return list(records), {"rule": "all images"}

    assignment, header = assign_splits(records, spec)
    return select(records, assignment, split), header


def image_seed(key: str, seed: int) -> int:
    """A per-image seed for the random shifts (different grain per image, the same on every run)."""

    return int(hash_unit(key, seed) * 2**32)


# ------------------------------------------------------------------------------------------ pipeline
class _Candidate:
    """A FaceResult seen the way `main_face` reads a detection (box, width, height)."""

    def __init__(self, face):
        self.face, self.box = face, tuple(float(v) for v in face.box)
        self.width, self.height = self.box[2] - self.box[0], self.box[3] - self.box[1]


def labelled_face(faces, shape):
    """The FaceResult a dataset label belongs to among `faces` of an image of `shape` (H, W, ...), or None."""

    chosen = main_face([_Candidate(f) for f in faces], shape)
    return None if chosen is None else chosen.face


def face_row(est, face, thresholds) -> dict:
    """What the report keeps of one scored face: age, std, interval, P(female), flags, box width and the
    age check's answer at each threshold."""
    checks = {}
    for t in thresholds:
        decision, p_over = est.check_age(face, t)
        checks[_tkey(t)] = {"decision": decision, "p_over": float(p_over)}
    return {"found": True, "pred_age": float(face.age), "pred_std": float(face.std),
            "lo": float(face.interval[0]), "hi": float(face.interval[1]),
            "female_prob": None if face.female_prob is None else float(face.female_prob),
            "flags": list(face.flags), "face_width": float(face.box[2] - face.box[0]),
            "rotation": int(face.rotation), "checks": checks}


def score_image(est, image: np.ndarray, thresholds=()) -> dict:
    """Run the pipeline on one RGB image: face_row of the labelled face, or {'found': False, 'reason'}."""
    face = labelled_face(est.predict(image), image.shape)
    if face is None:
        return {"found": False, "reason": "no face found"}
    return face_row(est, face, thresholds)


def run_records(est, records, thresholds=(), shifts=(), seed: int = 0, progress: bool = True) -> dict:
    """Score every record's raw image clean and under each shift.

    Returns {'clean': [row, ...], <shift name>: [row, ...], ...}: one row per record, in order, with the
    record's 'key', 'path', 'true_age', 'gender', 'race' added. Each image is decoded once; the shifts are
    applied to the decoded image (face32 uses the clean run's face width).
    """


    runs = {name: [] for name in ("clean", *shifts)}
    for r in tqdm(records, desc="evaluating", unit="img", disable=not progress):
        label = {"key": r.key, "path": r.path, "true_age": float(r.age), "gender": r.gender, "race": r.race}
        try:
            image = load_image(r.path)
        except ImageError as exc:
            for rows in runs.values():
                rows.append({**label, "found": False, "reason": f"unreadable: {exc.reason}"})
            continue
        clean = _scored(est, image, thresholds)
        runs["clean"].append({**label, **clean})
        for name in shifts:
            shifted = apply_shift(name, image, seed=image_seed(r.key, seed), face_width=clean.get("face_width"))
            runs[name].append({**label, **_scored(est, shifted, thresholds)})
    return runs


def _scored(est, image, thresholds) -> dict:
    """score_image, with an error of this one image (e.g. a degenerate face) recorded as a miss row rather
    than ending the evaluation."""
    try:
        return score_image(est, image, thresholds)
    except (AgekitError, ValueError) as exc:
        return {"found": False, "reason": f"error: {exc}"}


# ------------------------------------------------------------------------------------------ summaries
def _column(rows, key, default=np.nan) -> np.ndarray:
    return np.array([default if r.get(key) is None else r[key] for r in rows], dtype=np.float64)


def summarise(rows: list[dict], level: float, thresholds=(), seed: int = 0) -> dict:
    """All metrics of one run (rows from run_records) as a JSON-ready dict.

    compute_metrics' keys over the found faces, plus: 'images', 'found', 'misses', 'miss_rate',
    'missed' [{'key', 'reason'}], 'signed_error' (mean pred - true), 'by_band' (breakdown.band_table),
    'coverage' (breakdown.interval_coverage at `level`), 'mae_by_gender_ci' / 'mae_by_race_ci' (when labels
    are known), 'challenge25', and 'thresholds' (thresholds.threshold_report) when thresholds are given.
    Raises AgekitError when no face was found at all.
    """

    found = [r for r in rows if r["found"]]
    missed = [{"key": r["key"], "reason": r["reason"]} for r in rows if not r["found"]]
    if not found:
        reasons = sorted({m["reason"] for m in missed})
        raise AgekitError(f"no face found in any of the {len(rows)} images ({'; '.join(reasons)[:200]})")
    true, pred, std = _column(found, "true_age"), _column(found, "pred_age"), _column(found, "pred_std")
    lo, hi = _column(found, "lo"), _column(found, "hi")
    female = [r.get("female_prob") for r in found]
    gender, race = [r.get("gender") for r in found], [r.get("race") for r in found]
    metrics = compute_metrics(true, pred, gender=gender,
                              gender_pred=female if any(f is not None for f in female) else None,
                              race=race, pred_std=std, seed=seed)
    abs_err = np.abs(pred - true)
    metrics.update({
        "images": len(rows), "found": len(found), "misses": len(missed), "miss_rate": len(missed) / len(rows),
        "missed": missed, "signed_error": float(np.mean(pred - true)),
        "by_band": band_table(true, pred, lo, hi), "coverage": interval_coverage(true, lo, hi, level),
        "challenge25": challenge25(true, pred),
    })
    for key, labels, names in (("mae_by_gender_ci", gender, GENDER_NAMES), ("mae_by_race_ci", race, RACE_NAMES)):
        groups = mae_by_group_ci(abs_err, labels, names, seed=seed)
        if groups:
            metrics[key] = groups
    if thresholds:
        decisions = {t: [r["checks"][_tkey(t)]["decision"] for r in found] for t in thresholds}
        metrics["thresholds"] = threshold_report(true, decisions, gender, race)
    return metrics


def condition_summary(rows: list[dict], clean_rows: list[dict] | None = None) -> dict:
    """Headline figures of one run for the shift table: {'images', 'found', 'misses', 'mae', 'signed_error',
    'gender_accuracy', 'coverage', 'n_common', 'mae_common', 'clean_mae_common', 'delta_mae_common', 'flagged'}.

    'mae_common' / 'clean_mae_common' are this run's and the clean run's MAE over the images found in both
    (the same faces, so their difference 'delta_mae_common' is what the shift did to the estimates, not a
    change in which faces the detector kept); 'flagged' the share of found faces carrying a quality flag
    (small / blurry). None where nothing was found.
    """

    found = [r for r in rows if r["found"]]
    out = {"images": len(rows), "found": len(found), "misses": len(rows) - len(found), "mae": None,
           "signed_error": None, "gender_accuracy": None, "coverage": None, "n_common": 0, "mae_common": None,
           "clean_mae_common": None, "delta_mae_common": None, "flagged": None}
    if not found:
        return out
    true, pred = _column(found, "true_age"), _column(found, "pred_age")
    female = [r.get("female_prob") for r in found]
    out.update(mae=float(np.mean(np.abs(pred - true))), signed_error=float(np.mean(pred - true)),
               coverage=float(inside_interval(true, _column(found, "lo"), _column(found, "hi")).mean()),
               flagged=float(np.mean([bool(r.get("flags")) for r in found])))
    if any(f is not None for f in female):
        out["gender_accuracy"] = gender_accuracy(female, [r.get("gender") for r in found])
    clean = {r["key"]: r for r in (clean_rows if clean_rows is not None else rows) if r["found"]}
    common = [r for r in found if r["key"] in clean]
    out["n_common"] = len(common)
    if common:
        before = [clean[r["key"]] for r in common]
        out["mae_common"] = float(np.mean(np.abs(_column(common, "pred_age") - _column(common, "true_age"))))
        out["clean_mae_common"] = float(np.mean(np.abs(_column(before, "pred_age") - _column(before, "true_age"))))
        out["delta_mae_common"] = out["mae_common"] - out["clean_mae_common"]
    return out


def shift_table(runs: dict) -> dict:
    """{condition: condition_summary + 'description'} for 'clean' and every shift in `runs`."""

    clean = runs["clean"]
    out = {}
    for name, rows in runs.items():
        description = "the images as distributed" if name == "clean" else SHIFTS[name][1]
        out[name] = {"description": description, **condition_summary(rows, clean)}
    return out


def prediction_rows(rows: list[dict]) -> list[dict]:
    """predictions.csv rows (found faces): the report's columns plus the interval, flags and checks."""
    out = []
    for r in rows:
        if not r["found"]:
            continue
        row = {"key": r["key"], "path": r["path"], "true_age": r["true_age"], "pred_age": r["pred_age"],
               "pred_std": r["pred_std"], "interval_lo": r["lo"], "interval_hi": r["hi"],
               "flags": " ".join(r["flags"])}
        if r.get("gender") is not None:
            row["gender"] = int(r["gender"])
        if r.get("female_prob") is not None:
            row["gender_prob"] = r["female_prob"]  # P(female), as agekit.engine.evaluate writes it
            row["gender_pred"] = int(r["female_prob"] >= 0.5)
        if r.get("race") is not None:
            row["race"] = int(r["race"])
        for t, check in r["checks"].items():
            row[f"check_{t}"] = check["decision"]
        out.append(row)
    return out


def shift_rows(runs: dict) -> list[dict]:
    """shift_predictions.csv rows: one per (image, shifted condition) with a face found or the miss reason."""
    out = []
    for name, rows in runs.items():
        if name == "clean":
            continue
        for r in rows:
            out.append({"shift": name, "key": r["key"], "true_age": r["true_age"], "found": int(r["found"]),
                        "pred_age": r.get("pred_age"), "female_prob": r.get("female_prob"),
                        "interval_lo": r.get("lo"), "interval_hi": r.get("hi"), "reason": r.get("reason")})
    return out


def _tkey(threshold) -> str:

    return threshold_key(threshold)


# ------------------------------------------------------------------------------------------ entry point
def evaluate_onnx(model, dataset: str | None = None, root=None, split: str | None = None,
                  split_file: str | None = None, limit: int | None = None, thresholds=(), shift=False,
                  out_dir=None, progress: bool = True, threads: int | None = None, level: float = 0.9,
                  seed: int = 0, command: str | None = None) -> dict:
    """Evaluate an exported ONNX model through the predict pipeline on raw dataset images.

    model: .onnx path. dataset: reader name (default: the dataset the model was trained on). root: dataset
    folder (default $AGEKIT_DATA/<folder>). split / split_file: see resolve_split. limit: a seeded subset of
    that many images. thresholds: ages for the age-check table. shift: True for every shift of
    agekit.eval.shift.SHIFTS, or a list of names. out_dir: write metrics.json, predictions.csv, report.md
    (+ shift_predictions.csv, plots) there, each atomically. threads: onnxruntime threads. level: interval
    level. command: the command line, recorded in the protocol.
    Returns {'title', 'metrics', 'protocol', 'files', 'runs'} (runs: the per-image rows of each condition).
    User errors (model, dataset, empty split, nothing detected) raise AgekitError.
    """

    model = resolve_model(model)  # a path, or a packaged model's name ("default", "fast")
    if not model.is_file():
        raise AgekitError(f"model file not found: {model}")
    shifts = list(SHIFTS) if shift is True else list(shift or [])
    unknown = [s for s in shifts if s not in SHIFTS]
    if unknown:
        raise AgekitError(f"unknown shift(s) {', '.join(unknown)}; known: {', '.join(SHIFTS)}")
    thresholds = tuple(float(t) for t in thresholds)
    if limit is not None and int(limit) < 1:
        raise AgekitError(f"--limit must be at least 1, got {limit}")
    est = AgeEstimator(model=model, threads=threads, level=level)
    dataset = dataset or est.model.meta.get("dataset")
    if not dataset:
        raise AgekitError(f"{model} does not record its training dataset; pass --dataset")
    root = Path(root).expanduser() if root else default_root(dataset)
    result = read_dataset(dataset, root)
    records = [r for r in result.records if AGE_VALID_RANGE[0] <= r.age <= AGE_VALID_RANGE[1]]
    if not records:
        raise AgekitError(f"{root}: no usable labelled images for dataset '{dataset}'")
    split, spec = resolve_split(dataset, split, split_file)
    chosen, header = select_records(records, split, spec)
    if not chosen:
        raise AgekitError(f"split '{split}' of {root} is empty (split rule {header})")

    chosen = seeded_subset(chosen, limit, seed)

    t0 = time.perf_counter()
    runs = run_records(est, chosen, thresholds, shifts, seed, progress)
    seconds = time.perf_counter() - t0
    metrics = summarise(runs["clean"], est.level, thresholds, seed)
    if shifts:
        metrics["shift"] = shift_table(runs)
    meta = est.model.meta
    protocol = {
        "model": str(model),
        "model_sha256": _sha256(model),
        "method": meta.get("method"), "backbone": meta.get("backbone"),
        "trained_on": {"dataset": meta.get("dataset"), "split": meta.get("split")},
        "calibrated": bool(est.calibration), "level": est.level,
        "detector": est.detector_name,
        "dataset": dataset, "data_root": str(root), "split": split, "split_rule": header,
        "limit": limit, "subset_rule": f"agekit.data.splits.seeded_subset(seed={seed})" if limit else None,
        "n_images": len(chosen), "skipped_by_reader": len(result.skipped),
        "face_choice": FACE_CHOICE, "misses": MISS_RULE,
        "thresholds": [_tkey(t) for t in thresholds] or None, "shifts": shifts or None,
        "threads": threads, "eval_seconds": round(seconds, 1), "agekit_version": __version__,
        "command": command,
    }
    title = f"{model.name} on {dataset} ({split}): raw images through the predict pipeline"
    result = {"title": title, "metrics": metrics, "protocol": protocol, "files": {}, "runs": runs}
    if out_dir is not None:
        result["files"] = write_pipeline_report(out_dir, result)
    return result


def default_out_dir(protocol: dict) -> Path:
    """runs/eval-<model stem>-<dataset>-<split> (runs/ is git-ignored; the model may sit in a read-only
    package folder, so the report does not go beside it)."""
    return Path("runs") / f"eval-{Path(protocol['model']).stem}-{protocol['dataset']}-{protocol['split']}"


def write_pipeline_report(out_dir, result: dict) -> dict:
    """Write an evaluate_onnx result into out_dir: metrics.json, predictions.csv, report.md
    (+ shift_predictions.csv with shifts, + PNG plots when matplotlib is installed), each atomically.
    Returns {name: path}."""

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics, protocol, runs, title = result["metrics"], result["protocol"], result["runs"], result["title"]
    files = {}
    if len(runs) > 1:  # written before report.md, whose presence means every file is in place
        files["shift_predictions"] = out_dir / "shift_predictions.csv"
        write_text_atomic(files["shift_predictions"], _csv_text(shift_rows(runs), SHIFT_CSV_COLUMNS))
    files.update(write_report(out_dir, metrics, prediction_rows(runs["clean"]), title=title, protocol=protocol,
                              complexity=None, extra_sections=pipeline_sections(metrics),
                              plots=importlib.util.find_spec("matplotlib") is not None))
    return files


def _csv_text(rows: list[dict], columns: list[str]) -> str:
    """CSV text of rows with these columns; None is an empty cell, floats keep 4 decimals."""

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else (f"{row[k]:.4f}".rstrip("0").rstrip(".")
                                                          if isinstance(row[k], float) else row[k])
                         for k in columns})
    return buffer.getvalue()


def _sha256(path: Path) -> str:

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
