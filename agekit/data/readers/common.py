"""What every reader shares: the conventions, the record builder and the label-file helpers."""
from __future__ import annotations

import csv
import logging
import math
import os
import re
from pathlib import Path

from agekit.data.records import (
    AGE_VALID_RANGE,
    FEMALE,
    MALE,
    READERS,
    FaceRecord,
    ReadResult,
)
from agekit.errors import AgekitError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
RACE_NAMES = {0: "White", 1: "Black", 2: "Asian", 3: "Indian", 4: "Others"}

UTKFACE_NAME = re.compile(r"^(\d+)_(\d+)_(?:(\d+)_)?(\d{8,})\s*\.?jpg(?:\.chip\.jpg)?$", re.IGNORECASE)
FGNET_NAME = re.compile(r"^(\d{3})A(\d{2})([ab])?\.jpe?g$", re.IGNORECASE)
MORPH_NAME = re.compile(r"^(\d+)_(\d+)([MF])(\d+)\.jpe?g$", re.IGNORECASE)
CACD_NAME = re.compile(r"^(\d+)_(.*[A-Za-z].*)_(\d+)\.jpe?g$")
AGEDB_NAME = re.compile(r"^(\d+)_(.*[A-Za-z].*)_(\d+)_([mf])\.jpe?g$", re.IGNORECASE)
AAF_NAME = re.compile(r"^(\d{5})A?(\d{2})\.jpe?g$", re.IGNORECASE)

GENDER_WORDS = {"0": MALE, "1": FEMALE, "m": MALE, "f": FEMALE, "male": MALE, "female": FEMALE}
MORPH_RACES = {"W": 0, "B": 1, "A": 2, "H": 4, "O": 4}  # MORPH has no Indian class; Hispanic -> Others
AFAD_GENDERS = {"111": MALE, "112": FEMALE}
AAF_LAST_FEMALE_ID = 7380  # AAF README: ids 00000-07380 are female, 07381-13321 male


def list_datasets() -> list[str]:
    """Names accepted by read_dataset and `--dataset`."""
    return READERS.names()


# ---------------------------------------------------------------------------------------------- helpers


class RecordBuilder:
    """Collects records and skipped entries for one dataset; applies the checks every reader shares."""

    def __init__(self, dataset: str, root: Path):
        self.dataset = dataset
        self.root = root
        self.records: list[FaceRecord] = []
        self.skipped: list[tuple[str, str]] = []

    def skip(self, entry, reason: str) -> None:
        self.skipped.append((str(entry), reason))

    def add(self, path: Path, age, must_exist: bool = False, **fields) -> None:
        """Add a record unless its age is invalid or (for label-file datasets) its image is missing."""
        if must_exist and not path.is_file():
            self.skip(path, "image file not found")
            return
        try:
            age = float(age)
        except (TypeError, ValueError):
            self.skip(path, f"age '{age}' is not a number")
            return
        lo, hi = AGE_VALID_RANGE
        if not (math.isfinite(age) and lo <= age <= hi):
            self.skip(path, f"age {age:g} outside the valid range {lo:g}-{hi:g}")
            return
        key = Path(os.path.relpath(path, self.root)).as_posix()
        self.records.append(FaceRecord(path=str(path), key=key, age=age, dataset=self.dataset, **fields))

    def result(self) -> ReadResult:
        self.records.sort(key=lambda r: r.key)
        return ReadResult(records=self.records, skipped=self.skipped)


def require_folder(root) -> Path:
    """The dataset folder as an absolute path; AgekitError when it is missing or empty."""
    path = Path(root).expanduser().absolute()
    if not path.exists():
        raise AgekitError(f"dataset folder not found: {path}")
    if not path.is_dir():
        raise AgekitError(f"not a folder: {path}")
    if not any(path.iterdir()):
        raise AgekitError(f"dataset folder is empty: {path}")
    return path


def iter_images(folder: Path):
    """Image files under `folder`, recursively, in sorted order. Hidden files (e.g. macOS '._x.jpg') are ignored."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                yield Path(dirpath, name)


def parse_gender(value):
    """agekit gender code from '0'/'1'/'M'/'F'/'male'/'female'; None for blank; ValueError otherwise."""
    text = str(value).strip().lower()
    if not text:
        return None
    if text not in GENDER_WORDS:
        raise ValueError(f"unknown gender '{value}'")
    return GENDER_WORDS[text]


def read_rows(path: Path) -> list[tuple[int, list[str]]]:
    """Non-blank rows of a delimited text file as (line number, fields); the delimiter is guessed
    from the first line because the datasets mix ',', ';' and tabs."""
    lines = path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
    first = next((line for line in lines if line.strip()), "")
    delimiter = max([",", ";", "\t"], key=first.count)
    rows = csv.reader(lines, delimiter=delimiter)
    return [(number, [f.strip() for f in row]) for number, row in enumerate(rows, 1) if any(f.strip() for f in row)]


def find_columns(header: list[str], aliases: dict[str, tuple[str, ...]]) -> dict[str, int]:
    """Map each wanted field to its column index, matching header names case-insensitively."""
    lowered = [h.strip().lower() for h in header]
    found = {}
    for field_name, names in aliases.items():
        for name in names:
            if name in lowered:
                found[field_name] = lowered.index(name)
                break
    return found


def cell(row: list[str], columns: dict[str, int], name: str) -> str:
    index = columns.get(name)
    return row[index] if index is not None and index < len(row) else ""


def label_path(folder: Path, text: str) -> Path:
    """An image path from a label file, relative to that file's folder; Windows separators are accepted."""
    return folder / text.replace("\\", "/")


def single_csv(root: Path, csv_option) -> Path | None:
    """The label CSV: the `csv` option if given, else the only *.csv in root (None when there is none)."""
    if csv_option:
        path = Path(csv_option).expanduser().absolute()
        if not path.is_file():
            raise AgekitError(f"CSV file not found: {path}")
        return path
    found = sorted(root.glob("*.csv"))
    if len(found) > 1:
        raise AgekitError(f"several CSV files in {root}; choose one with csv=PATH")
    return found[0] if found else None


