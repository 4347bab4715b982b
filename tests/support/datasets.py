"""Tiny fake datasets, one per reader, laid out like the real distributions, and a synthetic training set.

Each `make_*` writes into a folder under tmp_path and returns the path to hand to the reader. Images are 32x32
JPEGs; a few files are broken on purpose (truncated, zero bytes, badly named) so that readers and `verify` meet
them. `synthetic_dataset` is what the training tests learn from: brightness encodes the age."""
from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

from support.images import jpeg_bytes, write_empty, write_image, write_text, write_truncated  # noqa: F401

MALE, FEMALE = 0, 1


def synthetic_dataset(folder: Path, n: int = 64) -> Path:
    """Images whose brightness encodes the age, listed in a CSV manifest (path,age,gender)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = ["path,age,gender"]
    for i in range(n):
        age = int(rng.integers(5, 80))
        pixels = np.clip(age * 3 + rng.normal(0, 5, (24, 24, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i:03d}.png")
        lines.append(f"img{i:03d}.png,{age},{i % 2}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder / "labels.csv"


# UTKFace ------------------------------------------------------------------------------------------

UTK_GOOD = {  # name -> (age, gender, race)
    "25_0_0_20170109150557335.jpg.chip.jpg": (25, MALE, 0),
    "3_1_2_20161219140525218.jpg.chip.jpg": (3, FEMALE, 2),
    "39_1_20170116174525125.jpg.chip.jpg": (39, FEMALE, None),  # published name without race
    "40_0_1_20170117134325111.jpg": (40, MALE, 1),  # plain .jpg variant
    "nested/70_1_3_20170110122519865.jpg.chip.jpg": (70, FEMALE, 3),
}
UTK_TRUNCATED = "50_0_4_20170103183401234.jpg.chip.jpg"
UTK_EMPTY = "60_1_1_20170104172900000.jpg.chip.jpg"
UTK_BAD = {  # name -> words the skip reason must contain
    "holiday_photo.jpg": "does not match",
    "130_0_0_20170105000000000.jpg.chip.jpg": "outside the valid range",
    "30_5_0_20170105000000001.jpg.chip.jpg": "gender",
}


def make_utkface(tmp_path: Path) -> Path:
    root = tmp_path / "UTKFace"
    for seed, name in enumerate([*UTK_GOOD, *UTK_BAD]):
        write_image(root / name, seed)
    write_truncated(root / UTK_TRUNCATED)
    write_empty(root / UTK_EMPTY)
    write_text(root / "README.txt", "not an image, ignored")
    return root


# FG-NET -------------------------------------------------------------------------------------------


def pts_text(n: int = 68, offset: float = 0.0) -> str:
    points = "\n".join(f"{10 + i + offset:.3f} {20 + 2 * i:.3f}" for i in range(n))
    return f"version: 1\nn_points: {n}\n{{\n{points}\n}}\n"


def make_fgnet(tmp_path: Path) -> Path:
    """001A02 and 001A05 and 001A05a with landmarks; 002A10 without a .pts; 082A70b with a broken .pts."""
    root = tmp_path / "FGNET"
    for seed, name in enumerate(["001A02.JPG", "001A05.JPG", "001A05a.jpg", "002A10.JPG", "082A70b.JPG"]):
        write_image(root / "images" / name, seed)
    write_image(root / "images" / "scan_0001.JPG")
    for stem in ("001a02", "001a05", "001a05a"):
        write_text(root / "points" / f"{stem}.pts", pts_text(offset=0.5))
    write_text(root / "points" / "082a70b.pts", "version: 1\nn_points: 68\n{\n1 2\n}\n")
    return root


# AFAD ---------------------------------------------------------------------------------------------


def make_afad(tmp_path: Path) -> Path:
    root = tmp_path / "AFAD-Full"
    write_image(root / "15" / "111" / "292943-1.jpg", 1)
    write_image(root / "15" / "112" / "671487-0.jpg", 2)
    write_image(root / "30" / "112" / "660728-2.jpg", 3)
    write_image(root / "30" / "113" / "odd-gender.jpg", 4)
    write_image(root / "stray.jpg", 5)
    write_text(root / "AFAD-Full.txt", "./15/111/292943-1.jpg\n")
    return root


# MORPH-II -----------------------------------------------------------------------------------------

MORPH_HEADER = "id_num,picture_num,dob,doa,race,gender,facial_hair,age,age_diff,glasses,photo"


def make_morph(tmp_path: Path) -> Path:
    root = tmp_path / "MORPH"
    for seed, name in enumerate(["003307_00M21.JPG", "003307_01M23.JPG", "104567_00F45.JPG", "200000_00F30.JPG"]):
        write_image(root / "Album2" / name, seed)
    rows = [
        MORPH_HEADER,
        "3307,0,1/3/1983,5/5/2004,B,M,0,21,0,0,Album2/003307_00M21.JPG",
        "3307,1,1/3/1983,6/7/2006,B,M,1,23,2,0,Album2/003307_01M23.JPG",
        "104567,0,2/2/1960,3/3/2005,W,F,0,45,0,1,Album2/104567_00F45.JPG",
        "200000,0,2/2/1975,3/3/2005,H,X,0,30,0,0,Album2/200000_00F30.JPG",  # bad gender
        "300000,0,2/2/1975,3/3/2005,A,F,0,30,0,0,Album2/300000_00F30.JPG",  # image missing
    ]
    write_text(root / "morph_2008_nonCommercial.csv", "\n".join(rows) + "\n")
    return root


def make_morph_names_only(tmp_path: Path) -> Path:
    """Album2 without the CSV: labels come from the file names."""
    root = tmp_path / "MORPH-names"
    write_image(root / "Album2" / "003307_00M21.JPG", 1)
    write_image(root / "Album2" / "104567_00F45.JPG", 2)
    write_image(root / "Album2" / "readme.jpg", 3)
    return root


# IMDB-WIKI ----------------------------------------------------------------------------------------


def matlab_datenum(year: int, month: int, day: int) -> float:
    return float(date(year, month, day).toordinal() + 366)


IMDB_ROWS = [  # full_path, dob, photo_taken, gender (1 male), face_score, second_face_score
    ("00/a_1980-03-15_2010.jpg", matlab_datenum(1980, 3, 15), 2010, 1.0, 3.2, np.nan),  # age 30, male
    ("00/b_1980-08-20_2010.jpg", matlab_datenum(1980, 8, 20), 2010, 0.0, 2.5, np.nan),  # age 29, female
    ("01/c_1990-01-01_2015.jpg", matlab_datenum(1990, 1, 1), 2015, np.nan, 1.5, np.nan),  # age 25, unknown
    ("01/d_noface.jpg", matlab_datenum(1970, 1, 1), 2000, 1.0, -np.inf, np.nan),
    ("01/e_lowscore.jpg", matlab_datenum(1970, 1, 1), 2000, 1.0, 0.5, np.nan),
    ("02/f_twofaces.jpg", matlab_datenum(1970, 1, 1), 2000, 0.0, 4.0, 1.1),
    ("02/g_missing.jpg", matlab_datenum(1970, 1, 1), 2000, 0.0, 4.0, np.nan),
    ("02/h_future.jpg", matlab_datenum(2012, 1, 1), 2000, 0.0, 4.0, np.nan),  # negative age
]


def make_imdb_wiki(tmp_path: Path) -> Path:
    """wiki_crop/wiki.mat as scipy.io.savemat writes it: a 1x1 struct of 1xN row arrays and cells."""
    from scipy.io import savemat

    root = tmp_path / "wiki_crop"
    for seed, row in enumerate(IMDB_ROWS):
        if "missing" not in row[0]:
            write_image(root / row[0], seed)
    column = list(zip(*IMDB_ROWS))
    locations = _cells([np.array([[10.0 + i, 12.0, 30.0, 31.0 + i]]) for i in range(len(IMDB_ROWS))])
    struct = {
        "dob": np.array(column[1]),
        "photo_taken": np.array(column[2], dtype=np.uint16),
        "full_path": _cells(column[0]),
        "gender": np.array(column[3]),
        "name": _cells([f"Person {i}" for i in range(len(IMDB_ROWS))]),
        "face_location": locations,
        "face_score": np.array(column[4]),
        "second_face_score": np.array(column[5]),
    }
    savemat(str(root / "wiki.mat"), {"wiki": struct})
    return root


def _cells(values) -> np.ndarray:
    """A 1-D object array (filled item by item so equal-shape arrays stay items, not a 3-D array):
    savemat writes it as a Matlab cell array, as in the real .mat."""
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out


# APPA-REAL ----------------------------------------------------------------------------------------


def make_appa_real(tmp_path: Path) -> Path:
    root = tmp_path / "appa-real-release"
    header = "file_name,num_ratings,apparent_age_avg,apparent_age_std,real_age"
    write_text(root / "gt_avg_train.csv", "\n".join([header, "000000.jpg,36,5.0,1.5,4", "000001.jpg,63,20.3,3.14,21",
                                                      "000002.jpg,40,33.0,4.0,35"]) + "\n")
    write_text(root / "gt_avg_valid.csv", "\n".join([header, "004113.jpg,38,60.2,6.1,62"]) + "\n")
    for split, stem in [("train", "000000"), ("train", "000001"), ("valid", "004113")]:
        write_image(root / split / f"{stem}.jpg")
        write_image(root / split / f"{stem}.jpg_face.jpg")
    write_image(root / "train" / "000002.jpg")  # the face crop of 000002 is missing
    return root


# ChaLearn LAP -------------------------------------------------------------------------------------


def make_chalearn_2016(tmp_path: Path) -> Path:
    root = tmp_path / "lap2016"
    write_text(root / "train_gt.csv", "image,mean,stdv\n000001.jpg,27.5,3.2\n000002.jpg,8,1.1\nmissing.jpg,30,2\n")
    write_text(root / "valid_gt.csv", "image,mean,stdv\n000001.jpg,61.25,7.5\n")
    write_image(root / "train" / "000001.jpg", 1)  # the same name exists in train/ and valid/
    write_image(root / "train" / "000002.jpg", 2)
    write_image(root / "valid" / "000001.jpg", 3)
    return root


def make_chalearn_2015(tmp_path: Path) -> Path:
    root = tmp_path / "lap2015"
    write_text(root / "Train.csv", "image;age;std\nimage_1.jpg;22;4.5\nimage_2.jpg;x;1\n")
    write_image(root / "Train" / "image_1.jpg", 1)
    write_image(root / "Train" / "image_2.jpg", 2)
    return root


# CACD, AgeDB, AAF ---------------------------------------------------------------------------------


def make_cacd(tmp_path: Path) -> Path:
    root = tmp_path / "CACD2000"
    for seed, name in enumerate(["53_Robin_Williams_0001.jpg", "62_Robin_Williams_0002.jpg",
                                 "23_Mary-Kate_Olsen_0001.jpg", "unknown.jpg"]):
        write_image(root / name, seed)
    return root


def make_agedb(tmp_path: Path) -> Path:
    root = tmp_path / "AgeDB"
    for seed, name in enumerate(["0_MariaCallas_35_f.jpg", "1_MariaCallas_40_f.jpg", "17_AlbertEinstein_70_m.jpg",
                                 "18_Nobody_30.jpg"]):
        write_image(root / name, seed)
    return root


def make_aaf(tmp_path: Path) -> Path:
    """`aglined faces` (sic) + `original images` + `image sets`; 07380/07381 sit on the gender boundary and
    00005 is listed as male in the image sets, overriding its id range."""
    root = tmp_path / "All-Age-Faces Dataset"
    names = ["00000A02.jpg", "07380A45.jpg", "07381A30.jpg", "13321A80.jpg", "00005A20.jpg"]
    for seed, name in enumerate(names):
        write_image(root / "aglined faces" / name, seed)
        write_image(root / "original images" / name, seed)
    write_image(root / "aglined faces" / "thumbs.jpg")
    write_text(root / "image sets" / "train.txt", "00000A02.jpg 0\n07381A30.jpg 1\n")
    write_text(root / "image sets" / "val.txt", "00005A20 1\n")
    return root


# Generic CSV --------------------------------------------------------------------------------------


def make_csv(tmp_path: Path) -> Path:
    """Returns the manifest file; images sit in `imgs/` beside it."""
    root = tmp_path / "mine"
    for seed, name in enumerate(["a.jpg", "b.jpg", "c.jpg", "d.jpg"]):
        write_image(root / "imgs" / name, seed)
    write_truncated(root / "imgs" / "broken.jpg")
    rows = ["path,age,gender,subject", "imgs/a.jpg,25,M,s1", "imgs/b.jpg,30.5,female,", "imgs/c.jpg,abc,0,s2",
            "imgs/d.jpg,40,x,s3", "imgs/missing.jpg,20,1,s4", "imgs/broken.jpg,50,0,s1"]
    return write_text(root / "labels.csv", "\n".join(rows) + "\n")
