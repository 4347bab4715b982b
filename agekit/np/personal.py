"""Personalised prediction with an ONNX AgeEstimator: context photos of one person with known ages
(`AgeEstimator.predict(..., context=[(image_or_path, age), ...])`, `agekit predict --context-dir DIR`).

Numpy only (no torch). The estimator's ONNX model returns each face's backbone features ("embedding"); the
face NP bank (`agekit np-bank`, a .npz fitted on the same model's features) turns the context photos'
embeddings and ages into personalised ages for the query faces (`agekit.np.faces.Personalizer`).

The estimate personalised is the model's own (`FaceNP.predict_from_encoder`): the bank is fitted on FG-NET
only, and its own non-personal estimate does not transfer to other photos (on UTKFace photos it is more
than twice as wrong as the model's); the bank supplies the prior of a person's correction.

The bank is looked for next to the model: MODEL.onnx -> MODEL.np.npz (e.g. agekit-default.np.npz beside
agekit-default.onnx), unless given explicitly.
"""
from __future__ import annotations

import csv
import dataclasses
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from agekit.errors import AgekitError, ImageError
from agekit.np.faces import ContextWarning, Personalizer, parse_age

log = logging.getLogger(__name__)
AGES_FILE = "ages.csv"


def default_bank_path(model_path) -> Path:
    """MODEL.onnx -> MODEL.np.npz beside it."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".np.npz")


def load_personalizer(bank, model) -> Personalizer:
    """The Personalizer of bank (a path, a Personalizer, or None: beside the estimator's model), checked against
    the model (same feature size; a different encoder file is a warning)."""
    if isinstance(bank, Personalizer):
        p = bank
    else:
        path = Path(bank) if bank is not None else default_bank_path(model.path)
        if not path.is_file():
            raise AgekitError(f"personalisation needs the face NP bank fitted on this model's features, not found "
                              f"at {path}; make it with `agekit np-bank --checkpoint {model.path} --out {path}` "
                              "(or pass personalizer=PATH)")
        p = Personalizer(path)
    size = model.meta.get("embedding_size")
    if size is not None and int(size) != p.n_features:
        raise AgekitError(f"the face NP bank expects {p.n_features} features per face but the model "
                          f"{model.path} gives {size}: the bank was fitted for another model")
    enc = p.model.meta.get("encoder", {})
    if enc.get("backbone") and model.meta.get("backbone") and enc["backbone"] != model.meta["backbone"]:
        raise AgekitError(f"the face NP bank was fitted on {enc['backbone']} features, the model is "
                          f"{model.meta['backbone']}")
    return p


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


def personalise(faces, context: Context, personalizer: Personalizer, level: float):
    """FaceResults personalised with the context: the model's own estimate (kept in base_age) corrected by
    the context's residuals from the model's own estimates of the context faces (`Personalizer` with
    base_ages). Age, std and interval are replaced; with too few usable context photos the faces keep the
    model's estimate and interval (personalised False). Returns (faces, notes)."""
    if not faces:
        return faces, list(context.notes)
    if any(f.embedding is None for f in faces):
        raise AgekitError("the model gives no 'embedding' output; re-export it with `agekit export` to personalise")
    X = np.stack([np.asarray(f.embedding, dtype=np.float64) for f in faces])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ContextWarning)
        out = personalizer.predict(X, context.features, context.ages, context.names, level=level,
                                   base_ages=[f.age for f in faces], context_base_ages=context.base_ages)
    for w in caught:
        if not issubclass(w.category, ContextWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    notes = list(context.notes) + list(out.notes)
    result = []
    for i, f in enumerate(faces):
        if out.personalised:
            f = dataclasses.replace(f, age=float(out.ages[i]), std=float(out.std[i]),
                                    interval=(float(out.lo[i]), float(out.hi[i])), base_age=f.age,
                                    personalised=True)
        else:
            f = dataclasses.replace(f, base_age=f.age, personalised=False)
        result.append(f)
    return result, notes


class ContextEstimator:
    """An AgeEstimator with a context bound (what `agekit predict --context-dir` uses): predict,
    predict_batch and predict_crops personalise every face with the same context, embedded once. `report(line)` receives the
    context's notes once, with the first faces."""

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
