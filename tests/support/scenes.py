"""Photos composed in memory for the detector and predict tests: blurred colour noise (no face at any scale)
with UTKFace chips pasted in at known places, sizes and quarter turns, so every face has a true box.
The chips come from ../shared/data (the `chips` fixture in tests/conftest.py); nothing is written to disk."""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

# Ground-truth face box inside a 200x200 UTKFace chip, as fractions of its side (benchmarks/detectors.py).
CHIP_FACE_BOX = (0.06, 0.145, 0.925, 0.995)


def chip_paths(utkface: Path, n: int = 4) -> list[Path]:
    """Adults 25-40 (mostly frontal), the first ones in name order: deterministic for a given copy of the data."""
    return sorted(p for p in Path(utkface).glob("*.jpg") if re.match(r"(2[5-9]|3\d|40)_", p.name))[:n]


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def noise_scene(seed: int = 0, height: int = 480, width: int = 640) -> np.ndarray:
    """Blurred colour noise: no face-like structure at any scale."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (height // 8, width // 8, 3)).astype(np.float32)
    big = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    big = 0.7 * big + 0.3 * rng.uniform(0, 255, (height, width, 3))
    return np.clip(cv2.GaussianBlur(big, (0, 0), 1.5), 0, 255).astype(np.uint8)


def paste(scene: np.ndarray, chip: np.ndarray, x: int, y: int, side: int, quarter_turns: int = 0):
    """Blend `chip` (resized to side x side, then turned by quarter_turns x 90 degrees counter-clockwise)
    with its top-left at (x, y), clipped at the image border; return the ground-truth face box."""
    chip = cv2.resize(chip, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)
    mask = np.zeros((side, side), np.float32)
    edge = max(2, side // 12)
    mask[edge:-edge, edge:-edge] = 1.0
    mask = cv2.GaussianBlur(mask, (0, 0), edge / 2.0)[:, :, None]
    chip, mask = np.rot90(chip, quarter_turns), np.rot90(mask, quarter_turns)
    h, w = scene.shape[:2]
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + side, w), min(y + side, h)
    region = scene[y0:y1, x0:x1].astype(np.float32)
    a = mask[y0 - y:y1 - y, x0 - x:x1 - x]
    scene[y0:y1, x0:x1] = np.clip(a * chip[y0 - y:y1 - y, x0 - x:x1 - x] + (1 - a) * region + 0.5, 0, 255).astype(np.uint8)
    fx1, fy1, fx2, fy2 = (v * side for v in CHIP_FACE_BOX)
    corners = np.array([[fx1, fy1], [fx2, fy2]]) - side / 2.0
    for _ in range(quarter_turns % 4):   # counter-clockwise quarter turn about the chip centre (y down)
        corners = np.stack([corners[:, 1], -corners[:, 0]], axis=1)
    corners += [x + side / 2.0, y + side / 2.0]
    return (*corners.min(0), *corners.max(0))
