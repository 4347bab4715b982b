"""FacePredictor: one batch of image paths (or bytes) in, one Arrow row per face out.

It reuses `agekit predict`'s per-file path (agekit.runtime.scoring.process_chunk): each file is read on its own,
the faces of the batch go through the model in one call, and a file that fails (unreadable, not an image,
no face) becomes one row with `error` set and empty prediction columns, so one bad file never fails a batch.
The class holds no Ray or Spark state: Ray Data creates one instance per actor (`map_batches(FacePredictor,
compute=ActorPoolStrategy(size=N))`), a Spark job one per executor's Python worker.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from agekit.runtime.scoring import process_chunk
from agekit.runtime.estimator import AgeEstimator

# (column, Arrow type name) of every row; `face` is 1-based, as in `agekit predict` (null on an error row).
# Ages, intervals and boxes are not rounded; boxes are in the photo's own pixels.
COLUMNS = (("path", "string"), ("face", "int32"), ("age", "float64"), ("std", "float64"), ("lo", "float64"),
           ("hi", "float64"), ("level", "float64"), ("gender", "string"), ("gender_prob", "float64"),
           ("female_prob", "float64"), ("x1", "float64"), ("y1", "float64"), ("x2", "float64"),
           ("y2", "float64"), ("score", "float64"), ("rotation", "int32"), ("flags", "string"),
           ("error", "string"))


def schema():
    """The rows' Arrow schema."""
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, kind)()) for name, kind in COLUMNS])


def ddl() -> str:
    """The rows' schema as a Spark SQL DDL string (for DataFrame.mapInArrow)."""
    spark = {"string": "STRING", "int32": "INT", "float64": "DOUBLE"}
    return ", ".join(f"{name} {spark[kind]}" for name, kind in COLUMNS)


@dataclass
class Source:
    """One input as process_chunk reads it: `name` is what the rows call it; the image comes from `data`
    (bytes already read, e.g. by ray.data.read_binary_files), else from `url`, else from `path`."""

    name: str
    path: Path | None = None
    data: bytes | None = None
    url: str | None = None
    error: str | None = None
    real: str | None = None


def _sources(batch, root: Path | None) -> list[Source]:
    names = [str(p) for p in _column(batch, "path")]
    data = _column(batch, "bytes")
    errors = _column(batch, "error")
    out = []
    for i, name in enumerate(names):
        item = Source(name, error=None if errors is None or errors[i] is None else str(errors[i]))
        if data is not None and data[i] is not None:
            item.data = bytes(data[i])
        elif name.lower().startswith(("http://", "https://")):
            item.url = name
        else:
            item.path = Path(name) if root is None else root / os.path.expanduser(name)
        out.append(item)
    return out


def _column(batch, name: str):
    """A column of a numpy dict, pandas frame or Arrow table as a Python list (None when absent)."""
    if hasattr(batch, "column_names"):  # pyarrow.Table
        return batch.column(name).to_pylist() if name in batch.column_names else None
    if name not in batch:
        return None
    column = batch[name]
    return column.tolist() if hasattr(column, "tolist") else list(column)


class FacePredictor:
    """Per-face rows (COLUMNS) for a batch with a `path` column (and optionally `bytes`: the file's content,
    and `error`: an input already known to be bad). Relative paths are read under `root` (the rows keep the
    path as given). The estimator options are AgeEstimator's; threads=None takes $OMP_NUM_THREADS, which
    Ray sets to the CPUs of each actor. no_detect: every image is one pre-cropped face."""

    def __init__(self, model=None, level: float = 0.9, detector: str = "default", threshold: float | None = None,
                 min_face: float = 0, max_faces: int | None = None, threads: int | None = None,
                 detector_options: dict | None = None, no_detect: bool = False, root: str | None = None):

        self.estimator = AgeEstimator(model=model, detector=detector, threshold=threshold, min_face=min_face,
                                      max_faces=max_faces, level=level, threads=threads,
                                      detector_options=detector_options)
        if not no_detect:
            _ = self.estimator.detector  # a detector that cannot run fails here, once, not on every file
        self.options = SimpleNamespace(no_detect=no_detect, verbose=False)  # what process_chunk reads
        self.root = None if root is None else Path(root)

    def __call__(self, batch):
        import pyarrow as pa


        results = process_chunk(self.options, self.estimator, _sources(batch, self.root))
        rows = {name: [] for name, _ in COLUMNS}
        for res in results:
            for values in _rows(res):
                for (name, _), value in zip(COLUMNS, values):
                    rows[name].append(value)
        return pa.Table.from_pydict(rows, schema=schema())


@functools.lru_cache(maxsize=4)
def shared_predictor(**options) -> FacePredictor:
    """One FacePredictor per process and options (hashable values only): for engines that call a plain
    function per batch, such as Spark's mapInArrow, so that each worker process loads the model once."""
    return FacePredictor(**options)


def _rows(res):
    if not res.ok:
        return [[res.file] + [None] * (len(COLUMNS) - 2) + [res.error]]
    return [[res.file, i + 1, f.age, f.std, f.interval[0], f.interval[1], f.level, f.gender, f.gender_prob,
             f.female_prob, *f.box, f.score, int(f.rotation), ";".join(f.flags), None]
            for i, f in enumerate(res.faces)]
