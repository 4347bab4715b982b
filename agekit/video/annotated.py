"""--save-annotated for videos: every frame with its tracked faces' boxes, track ids and steady ages.

Written with cv2.VideoWriter to a temporary file beside the target (`.NAME.XXXX.mp4`), renamed over the
target when the run ends (also after a truncated input or Ctrl-C: the frames done are kept); a run that
fails before any frame removes it, so an existing file is never left half-written.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from agekit.errors import AgekitError
from agekit.io import keep_mode
from agekit.runtime.annotate import line_sizes, put_label

FOURCC = {".avi": "MJPG", ".mkv": "MJPG"}  # anything else (.mp4, .mov, .m4v): mp4v
COLORS = [(40, 200, 40), (255, 160, 0), (0, 160, 255), (200, 60, 200), (60, 200, 255), (255, 80, 80)]  # BGR


def label(face) -> str:
    """'#id 34 +-6, female' from the track's steady estimate ('#id ...' before its first scoring)."""
    f = face.fused
    if f is None:
        return f"#{face.track} ..."
    text = f"#{face.track} {f.age:.0f} +-{(f.interval[1] - f.interval[0]) / 2:.0f}"
    return text + (f", {f.gender}" if f.gender else "")


def draw_frame(frame: np.ndarray, result) -> np.ndarray:
    """A BGR copy of an RGB frame with the tracked faces of `result` (a FrameResult or None) drawn."""
    canvas = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
    if result is None:
        return canvas
    thick, scale = line_sizes(canvas.shape)
    for face in result.faces:
        color = COLORS[face.track % len(COLORS)]
        x1, y1, x2, y2 = (round(v) for v in face.box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thick)
        put_label(canvas, face.box, label(face), color, thick, scale)
    return canvas


class AnnotatedVideo:
    """Frames written to a temporary file, renamed over `target` by close(keep=True)."""

    def __init__(self, target, fps: float, width: int, height: int):
        self.target = Path(target)
        suffix = self.target.suffix.lower() or ".mp4"
        try:
            self.target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.target.name}.", suffix=suffix, dir=self.target.parent)
            os.close(fd)
        except OSError as exc:
            raise AgekitError(f"--save-annotated {target}: {exc.strerror or exc}") from None
        self.tmp = Path(tmp)
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*FOURCC.get(suffix, "mp4v")),
                                      float(fps or 30.0), (int(width), int(height)))
        if not self.writer.isOpened():
            self._remove()
            raise AgekitError(f"--save-annotated {target}: OpenCV cannot write a {suffix} video here")
        self.count = 0

    def write(self, frame: np.ndarray, result) -> None:
        self.writer.write(draw_frame(frame, result))
        self.count += 1

    def close(self, keep: bool = True) -> None:
        self.writer.release()
        if keep and self.count:

            keep_mode(self.tmp, self.target)
            os.replace(self.tmp, self.target)
        else:
            self._remove()

    def _remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)
