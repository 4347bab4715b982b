"""Context photos of one person with known ages, for personalised prediction with an ONNX AgeEstimator:
`AgeEstimator.predict(..., context=[(image_or_path, age), ...])` and `agekit predict --context-dir DIR`
(DIR/ages.csv names the photos). Each photo's best face is embedded once (`embed_context`); the ages are
then applied by `agekit.runtime.personal`. Numpy only (no torch).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from agekit.errors import AgekitError, ImageError
from agekit.runtime.personal import parse_age

AGES_FILE = "ages.csv"


@dataclass
class Context:
    """Context photos made ready once: one embedding per photo (None: no face), the model's own age estimate
    of that face (None: no face), the given ages, names, notes."""

    features: list
    base_ages: list
    ages: list
    names: list
    notes: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ages)


def _inside(folder: Path, root: Path, name: str, where: str) -> Path:
    """folder/name, when it is a file name relative to the folder that stays inside it once `..` and symbolic
    links are resolved (root: the folder resolved); else AgekitError naming the row. A downloaded context
    folder's ages.csv thus cannot make agekit read /etc/passwd, ~/.ssh/... or ../../anything."""
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).anchor:
        raise AgekitError(f"{where}: {name} is an absolute path; name the photo relative to {folder}")
    path = folder / name
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte in the name
        raise AgekitError(f"{where}: {name!r} is not a usable file name") from None
    if not resolved.is_relative_to(root):
        raise AgekitError(f"{where}: {name} is outside {folder} (resolved to {resolved}); ages.csv may list only "
                          "photos inside its own folder")
    return path


def read_ages_csv(folder) -> list[tuple[Path, float]]:
    """DIR/ages.csv with columns file,age (header required; extra columns ignored): [(DIR/file, age)].
    Errors name the line: missing file, non-numeric or out-of-range age, a file listed twice, no rows, and a
    file name that is absolute or leads outside DIR (through `..` or a symbolic link)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise AgekitError(f"--context-dir {folder}: not a folder")
    table = folder / AGES_FILE
    if not table.is_file():
        raise AgekitError(f"--context-dir {folder}: no {AGES_FILE} (columns file,age) in it")
    try:
        text = table.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise AgekitError(f"{table}: not readable as UTF-8 text ({type(exc).__name__})") from None
    rows = list(csv.reader(text.splitlines()))
    rows = [(i + 1, r) for i, r in enumerate(rows) if any(c.strip() for c in r)]
    if not rows:
        raise AgekitError(f"{table}: empty (expected a header file,age and one row per photo)")
    header = [c.strip().lower() for c in rows[0][1]]
    if "file" not in header or "age" not in header:
        raise AgekitError(f"{table}: the first line must name the columns file,age (got {','.join(header)})")
    fi, ai = header.index("file"), header.index("age")
    root = folder.resolve()
    out, seen = [], {}
    for line, row in rows[1:]:
        where = f"{table} line {line}"
        if len(row) <= max(fi, ai):
            raise AgekitError(f"{where}: expected file,age, got {','.join(row)!r}")
        name, age_text = row[fi].strip(), row[ai].strip()
        if not name:
            raise AgekitError(f"{where}: the file name is empty")
        age = parse_age(age_text, f"{where} ({name})")
        path = _inside(folder, root, name, where)
        if not path.is_file():
            raise AgekitError(f"{where}: {name} not found in {folder}")
        key = str(path.resolve())
        if key in seen:
            raise AgekitError(f"{where}: {name} is listed twice (also on line {seen[key]}); keep one row per photo")
        seen[key] = line
        out.append((path, age))
    if not out:
        raise AgekitError(f"{table}: no photos listed (one row file,age per photo)")
    return out


def embed_context(estimator, context) -> Context:
    """Run the estimator on each context photo: the face's embedding (the best-scoring face when there are
    several, with a note; None when there is none or the file is unreadable, with a note) and its age."""
    if isinstance(context, Context):
        return context
    if context is None:
        return Context([], [], [], [])
    try:
        items = list(context)
    except TypeError:
        raise AgekitError("context must be a list of (image_or_path, age) pairs") from None
    feats, bases, ages, names, notes = [], [], [], [], []
    for i, item in enumerate(items):
        try:
            image, age = item
        except (TypeError, ValueError):
            raise AgekitError(f"context item {i + 1} must be an (image_or_path, age) pair") from None
        name = str(image) if isinstance(image, (str, Path)) else f"context photo #{i + 1}"
        age = parse_age(age, name)
        try:
            faces = estimator.predict(image)
        except ImageError as exc:
            notes.append(f"{name}: {exc.reason}; skipped")
            feats.append(None)
            bases.append(None)
        else:
            if not faces:
                notes.append(f"{name}: no face found; skipped")
                feats.append(None)
                bases.append(None)
            else:
                if len(faces) > 1:
                    notes.append(f"{name}: {len(faces)} faces; used the one the detector is surest of")
                if faces[0].embedding is None:
                    raise AgekitError(f"the model {estimator.model.path} has no 'embedding' output; re-export it "
                                      "with `agekit export` to personalise")
                feats.append(np.asarray(faces[0].embedding, dtype=np.float64))
                bases.append(float(faces[0].age))
        ages.append(age)
        names.append(name)
    return Context(feats, bases, ages, names, notes)


class ContextEstimator:
    """An AgeEstimator with a context bound (what `agekit predict --context-dir` uses): predict,
    predict_batch and predict_crops personalise every face with the same context, embedded once.
    `report(line)` receives the context's notes once, with the first faces."""

    def __init__(self, estimator, context, report=None):
        self.estimator = estimator
        self.context = estimator.context(context)
        self.report = report
        self._reported = False

    def _notes(self, faces):
        if faces and not self._reported and self.report is not None:
            self._reported = True
            for line in faces[0].notes:
                self.report(f"context: {line}")
        return faces

    def predict(self, image, boxes=None):
        return self._notes(self.estimator.predict(image, boxes=boxes, context=self.context))

    def predict_crops(self, crops, aligned: bool = True):
        return self._notes(self.estimator.predict_crops(crops, aligned=aligned, context=self.context))

    def predict_batch(self, images, boxes=None):
        results = self.estimator.predict_batch(images, boxes=boxes, context=self.context)
        self._notes(next((faces for faces in results if faces), []))
        return results

    def __getattr__(self, name):
        return getattr(self.estimator, name)
