"""Readers of the datasets whose labels are in separate files (.mat, CSV)."""
from __future__ import annotations

import logging
import math
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np

from agekit.data.readers.common import (
    RecordBuilder,
    cell,
    find_columns,
    iter_images,
    label_path,
    parse_gender,
    read_rows,
    require_folder,
    single_csv,
)
from agekit.data.records import FEMALE, MALE, ReadResult, register_reader
from agekit.errors import AgekitError

log = logging.getLogger(__name__)



@register_reader("imdb_wiki")
def read_imdb_wiki(root, mat=None, min_face_score: float = 1.0, drop_second_face: bool = True) -> ReadResult:
    """IMDB-WIKI: `imdb_crop/imdb.mat` or `wiki_crop/wiki.mat` beside the `00/`..`99/` image folders.

    The .mat holds one struct (imdb or wiki) with row arrays dob (Matlab datenum), photo_taken (year),
    full_path (relative to the .mat folder), gender (1 male, 0 female, NaN unknown; converted to agekit's
    0 male), face_location ([x1 y1 x2 y2], the record's box), face_score (-inf: no face), second_face_score
    (NaN: no second face), name. Age = photo_taken - birth year, assuming the photo was taken on 1 July.
    Options: mat=PATH (else the single imdb.mat/wiki.mat in root; root may be the .mat itself),
    min_face_score (default 1.0), drop_second_face (default True). Filtered entries are listed as skipped.
    """
    mat_path = _find_mat(root, mat)
    from scipy.io import (
        loadmat,  # imported here: scipy is slow to import and only this reader needs it
    )

    try:
        contents = loadmat(str(mat_path))
    except Exception as exc:  # scipy raises assorted types for damaged files
        raise AgekitError(f"cannot read {mat_path}: {exc}") from None
    struct_name = next((k for k in ("imdb", "wiki") if k in contents), None)
    if struct_name is None:
        raise AgekitError(f"{mat_path}: no 'imdb' or 'wiki' struct inside")
    meta = contents[struct_name][0, 0]
    folder = mat_path.parent
    out = RecordBuilder("imdb_wiki", folder)
    columns = [np.ravel(meta[f]) for f in ("full_path", "dob", "photo_taken", "gender", "face_location",
                                            "face_score", "second_face_score")]
    for full_path, dob, taken, gender, location, score, second in zip(*columns):
        path = folder / _mat_string(full_path)
        reason = _imdb_filter_reason(float(score), float(second), min_face_score, drop_second_face)
        if reason:
            out.skip(path, reason)
            continue
        age = _imdb_age(float(dob), int(taken))
        if age is None:
            out.skip(path, f"invalid date of birth {dob}")
            continue
        out.add(path, age, must_exist=True, gender=_imdb_gender(float(gender)),
                box=tuple(float(v) for v in np.ravel(location)[:4]))
    return out.result()


def _find_mat(root, mat_option) -> Path:
    if mat_option:
        path = Path(mat_option).expanduser().absolute()
    elif Path(root).suffix.lower() == ".mat":
        path = Path(root).expanduser().absolute()
    else:
        folder = require_folder(root)
        found = [folder / n for n in ("imdb.mat", "wiki.mat") if (folder / n).is_file()]
        if len(found) != 1:
            what = "no imdb.mat or wiki.mat" if not found else "both imdb.mat and wiki.mat"
            raise AgekitError(f"{what} in {folder}; choose one with mat=PATH")
        path = found[0]
    if not path.is_file():
        raise AgekitError(f"metadata file not found: {path}")
    return path


def _mat_string(value) -> str:
    """Matlab cell strings load as 1-element arrays of str."""
    return str(np.ravel(value)[0]) if isinstance(value, np.ndarray) else str(value)


def _imdb_filter_reason(score: float, second: float, min_face_score: float, drop_second_face: bool):
    if math.isinf(score) and score < 0:
        return "no face detected (face_score -inf)"
    if score < min_face_score:
        return f"face_score {score:.2f} below {min_face_score:g}"
    if drop_second_face and not math.isnan(second):
        return "a second face is in the image"
    return None


def _imdb_age(dob: float, taken: int):
    """Age in whole years, as DEX computes it: a birthday in July or later has not happened yet on 1 July.
    Matlab datenums count from year 0, Python ordinals from year 1: hence the 366-day shift."""
    if not math.isfinite(dob) or dob < 367:
        return None
    try:
        birth = datetime.fromordinal(int(dob) - 366)
    except (ValueError, OverflowError):
        return None
    return taken - birth.year - (1 if birth.month >= 7 else 0)


def _imdb_gender(value: float):
    """IMDB-WIKI uses 1 = male, 0 = female: the opposite of agekit."""
    if math.isnan(value):
        return None
    return MALE if value == 1 else FEMALE


