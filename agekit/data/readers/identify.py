"""Which dataset a folder holds, from its layout, a CSV header or its file names."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from agekit.data.readers.common import (
    AAF_NAME,
    AFAD_GENDERS,
    AGEDB_NAME,
    CACD_NAME,
    FGNET_NAME,
    IMAGE_EXTENSIONS,
    MORPH_NAME,
    UTKFACE_NAME,
    find_columns,
    iter_images,
    list_datasets,
    read_rows,
    require_folder,
)
from agekit.data.readers.tables import CHALEARN_COLUMNS, CSV_COLUMNS
from agekit.errors import AgekitError

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- detection

# File-name conventions tried, in order, on a sample of image names; the first that fits most names wins.
NAME_PATTERNS = [("utkface", UTKFACE_NAME), ("agedb", AGEDB_NAME), ("cacd", CACD_NAME),
                 ("fgnet", FGNET_NAME), ("morph", MORPH_NAME), ("aaf", AAF_NAME)]
NAME_SAMPLE = 500


def detect_dataset(path) -> str:
    """Guess the reader for a dataset folder (or a .csv/.mat file) from its layout; AgekitError if unclear."""
    path = Path(path).expanduser().absolute()
    if path.is_file():
        by_suffix = {".csv": "csv", ".mat": "imdb_wiki"}
        if path.suffix.lower() in by_suffix:
            return by_suffix[path.suffix.lower()]
        raise AgekitError(f"cannot tell the dataset of file {path}; pass --dataset")
    root = require_folder(path)
    guess = _detect_by_layout(root) or _detect_by_names(root)
    if guess is None:
        raise AgekitError(f"cannot tell which dataset {root} holds; pass --dataset ({', '.join(list_datasets())})")
    return guess


def _detect_by_layout(root: Path):
    if (root / "images").is_dir() and (root / "points").is_dir():
        return "fgnet"
    if any((root / f"gt_avg_{s}.csv").is_file() for s in ("train", "valid", "test")):
        return "appa_real"
    if (root / "imdb.mat").is_file() or (root / "wiki.mat").is_file():
        return "imdb_wiki"
    if any((root / n).is_dir() for n in ("image sets", "aglined faces", "aligned faces", "original images")):
        return "aaf"
    subdirs = [d for d in root.iterdir() if d.is_dir()]
    if subdirs and any(d.name.isdigit() and any((d / g).is_dir() for g in AFAD_GENDERS) for d in subdirs):
        return "afad"
    return _detect_by_csv_header(root)


def _detect_by_csv_header(root: Path):
    for table in sorted(root.glob("*.csv")):
        rows = read_rows(table)
        first = [f.lower() for f in rows[0][1]] if rows else []
        if "id_num" in first:
            return "morph"
        if _looks_like_chalearn(first):
            return "chalearn_lap"
        if find_columns(first, CSV_COLUMNS).keys() >= {"path", "age"}:
            return "csv"
    return None


def _looks_like_chalearn(first_row: list[str]) -> bool:
    """A ChaLearn header names a mean or std column; a header-less file starts 'name.jpg;mean;std'."""
    if find_columns(first_row, CHALEARN_COLUMNS).keys() >= {"image", "std"} or {"image", "mean"} <= set(first_row):
        return True
    if len(first_row) >= 3 and os.path.splitext(first_row[0])[1] in IMAGE_EXTENSIONS:
        try:
            float(first_row[1]), float(first_row[2])
            return True
        except ValueError:
            return False
    return False


def _detect_by_names(root: Path):
    names = []
    for path in iter_images(root):
        names.append(path.name)
        if len(names) >= NAME_SAMPLE:
            break
    if not names:
        return None
    scores = [(sum(1 for n in names if pattern.match(n)), name) for name, pattern in NAME_PATTERNS]
    best_count, best = max(scores, key=lambda s: s[0])  # max keeps the first of equal scores
    return best if best_count * 2 > len(names) else None
