"""--save-annotated: the photo with each face's box, "age +-half-width, gender" and flags (OpenCV)."""
from __future__ import annotations

import os
import stat
import unicodedata
from pathlib import Path

import cv2
import numpy as np

from agekit.errors import AgekitError
from agekit.io import atomic_path
from agekit.runtime.inputs import url_file_name

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


def line_sizes(shape) -> tuple[int, float]:
    """(line thickness, font scale) that read well on an image of `shape`."""
    side = max(shape[:2])
    return max(1, round(side / 500)), max(0.4, side / 1200)


def put_label(canvas: np.ndarray, box, text: str, color, thick: int, scale: float) -> None:
    """`text` in black on a strip of `color` above `box` (below it where there is no room), drawn in place;
    also used for the tracked faces of a video (agekit.video.annotated)."""
    h, w = canvas.shape[:2]
    x1, y1, _, y2 = (round(v) for v in box)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    tx = min(max(0, x1), max(0, w - tw))
    ty = y1 - base - 2 if y1 - th - base - 2 >= 0 else min(h - base, y2 + th + 2)
    cv2.rectangle(canvas, (tx, ty - th - 2), (tx + tw, ty + base), color, -1)
    cv2.putText(canvas, text, (tx, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)


def draw(image: np.ndarray, faces, labels=None) -> np.ndarray:
    """A BGR copy of an RGB image with the faces drawn."""
    canvas = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    thick, scale = line_sizes(canvas.shape)
    for i, face in enumerate(faces):
        color = FLAGGED_COLOR if face.flags else COLOR
        x1, y1, x2, y2 = (int(round(v)) for v in face.box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thick)
        if face.landmarks is not None:
            for x, y in face.landmarks:
                cv2.circle(canvas, (int(round(x)), int(round(y))), thick + 1, color, -1)
        put_label(canvas, face.box, labels[i] if labels else label(face), color, thick, scale)
    return canvas


def _key(path: str) -> str:
    """Names that one file system may take for the same file (case-insensitive or normalising ones)."""
    return unicodedata.normalize("NFC", path).casefold()


def annotated_name(item, out_dir: Path) -> Path:
    """The annotated copy's path before collisions are resolved: a file found under a folder argument keeps
    its place under that folder (sub-folders mirrored); any other input is named after its file (a URL after
    the last part of its path, stdin "stdin"); .png stays .png, anything else becomes .jpg."""

    if item.url is not None:
        rel = Path(url_file_name(item.url))
    else:
        rel = item.path.relative_to(item.root) if item.root is not None else Path(item.path.name)
    ext = ".png" if rel.suffix.lower() == ".png" else ".jpg"
    return out_dir / rel.with_suffix(ext)


def plan_annotated(items, out_dir, protected: dict, flag: str = "--save-annotated") -> list:
    """The file each input's annotated copy goes to (None for inputs that already failed), decided before any
    image is read. Two inputs that would get the same name (b/x.jpg and c/x.jpg given as files, x.jpeg and
    x.jpg) are told apart by -2, -3, ... in input order; names are compared as a case-insensitive file system
    would. A symbolic link at a target is written through, to its target. Raises AgekitError (a usage
    error) when a copy would overwrite a protected file (an input, --out: `protected` maps real paths to
    what they are) or a folder or other non-file."""
    out_dir = Path(out_dir)
    by_identity = {}
    for real, what in protected.items():
        try:
            st = os.stat(real)
            by_identity[(st.st_dev, st.st_ino)] = what
        except OSError:
            pass
    taken: set = set()
    plan = []
    for item in items:
        if item.error is not None:
            plan.append(None)
            continue
        first = annotated_name(item, out_dir)
        target, n = first, 2
        while True:
            real = os.path.realpath(target)
            if _key(real) not in taken:
                break
            target = first.with_name(f"{first.stem}-{n}{first.suffix}")
            n += 1
        taken.add(_key(real))
        what = protected.get(real)
        try:
            st = os.stat(real)
        except OSError:
            st = None
        if st is not None:
            what = what or by_identity.get((st.st_dev, st.st_ino))
            if what is None and not stat.S_ISREG(st.st_mode):
                raise AgekitError(f"{flag} {out_dir}: {target} (for {item.name}) exists and is not a file")
        if what is not None:
            raise AgekitError(f"{flag} {out_dir}: the annotated copy of {item.name} would overwrite {what} "
                              f"{target}; choose another folder")
        plan.append(Path(real))
    return plan


def save_annotated(target: Path, image: np.ndarray, faces, labels=None) -> None:
    """Draw and write atomically (a temporary file beside the target, renamed when complete)."""
    canvas = draw(image, faces, labels)
    with atomic_path(target, suffix=target.suffix) as tmp:
        if not cv2.imwrite(str(tmp), canvas):
            raise AgekitError(f"could not write {target}")