@register_reader("appa_real")
def read_appa_real(root, use_face_crops: bool = True, target: str = "real") -> ReadResult:
    """APPA-REAL: `gt_avg_{train,valid,test}.csv` (file_name, num_ratings, apparent_age_avg,
    apparent_age_std, real_age) with images in `train/`, `valid/`, `test/`.

    use_face_crops=True reads the `X.jpg_face.jpg` crops, False the original `X.jpg`. target='real'
    (default) uses the real age, target='apparent' the apparent-age mean; age_std is always the
    apparent-age std.
    """
    if target not in ("real", "apparent"):
        raise AgekitError(f"appa_real target must be 'real' or 'apparent', not '{target}'")
    root = require_folder(root)
    tables = [(split, root / f"gt_avg_{split}.csv") for split in ("train", "valid", "test")]
    tables = [(split, path) for split, path in tables if path.is_file()]
    if not tables:
        raise AgekitError(f"no gt_avg_train/valid/test.csv in {root}")
    out = RecordBuilder("appa_real", root)
    age_column = "real_age" if target == "real" else "apparent_age_avg"
    for split, table in tables:
        rows = read_rows(table)
        columns = find_columns(rows[0][1] if rows else [], {"file": ("file_name",), "age": (age_column,),
                                                             "std": ("apparent_age_std",)})
        if {"file", "age"} - columns.keys():
            raise AgekitError(f"{table}: expected columns file_name and {age_column}")
        for number, row in rows[1:]:
            name = cell(row, columns, "file") + ("_face.jpg" if use_face_crops else "")
            std = cell(row, columns, "std")
            try:
                age_std = float(std) if std else None
            except ValueError:
                out.skip(f"{table}:{number}", f"apparent_age_std '{std}' is not a number")
                continue
            out.add(root / split / name, cell(row, columns, "age"), must_exist=True, age_std=age_std)
    return out.result()


CHALEARN_COLUMNS = {"image": ("image", "file", "file_name", "filename", "name"),
                    "mean": ("mean", "age", "apparent_age", "apparent_age_avg"),
                    "std": ("stdv", "std", "sd", "apparent_age_std")}


@register_reader("chalearn_lap")
def read_chalearn_lap(root, csv=None) -> ReadResult:
    """ChaLearn LAP apparent age. 2016 (V2): `train_gt.csv`/`valid_gt.csv`/`test_gt.csv` with `image,mean,stdv`;
    2015: `Train.csv`/`Validation.csv` with `image;age;std` (semicolons). Either delimiter, either header
    spelling, or no header (then the columns are image, mean, std). age = mean, age_std = std.

    Label files: option csv=PATH, else every *.csv in root and its direct subfolders. Each image name is
    looked up among all images under root; a name found in several folders is resolved by the folder
    that starts like the CSV's split name (train_gt.csv -> train/ or train_1/).
    """
    root = require_folder(root)
    tables = [Path(csv).expanduser().absolute()] if csv else sorted([*root.glob("*.csv"), *root.glob("*/*.csv")])
    if not tables:
        raise AgekitError(f"no ChaLearn label CSV in {root}")
    index = defaultdict(list)
    for path in iter_images(root):
        index[path.name].append(path)
    out = RecordBuilder("chalearn_lap", root)
    for table in tables:
        _read_chalearn_table(table, index, out)
    return out.result()


def _read_chalearn_table(table: Path, index: dict, out: RecordBuilder) -> None:
    if not table.is_file():
        raise AgekitError(f"CSV file not found: {table}")
    rows = read_rows(table)
    if not rows:
        return
    columns = find_columns(rows[0][1], CHALEARN_COLUMNS)
    if {"image", "mean"} <= columns.keys():
        rows = rows[1:]
    else:
        columns = {"image": 0, "mean": 1, "std": 2}  # header-less file
    split = table.stem.lower().replace("_gt", "")
    for number, row in rows:
        entry = f"{table}:{number}"
        name = cell(row, columns, "image")
        path, problem = _pick_image(index.get(Path(name).name, []), out.root, split)
        std = cell(row, columns, "std")
        if problem:
            out.skip(entry if not name else f"{entry} ({name})", problem)
            continue
        try:
            age_std = float(std) if std else None
        except ValueError:
            out.skip(entry, f"std '{std}' is not a number")
            continue
        out.add(path, cell(row, columns, "mean"), age_std=age_std)


def _pick_image(candidates: list[Path], root: Path, split: str):
    """(path, None) for the image a label row names, or (None, reason)."""
    if len(candidates) == 1:
        return candidates[0], None
    if not candidates:
        return None, "image file not found"
    in_split = [p for p in candidates if p.relative_to(root).parts[0].lower().startswith(split[:5])]
    if len(in_split) == 1:
        return in_split[0], None
    return None, f"image name found in {len(candidates)} folders"


CSV_COLUMNS = {"path": ("path", "file", "image", "file_name", "filename"), "age": ("age",),
               "gender": ("gender", "sex"), "subject": ("subject", "subject_id", "person", "id")}


@register_reader("csv")
def read_csv(root, csv=None) -> ReadResult:
    """A generic manifest: header row, then `path,age[,gender][,subject]` (',' ';' or tab separated).

    Paths are relative to the CSV's folder (absolute paths also work); gender may be 0/1, M/F or
    male/female (0 = male). Option csv=PATH, or root may be the CSV file itself, or a folder holding
    exactly one *.csv.
    """
    if csv is None and Path(root).suffix.lower() == ".csv":
        csv = root
    table = single_csv(require_folder(Path(csv).parent if csv else root), csv)
    if table is None:
        raise AgekitError(f"no CSV file in {Path(root).absolute()}")
    rows = read_rows(table)
    columns = find_columns(rows[0][1] if rows else [], CSV_COLUMNS)
    if {"path", "age"} - columns.keys():
        raise AgekitError(f"{table}: the header must name at least the 'path' and 'age' columns")
    out = RecordBuilder("csv", table.parent)
    for number, row in rows[1:]:
        entry = f"{table}:{number}"
        path = cell(row, columns, "path")
        try:
            gender = parse_gender(cell(row, columns, "gender"))
        except ValueError as exc:
            out.skip(entry, str(exc))
            continue
        if not path:
            out.skip(entry, "no image path")
            continue
        out.add(label_path(table.parent, path), cell(row, columns, "age"), must_exist=True, gender=gender,
                subject=cell(row, columns, "subject") or None)
    return out.result()


