"""--save-annotated: the photo with each face's box, "age +-half-width, gender" and flags (OpenCV)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from agekit.errors import AgekitError
from agekit.io import atomic_path

COLOR = (40, 200, 40)  # BGR
FLAGGED_COLOR = (0, 160, 255)


def label(face, extra: str | None = None) -> str:
    text = f"{face.age:.0f} +-{face.half_width:.0f}"
    if face.gender:
        text += f", {face.gender}"
    if extra:
        text += f", {extra}"
    if face.flags:
        text += f" ({', '.join(face.flags)})"
    return text


def draw(image: np.ndarray, faces, labels=None) -> np.ndarray:
    """A BGR copy of an RGB image with the faces drawn."""
    canvas = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    h, w = canvas.shape[:2]
    thick = max(1, round(max(h, w) / 500))
    scale = max(0.4, max(h, w) / 1200)
    for i, face in enumerate(faces):
        color = FLAGGED_COLOR if face.flags else COLOR
        x1, y1, x2, y2 = (int(round(v)) for v in face.box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thick)
        if face.landmarks is not None:
            for x, y in face.landmarks:
                cv2.circle(canvas, (int(round(x)), int(round(y))), thick + 1, color, -1)
        text = labels[i] if labels else label(face)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        tx = min(max(0, x1), max(0, w - tw))
        ty = y1 - base - 2 if y1 - th - base - 2 >= 0 else min(h - base, y2 + th + 2)
        cv2.rectangle(canvas, (tx, ty - th - 2), (tx + tw, ty + base), color, -1)
        cv2.putText(canvas, text, (tx, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return canvas


def annotated_name(path: Path, root: Path | None, out_dir: Path, taken: set) -> Path:
    """Output file for an input: mirrors its place under a folder argument; .png stays .png, else .jpg;
    a name already used in this run gets -2, -3, ..."""
    rel = path.relative_to(root) if root is not None else Path(path.name)
    ext = ".png" if path.suffix.lower() == ".png" else ".jpg"
    target = out_dir / rel.with_suffix(ext)
    n = 2
    while str(target) in taken:
        target = out_dir / rel.with_name(f"{rel.stem}-{n}{ext}")
        n += 1
    taken.add(str(target))
    return target


def save_annotated(target: Path, image: np.ndarray, faces, labels=None) -> None:
    """Draw and write atomically (a temporary file beside the target, renamed when complete)."""
    canvas = draw(image, faces, labels)
    with atomic_path(target, suffix=target.suffix) as tmp:
        if not cv2.imwrite(str(tmp), canvas):
            raise AgekitError(f"could not write {target}")
