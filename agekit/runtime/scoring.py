"""Scoring files, the per-file path that `agekit predict` / `agekit check`, their worker processes, the HTTP
service and the Ray / Spark predictors share: each input read on its own (a bad file is its own error row),
the faces of a chunk of files scored in one model call, boxes and landmarks put back in the photo's pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import agekit.io
from agekit.errors import AgekitError, ImageError
from agekit.runtime.annotate import label, save_annotated
from agekit.runtime.estimator import check_box
from agekit.runtime.inputs import fetch


@dataclass
class FileResult:
    file: str
    faces: list = field(default_factory=list)  # FaceResult
    extra: list = field(default_factory=list)  # per face: dict of command-specific fields
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def read_input(item):
    """An input's image as agekit.io.LoadedImage: large photos reduced to the working size. An item with
    `data` (agekit.batch.predictor.Source: bytes read by Ray or Spark) is decoded from those bytes."""
    data = getattr(item, "data", None)
    source = data if data is not None else fetch(item) if item.url is not None else item.path
    return agekit.io.read_image(source, name=item.name, max_pixels=agekit.io.MAX_PIXELS,
                                work_pixels=agekit.io.WORK_PIXELS)


def _scaled_boxes(file_boxes, loaded):
    width, height = loaded.size
    boxes = [check_box(b, width, height) for b in file_boxes]  # errors in the photo's own pixels
    sx, sy = loaded.scale
    return [(x1 / sx, y1 / sy, x2 / sx, y2 / sy) for x1, y1, x2, y2 in boxes]


def to_photo_pixels(faces, loaded) -> None:
    """Boxes and landmarks found on a reduced working image, back in the photo's own pixels."""
    if not loaded.reduced:
        return
    sx, sy = loaded.scale
    for f in faces:
        x1, y1, x2, y2 = f.box
        f.box = (x1 * sx, y1 * sy, x2 * sx, y2 * sy)
        if f.landmarks is not None:
            f.landmarks = np.asarray(f.landmarks, dtype=np.float64) * np.array([sx, sy])


# How many files share one model call: the faces of a chunk are scored together (on a folder of face chips
# 109 images/s against 88 one file at a time, benchmarks/predict_speed.py), and a chunk is the most an
# interrupt can lose before it is written.
CHUNK_FILES = 32


def _guarded(args, res: FileResult, work) -> FileResult:
    """Run work(); any error of this one input becomes its error row. Nothing but a KeyboardInterrupt-like
    exception escapes."""
    try:
        work()
    except ImageError as exc:
        res.error = exc.reason
    except AgekitError as exc:
        res.error = str(exc)
    except Exception as exc:  # one odd file must not stop a batch
        if getattr(args, "verbose", False):
            raise
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        res.error = f"unexpected error ({type(exc).__name__}: {detail})"
    return res


class _Pending:
    """One input on its way through a chunk: its result row, decoded image, boxes (None: detect) and
    where its annotated copy goes (None: nowhere)."""

    def __init__(self, item, annotated=None):
        self.item, self.res, self.annotated = item, FileResult(item.name, error=item.error), annotated
        self.loaded = self.boxes = None


def _read(args, pending: _Pending, boxes) -> None:
    pending.loaded = read_input(pending.item)
    if boxes:
        file_boxes = boxes.for_input(pending.item)
        if file_boxes is None:
            raise AgekitError("no box given for this file in --boxes")
        pending.boxes = _scaled_boxes(file_boxes, pending.loaded)


def _finish(pending: _Pending, faces, per_face) -> None:
    res, loaded, annotated = pending.res, pending.loaded, pending.annotated
    if not faces:
        raise AgekitError("no face found")
    res.extra = [per_face(f) if per_face else {} for f in faces]
    if annotated is not None:  # drawn on the working image, before the boxes go back to photo pixels
        labels = [label(f, e.get("label")) for f, e in zip(faces, res.extra)]
        save_annotated(annotated, loaded.array, faces, labels)
    to_photo_pixels(faces, loaded)
    res.faces = faces


def _predict_one(args, estimator, pending: _Pending):
    if args.no_detect:
        return estimator.predict_crops([pending.loaded.array], aligned=False)
    return estimator.predict(pending.loaded.array, boxes=pending.boxes)


def process_chunk(args, estimator, items, boxes=None, per_face=None, annotated=None) -> list[FileResult]:
    """Inputs' results, in order. Each input is read on its own (a bad file is its own error row), then the
    faces of all readable inputs are scored in one model call; if that call fails, each input is scored
    alone, so the failure is pinned on the file that caused it."""
    pending = [_Pending(item, dest) for item, dest in zip(items, annotated or [None] * len(items))]
    ready = []
    for p in pending:
        if not p.res.error and _guarded(args, p.res, lambda p=p: _read(args, p, boxes)).ok:
            ready.append(p)
    batch = None
    if len(ready) > 1 and not args.no_detect:
        try:
            batch = estimator.predict_batch([p.loaded.array for p in ready],
                                            boxes=[p.boxes for p in ready] if boxes else None)
        except Exception:  # noqa: BLE001 (onnxruntime and OpenCV raise their own types; Ctrl-C still passes)
            batch = None  # score one by one below: the error row goes to the file that raised it
    for k, p in enumerate(ready):
        faces = batch[k] if batch is not None else None
        _guarded(args, p.res, lambda p=p, faces=faces: _finish(
            p, faces if faces is not None else _predict_one(args, estimator, p), per_face))
    return [p.res for p in pending]


def record(r: FileResult) -> dict:
    """One file's result as `agekit predict --output json` writes it."""
    if r.ok:
        faces = [{"face": i + 1, **f.to_dict(), **{k: v for k, v in e.items() if k != "label"}}
                 for i, (f, e) in enumerate(zip(r.faces, r.extra))]
        return {"file": r.file, "ok": True, "faces": faces}
    return {"file": r.file, "ok": False, "error": r.error}


def records(results: list[FileResult]) -> list[dict]:
    return [record(r) for r in results]
