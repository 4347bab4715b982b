"""One reader per public age dataset, each taking the dataset exactly as its authors distribute it.

Every reader lists files and parses labels only (no image is decoded), returns records sorted by key,
and puts each entry it cannot use into ReadResult.skipped with a reason instead of failing.
Conventions shared by all readers: gender 0 = male, 1 = female; race uses UTKFace's integer codes
(RACE_NAMES) so that race counts mean the same thing across datasets.
"""
from __future__ import annotations

import csv
import logging
import math
import os
import re
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np

from agekit.data.records import AGE_VALID_RANGE, FEMALE, MALE, READERS, FaceRecord, ReadResult, register_reader
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


class _Builder:
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


def _require_folder(root) -> Path:
    """The dataset folder as an absolute path; AgekitError when it is missing or empty."""
    path = Path(root).expanduser().absolute()
    if not path.exists():
        raise AgekitError(f"dataset folder not found: {path}")
    if not path.is_dir():
        raise AgekitError(f"not a folder: {path}")
    if not any(path.iterdir()):
        raise AgekitError(f"dataset folder is empty: {path}")
    return path


def _iter_images(folder: Path):
    """Image files under `folder`, recursively, in sorted order. Hidden files (e.g. macOS '._x.jpg') are ignored."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                yield Path(dirpath, name)


def _parse_gender(value):
    """agekit gender code from '0'/'1'/'M'/'F'/'male'/'female'; None for blank; ValueError otherwise."""
    text = str(value).strip().lower()
    if not text:
        return None
    if text not in GENDER_WORDS:
        raise ValueError(f"unknown gender '{value}'")
    return GENDER_WORDS[text]


def _read_rows(path: Path) -> list[tuple[int, list[str]]]:
    """Non-blank rows of a delimited text file as (line number, fields); the delimiter is guessed
    from the first line because the datasets mix ',', ';' and tabs."""
    lines = path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
    first = next((line for line in lines if line.strip()), "")
    delimiter = max([",", ";", "\t"], key=first.count)
    rows = csv.reader(lines, delimiter=delimiter)
    return [(number, [f.strip() for f in row]) for number, row in enumerate(rows, 1) if any(f.strip() for f in row)]


def _find_columns(header: list[str], aliases: dict[str, tuple[str, ...]]) -> dict[str, int]:
    """Map each wanted field to its column index, matching header names case-insensitively."""
    lowered = [h.strip().lower() for h in header]
    found = {}
    for field_name, names in aliases.items():
        for name in names:
            if name in lowered:
                found[field_name] = lowered.index(name)
                break
    return found


def _cell(row: list[str], columns: dict[str, int], name: str) -> str:
    index = columns.get(name)
    return row[index] if index is not None and index < len(row) else ""


def _label_path(folder: Path, text: str) -> Path:
    """An image path from a label file, relative to that file's folder; Windows separators are accepted."""
    return folder / text.replace("\\", "/")


def _single_csv(root: Path, csv_option) -> Path | None:
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


# ---------------------------------------------------------------------------------------------- readers


@register_reader("utkface")
def read_utkface(root) -> ReadResult:
    """UTKFace: `[age]_[gender]_[race]_[date&time].jpg.chip.jpg` (or plain `.jpg`), searched recursively.

    gender 0 male / 1 female; race 0 White, 1 Black, 2 Asian, 3 Indian, 4 Others. Names without the race
    field (`39_1_20170116174525125.jpg.chip.jpg`) are kept with race None. Two published names have a
    stray space or a missing dot before `jpg`; they are kept too, as their labels are intact.
    """
    root = _require_folder(root)
    out = _Builder("utkface", root)
    for path in _iter_images(root):
        match = UTKFACE_NAME.match(path.name)
        if not match:
            out.skip(path, "name does not match age_gender_race_date.jpg")
            continue
        age, gender, race, _ = match.groups()
        if gender not in ("0", "1"):
            out.skip(path, f"unknown gender code {gender}")
        elif race is not None and int(race) not in RACE_NAMES:
            out.skip(path, f"unknown race code {race}")
        else:
            out.add(path, int(age), gender=int(gender), race=None if race is None else int(race))
    return out.result()


