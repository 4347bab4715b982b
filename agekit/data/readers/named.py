"""Readers of the datasets whose labels are in the file names."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from agekit.data.readers.common import (
    AAF_LAST_FEMALE_ID,
    AAF_NAME,
    AFAD_GENDERS,
    AGEDB_NAME,
    CACD_NAME,
    FGNET_NAME,
    MORPH_NAME,
    MORPH_RACES,
    RACE_NAMES,
    UTKFACE_NAME,
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


# ---------------------------------------------------------------------------------------------- readers


@register_reader("utkface")
def read_utkface(root) -> ReadResult:
    """UTKFace: `[age]_[gender]_[race]_[date&time].jpg.chip.jpg` (or plain `.jpg`), searched recursively.

    gender 0 male / 1 female; race 0 White, 1 Black, 2 Asian, 3 Indian, 4 Others. Names without the race
    field (`39_1_20170116174525125.jpg.chip.jpg`) are kept with race None. Two published names have a
    stray space or a missing dot before `jpg`; they are kept too, as their labels are intact.
    """
    root = require_folder(root)
    out = RecordBuilder("utkface", root)
    for path in iter_images(root):
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
    root = require_folder(root)
    images = root / "images" if (root / "images").is_dir() else root
    points = {p.name.lower(): p for p in (root / "points").glob("*.pts")} if (root / "points").is_dir() else {}
    out = RecordBuilder("fgnet", root)
    bad_points = []
    for path in iter_images(images):
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
    root = require_folder(root)
    out = RecordBuilder("afad", root)
    for path in iter_images(root):
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
    root = require_folder(root)
    out = RecordBuilder("morph", root)
    table = single_csv(root, csv)
    if table is None:
        _read_morph_names(root, out)
    else:
        _read_morph_csv(table, out)
    return out.result()


def _read_morph_csv(table: Path, out: RecordBuilder) -> None:
    rows = read_rows(table)
    if not rows:
        raise AgekitError(f"CSV file is empty: {table}")
    columns = find_columns(rows[0][1], {"subject": ("id_num",), "age": ("age",), "gender": ("gender",),
                                         "race": ("race",), "photo": ("photo",)})
    missing = {"age", "photo"} - columns.keys()
    if missing:
        raise AgekitError(f"{table}: missing MORPH column(s) {', '.join(sorted(missing))}")
    for number, row in rows[1:]:
        entry = f"{table}:{number}"
        photo = cell(row, columns, "photo")
        race = cell(row, columns, "race").upper()
        try:
            gender = parse_gender(cell(row, columns, "gender"))
        except ValueError as exc:
            out.skip(entry, str(exc))
            continue
        if not photo:
            out.skip(entry, "no photo path")
            continue
        out.add(label_path(table.parent, photo), cell(row, columns, "age"), must_exist=True, gender=gender,
                subject=cell(row, columns, "subject") or None, race=MORPH_RACES.get(race))


def _read_morph_names(root: Path, out: RecordBuilder) -> None:
    for path in iter_images(root):
        match = MORPH_NAME.match(path.name)
        if not match:
            out.skip(path, "name does not match IIIIII_NNGAA.JPG and there is no MORPH CSV")
            continue
        subject, _, gender, age = match.groups()
        # the CSV's id_num is unpadded ('3307' for 003307_00M21.JPG): use the same form here
        out.add(path, int(age), gender=parse_gender(gender), subject=str(int(subject)))


@register_reader("cacd")
def read_cacd(root) -> ReadResult:
    """CACD2000: `AGE_First_Last_NNNN.jpg` (e.g. `53_Robin_Williams_0001.jpg`), searched recursively.
    subject = the name part ('Robin_Williams'). celebrity2000_meta.mat is not needed."""
    root = require_folder(root)
    out = RecordBuilder("cacd", root)
    for path in iter_images(root):
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
    root = require_folder(root)
    out = RecordBuilder("agedb", root)
    for path in iter_images(root):
        match = AGEDB_NAME.match(path.name)
        if not match:
            out.skip(path, "name does not match ID_Name_AGE_GENDER.jpg")
            continue
        _, name, age, gender = match.groups()
        out.add(path, int(age), gender=parse_gender(gender), subject=name)
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
    root = require_folder(root)
    image_dir = next((root / n for n in folders[images] if (root / n).is_dir()), root)
    listed = _read_aaf_lists(root / "image sets")
    out = RecordBuilder("aaf", root)
    for path in iter_images(image_dir):
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