@register_reader("fgnet")
def read_fgnet(root) -> ReadResult:
    """FG-NET: `images/SSSAaa[a|b].JPG` (subject SSS at age aa, a letter for a 2nd photo at that age) and
    `points/sssaaa[a|b].pts` with 68 landmarks ('version: 1', 'n_points: 68', '{', 'x y' lines, '}').

    subject = 'SSS'. An image without a usable .pts file is kept without landmarks. If there is no
    `images/` folder, the images are looked for in root itself.
    """
    root = _require_folder(root)
    images = root / "images" if (root / "images").is_dir() else root
    points = {p.name.lower(): p for p in (root / "points").glob("*.pts")} if (root / "points").is_dir() else {}
    out = _Builder("fgnet", root)
    bad_points = []
    for path in _iter_images(images):
        match = FGNET_NAME.match(path.name)
        if not match:
            out.skip(path, "name does not match SSSAaa[a|b].JPG")
            continue
        subject, age, _ = match.groups()
        pts_path = points.get(path.stem.lower() + ".pts")
        landmarks = None
        if pts_path is not None:
            try:
                landmarks = read_pts(pts_path)
            except ValueError as exc:
                bad_points.append(f"{pts_path}: {exc}")
        out.add(path, int(age), subject=subject, landmarks=landmarks,
                landmark_layout="fgnet68" if landmarks is not None else None)
    if bad_points:
        log.warning("%d FG-NET landmark files unusable (images kept without landmarks), e.g. %s",
                    len(bad_points), bad_points[0])
    return out.result()


def read_pts(path) -> np.ndarray:
    """Landmarks of an ASM/ibug .pts file as float32 (N, 2); ValueError when the file is malformed."""
    lines = [line.strip() for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
    try:
        count = int(next(line for line in lines if line.lower().startswith("n_points")).split(":")[1])
        body = lines[lines.index("{") + 1: lines.index("}")]
        points = np.array([[float(v) for v in line.split()] for line in body], dtype=np.float32)
    except (StopIteration, IndexError, ValueError):
        raise ValueError("malformed .pts file") from None
    if points.shape != (count, 2):
        raise ValueError(f"expected {count} points of 2 values, found shape {points.shape}")
    return points


@register_reader("afad")
def read_afad(root) -> ReadResult:
    """AFAD (AFAD-Full / AFAD-Lite): `root/<age>/<gender code>/*.jpg` with 111 = male, 112 = female.

    AFAD's file names carry no documented person id, so subject stays None.
    """
    root = _require_folder(root)
    out = _Builder("afad", root)
    for path in _iter_images(root):
        parts = path.relative_to(root).parts
        if len(parts) != 3 or not parts[0].isdigit() or parts[1] not in AFAD_GENDERS:
            out.skip(path, "not in an <age>/<111|112>/ folder")
            continue
        out.add(path, int(parts[0]), gender=AFAD_GENDERS[parts[1]])
    return out.result()


@register_reader("morph")
def read_morph(root, csv=None) -> ReadResult:
    """MORPH-II (academic release): a CSV with columns id_num, picture_num, dob, doa, race, gender,
    facial_hair, age, age_diff, glasses, photo (e.g. `morph_2008_nonCommercial.csv`, photo like
    `Album2/003307_00M21.JPG`, relative to the CSV's folder).

    Option csv=PATH, else the single *.csv in root. Without any CSV the labels are taken from the
    Album2 file names `IIIIII_NNGAA.JPG` (id, picture number, gender M/F, age). subject = id_num;
    race B/W/A/H/O is mapped to RACE_NAMES codes (Hispanic counts as Others).
    """
    root = _require_folder(root)
    out = _Builder("morph", root)
    table = _single_csv(root, csv)
    if table is None:
        _read_morph_names(root, out)
    else:
        _read_morph_csv(table, out)
    return out.result()


def _read_morph_csv(table: Path, out: _Builder) -> None:
    rows = _read_rows(table)
    if not rows:
        raise AgekitError(f"CSV file is empty: {table}")
    columns = _find_columns(rows[0][1], {"subject": ("id_num",), "age": ("age",), "gender": ("gender",),
                                         "race": ("race",), "photo": ("photo",)})
    missing = {"age", "photo"} - columns.keys()
    if missing:
        raise AgekitError(f"{table}: missing MORPH column(s) {', '.join(sorted(missing))}")
    for number, row in rows[1:]:
        entry = f"{table}:{number}"
        photo = _cell(row, columns, "photo")
        race = _cell(row, columns, "race").upper()
        try:
            gender = _parse_gender(_cell(row, columns, "gender"))
        except ValueError as exc:
            out.skip(entry, str(exc))
            continue
        if not photo:
            out.skip(entry, "no photo path")
            continue
        out.add(_label_path(table.parent, photo), _cell(row, columns, "age"), must_exist=True, gender=gender,
                subject=_cell(row, columns, "subject") or None, race=MORPH_RACES.get(race))


def _read_morph_names(root: Path, out: _Builder) -> None:
    for path in _iter_images(root):
        match = MORPH_NAME.match(path.name)
        if not match:
            out.skip(path, "name does not match IIIIII_NNGAA.JPG and there is no MORPH CSV")
            continue
        subject, _, gender, age = match.groups()
        # the CSV's id_num is unpadded ('3307' for 003307_00M21.JPG): use the same form here
        out.add(path, int(age), gender=_parse_gender(gender), subject=str(int(subject)))


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
    from scipy.io import loadmat  # imported here: scipy is slow to import and only this reader needs it

    try:
        contents = loadmat(str(mat_path))
    except Exception as exc:  # scipy raises assorted types for damaged files
        raise AgekitError(f"cannot read {mat_path}: {exc}") from None
    struct_name = next((k for k in ("imdb", "wiki") if k in contents), None)
    if struct_name is None:
        raise AgekitError(f"{mat_path}: no 'imdb' or 'wiki' struct inside")
    meta = contents[struct_name][0, 0]
    folder = mat_path.parent
    out = _Builder("imdb_wiki", folder)
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
        folder = _require_folder(root)
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
    root = _require_folder(root)
    tables = [(split, root / f"gt_avg_{split}.csv") for split in ("train", "valid", "test")]
    tables = [(split, path) for split, path in tables if path.is_file()]
    if not tables:
        raise AgekitError(f"no gt_avg_train/valid/test.csv in {root}")
    out = _Builder("appa_real", root)
    age_column = "real_age" if target == "real" else "apparent_age_avg"
    for split, table in tables:
        rows = _read_rows(table)
        columns = _find_columns(rows[0][1] if rows else [], {"file": ("file_name",), "age": (age_column,),
                                                             "std": ("apparent_age_std",)})
        if {"file", "age"} - columns.keys():
            raise AgekitError(f"{table}: expected columns file_name and {age_column}")
        for number, row in rows[1:]:
            name = _cell(row, columns, "file") + ("_face.jpg" if use_face_crops else "")
            std = _cell(row, columns, "std")
            try:
                age_std = float(std) if std else None
            except ValueError:
                out.skip(f"{table}:{number}", f"apparent_age_std '{std}' is not a number")
                continue
            out.add(root / split / name, _cell(row, columns, "age"), must_exist=True, age_std=age_std)
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
    root = _require_folder(root)
    tables = [Path(csv).expanduser().absolute()] if csv else sorted([*root.glob("*.csv"), *root.glob("*/*.csv")])
    if not tables:
        raise AgekitError(f"no ChaLearn label CSV in {root}")
    index = defaultdict(list)
    for path in _iter_images(root):
        index[path.name].append(path)
    out = _Builder("chalearn_lap", root)
    for table in tables:
        _read_chalearn_table(table, index, out)
    return out.result()


def _read_chalearn_table(table: Path, index: dict, out: _Builder) -> None:
    if not table.is_file():
        raise AgekitError(f"CSV file not found: {table}")
    rows = _read_rows(table)
    if not rows:
        return
    columns = _find_columns(rows[0][1], CHALEARN_COLUMNS)
    if {"image", "mean"} <= columns.keys():
        rows = rows[1:]
    else:
        columns = {"image": 0, "mean": 1, "std": 2}  # header-less file
    split = table.stem.lower().replace("_gt", "")
    for number, row in rows:
        entry = f"{table}:{number}"
        name = _cell(row, columns, "image")
        path, problem = _pick_image(index.get(Path(name).name, []), out.root, split)
        std = _cell(row, columns, "std")
        if problem:
            out.skip(entry if not name else f"{entry} ({name})", problem)
            continue
        try:
            age_std = float(std) if std else None
        except ValueError:
            out.skip(entry, f"std '{std}' is not a number")
            continue
        out.add(path, _cell(row, columns, "mean"), age_std=age_std)


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


@register_reader("cacd")
def read_cacd(root) -> ReadResult:
    """CACD2000: `AGE_First_Last_NNNN.jpg` (e.g. `53_Robin_Williams_0001.jpg`), searched recursively.
    subject = the name part ('Robin_Williams'). celebrity2000_meta.mat is not needed."""
    root = _require_folder(root)
    out = _Builder("cacd", root)
    for path in _iter_images(root):
        match = CACD_NAME.match(path.name)
        if not match:
            out.skip(path, "name does not match AGE_First_Last_NNNN.jpg")
            continue
        age, name, _ = match.groups()
        out.add(path, int(age), subject=name)
    return out.result()


@register_reader("agedb")
def read_agedb(root) -> ReadResult:
    """AgeDB: `ID_Name_AGE_GENDER.jpg` (e.g. `0_MariaCallas_35_f.jpg`, gender m/f), searched recursively.
    subject = Name."""
    root = _require_folder(root)
    out = _Builder("agedb", root)
    for path in _iter_images(root):
        match = AGEDB_NAME.match(path.name)
        if not match:
            out.skip(path, "name does not match ID_Name_AGE_GENDER.jpg")
            continue
        _, name, age, gender = match.groups()
        out.add(path, int(age), gender=_parse_gender(gender), subject=name)
    return out.result()


@register_reader("aaf")
def read_aaf(root, images: str = "aligned") -> ReadResult:
    """All-Age-Faces: `aglined faces/` (sic, as distributed; `aligned faces/` also accepted) or
    `original images/` holding `NNNNNAaa.jpg` (5-digit person id, 'A', 2-digit age), plus
    `image sets/train.txt` and `val.txt` with lines `NNNNNAaa[.jpg] label` (0 female, 1 male).

    images='aligned' (default) or 'original'. Gender comes from the image-set lists when an image is
    listed there, else from the id range published in the AAF README (00000-07380 female,
    07381-13321 male). Without those folders the images are read from root itself.
    """
    folders = {"aligned": ("aglined faces", "aligned faces"), "original": ("original images",)}
    if images not in folders:
        raise AgekitError(f"aaf images must be 'aligned' or 'original', not '{images}'")
    root = _require_folder(root)
    image_dir = next((root / n for n in folders[images] if (root / n).is_dir()), root)
    listed = _read_aaf_lists(root / "image sets")
    out = _Builder("aaf", root)
    for path in _iter_images(image_dir):
        match = AAF_NAME.match(path.name)
        if not match:
            out.skip(path, "name does not match NNNNNAaa.jpg")
            continue
        person, age = match.groups()
        gender = listed.get(path.stem.upper(), FEMALE if int(person) <= AAF_LAST_FEMALE_ID else MALE)
        out.add(path, int(age), gender=gender, subject=person)
    return out.result()


def _read_aaf_lists(folder: Path) -> dict[str, int]:
    """Image stem (upper case) -> agekit gender, from AAF's `image sets/*.txt` (label 0 female, 1 male)."""
    genders = {}
    for table in sorted(folder.glob("*.txt")) if folder.is_dir() else []:
        for line in table.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1] in ("0", "1"):
                genders[Path(parts[0]).stem.upper()] = FEMALE if parts[1] == "0" else MALE
    return genders


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
    table = _single_csv(_require_folder(Path(csv).parent if csv else root), csv)
    if table is None:
        raise AgekitError(f"no CSV file in {Path(root).absolute()}")
    rows = _read_rows(table)
    columns = _find_columns(rows[0][1] if rows else [], CSV_COLUMNS)
    if {"path", "age"} - columns.keys():
        raise AgekitError(f"{table}: the header must name at least the 'path' and 'age' columns")
    out = _Builder("csv", table.parent)
    for number, row in rows[1:]:
        entry = f"{table}:{number}"
        path = _cell(row, columns, "path")
        try:
            gender = _parse_gender(_cell(row, columns, "gender"))
        except ValueError as exc:
            out.skip(entry, str(exc))
            continue
        if not path:
            out.skip(entry, "no image path")
            continue
        out.add(_label_path(table.parent, path), _cell(row, columns, "age"), must_exist=True, gender=gender,
                subject=_cell(row, columns, "subject") or None)
    return out.result()


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
    root = _require_folder(path)
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
        rows = _read_rows(table)
        first = [f.lower() for f in rows[0][1]] if rows else []
        if "id_num" in first:
            return "morph"
        if _looks_like_chalearn(first):
            return "chalearn_lap"
        if _find_columns(first, CSV_COLUMNS).keys() >= {"path", "age"}:
            return "csv"
    return None


def _looks_like_chalearn(first_row: list[str]) -> bool:
    """A ChaLearn header names a mean or std column; a header-less file starts 'name.jpg;mean;std'."""
    if _find_columns(first_row, CHALEARN_COLUMNS).keys() >= {"image", "std"} or {"image", "mean"} <= set(first_row):
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
    for path in _iter_images(root):
        names.append(path.name)
        if len(names) >= NAME_SAMPLE:
            break
    if not names:
        return None
    scores = [(sum(1 for n in names if pattern.match(n)), name) for name, pattern in NAME_PATTERNS]
    best_count, best = max(scores, key=lambda s: s[0])  # max keeps the first of equal scores
    return best if best_count * 2 > len(names) else None
