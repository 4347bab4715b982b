"""Dataset readers on tiny fake copies of each distribution, and on the real UTKFace and FG-NET."""
from pathlib import Path

import numpy as np
import pytest

import support.datasets as fx
from agekit.data.readers import detect_dataset, list_datasets, read_pts
from agekit.data.records import FEMALE, MALE, read_dataset
from agekit.errors import AgekitError

ALL_READERS = ["aaf", "afad", "agedb", "appa_real", "cacd", "chalearn_lap", "csv", "fgnet", "imdb_wiki", "morph",
               "utkface"]


def by_key(result):
    return {r.key: r for r in result.records}


def reasons(result):
    return {Path(entry.split(":")[0]).name: reason for entry, reason in result.skipped}


def test_list_datasets_names_every_reader():
    assert list_datasets() == ALL_READERS


@pytest.mark.parametrize("name", ALL_READERS)
def test_missing_and_empty_root_raise_one_line_error(tmp_path, name):
    missing = tmp_path / "nowhere"
    with pytest.raises(AgekitError, match="not found") as info:
        read_dataset(name, missing)
    assert str(missing) in str(info.value) and "\n" not in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AgekitError, match="empty"):
        read_dataset(name, empty)


def test_utkface_parses_names_without_decoding(tmp_path):
    result = read_dataset("utkface", fx.make_utkface(tmp_path))
    records = by_key(result)
    # the truncated and the zero-byte file have valid names: listed, not decoded, so they are records
    assert set(records) == set(fx.UTK_GOOD) | {fx.UTK_TRUNCATED, fx.UTK_EMPTY}
    for key, (age, gender, race) in fx.UTK_GOOD.items():
        assert (records[key].age, records[key].gender, records[key].race) == (age, gender, race)
        assert records[key].dataset == "utkface" and records[key].subject is None
    assert [r.key for r in result.records] == sorted(records)
    assert all(Path(r.path).is_absolute() and Path(r.path).is_file() for r in result.records)
    skipped = reasons(result)
    assert set(skipped) == set(fx.UTK_BAD)
    for name, words in fx.UTK_BAD.items():
        assert words in skipped[name]


def test_fgnet_subjects_ages_and_landmarks(tmp_path):
    result = read_dataset("fgnet", fx.make_fgnet(tmp_path))
    records = by_key(result)
    assert sorted(records) == ["images/001A02.JPG", "images/001A05.JPG", "images/001A05a.jpg", "images/002A10.JPG",
                               "images/082A70b.JPG"]
    first = records["images/001A02.JPG"]
    assert (first.subject, first.age, first.gender) == ("001", 2.0, None)
    assert first.landmarks.dtype == np.float32 and first.landmarks.shape == (68, 2)
    np.testing.assert_allclose(first.landmarks[1], [11.5, 22.0])
    assert records["images/001A05a.jpg"].age == 5 and records["images/001A05a.jpg"].landmarks is not None
    assert records["images/002A10.JPG"].landmarks is None  # no .pts: kept without landmarks
    assert records["images/082A70b.JPG"].landmarks is None  # broken .pts: kept without landmarks
    assert records["images/082A70b.JPG"].subject == "082"
    assert reasons(result) == {"scan_0001.JPG": "name does not match SSSAaa[a|b].JPG"}


def test_read_pts_rejects_malformed_files(tmp_path):
    good = fx.write_text(tmp_path / "a.pts", fx.pts_text(n=5))
    assert read_pts(good).shape == (5, 2)
    for text in ["", "version: 1\nn_points: 3\n{\n1 2\n3 4\n}\n", "n_points: 1\n{\n1 x\n}\n", "n_points: 1\n1 2\n"]:
        with pytest.raises(ValueError):
            read_pts(fx.write_text(tmp_path / "bad.pts", text))


def test_afad_gender_from_folder_code(tmp_path):
    result = read_dataset("afad", fx.make_afad(tmp_path))
    assert [(r.key, r.age, r.gender) for r in result.records] == [
        ("15/111/292943-1.jpg", 15, MALE), ("15/112/671487-0.jpg", 15, FEMALE), ("30/112/660728-2.jpg", 30, FEMALE)]
    assert set(reasons(result)) == {"stray.jpg", "odd-gender.jpg"}


def test_morph_csv(tmp_path):
    result = read_dataset("morph", fx.make_morph(tmp_path))
    assert [(r.key, r.age, r.gender, r.subject, r.race) for r in result.records] == [
        ("Album2/003307_00M21.JPG", 21, MALE, "3307", 1),
        ("Album2/003307_01M23.JPG", 23, MALE, "3307", 1),
        ("Album2/104567_00F45.JPG", 45, FEMALE, "104567", 0)]
    assert reasons(result) == {"morph_2008_nonCommercial.csv": "unknown gender 'X'",
                               "300000_00F30.JPG": "image file not found"}


def test_morph_csv_option_and_file_name_fallback(tmp_path):
    root = fx.make_morph(tmp_path)
    table = root / "morph_2008_nonCommercial.csv"
    assert len(read_dataset("morph", root, csv=table).records) == 3
    (root / "copy.csv").write_text(table.read_text())
    with pytest.raises(AgekitError, match="several CSV"):
        read_dataset("morph", root)
    names = read_dataset("morph", fx.make_morph_names_only(tmp_path))
    assert [(r.age, r.gender, r.subject) for r in names.records] == [(21, MALE, "3307"), (45, FEMALE, "104567")]
    assert set(reasons(names)) == {"readme.jpg"}


def test_imdb_wiki_mat(tmp_path):
    result = read_dataset("imdb_wiki", fx.make_imdb_wiki(tmp_path))
    records = by_key(result)
    assert sorted(records) == ["00/a_1980-03-15_2010.jpg", "00/b_1980-08-20_2010.jpg", "01/c_1990-01-01_2015.jpg"]
    a, b, c = (records[k] for k in sorted(records))
    # born before July: birthday passed by 1 July 2010; born in August: not yet
    assert (a.age, b.age, c.age) == (30, 29, 25)
    assert (a.gender, b.gender, c.gender) == (MALE, FEMALE, None)  # IMDB-WIKI 1=male -> agekit 0=male
    assert a.box == (10.0, 12.0, 30.0, 31.0)
    skipped = reasons(result)
    assert skipped["d_noface.jpg"].startswith("no face")
    assert "below 1" in skipped["e_lowscore.jpg"]
    assert "second face" in skipped["f_twofaces.jpg"]
    assert skipped["g_missing.jpg"] == "image file not found"
    assert "outside the valid range" in skipped["h_future.jpg"]


def test_imdb_wiki_filter_options_and_mat_path(tmp_path):
    root = fx.make_imdb_wiki(tmp_path)
    relaxed = read_dataset("imdb_wiki", root / "wiki.mat", min_face_score=0.0, drop_second_face=False)
    assert {"00/a_1980-03-15_2010.jpg", "01/e_lowscore.jpg", "02/f_twofaces.jpg"} <= set(by_key(relaxed))
    assert "d_noface.jpg" in reasons(relaxed)  # no face is never usable


def test_appa_real_targets_and_crops(tmp_path):
    root = fx.make_appa_real(tmp_path)
    real = read_dataset("appa_real", root)
    assert [(r.key, r.age, r.age_std) for r in real.records] == [
        ("train/000000.jpg_face.jpg", 4, 1.5), ("train/000001.jpg_face.jpg", 21, 3.14),
        ("valid/004113.jpg_face.jpg", 62, 6.1)]
    assert reasons(real) == {"000002.jpg_face.jpg": "image file not found"}
    apparent = read_dataset("appa_real", root, target="apparent", use_face_crops=False)
    assert [(r.key, r.age) for r in apparent.records] == [
        ("train/000000.jpg", 5.0), ("train/000001.jpg", 20.3), ("train/000002.jpg", 33.0), ("valid/004113.jpg", 60.2)]
    with pytest.raises(AgekitError, match="target"):
        read_dataset("appa_real", root, target="guess")


def test_chalearn_2016_comma_format_resolves_names_per_split(tmp_path):
    result = read_dataset("chalearn_lap", fx.make_chalearn_2016(tmp_path))
    assert [(r.key, r.age, r.age_std) for r in result.records] == [
        ("train/000001.jpg", 27.5, 3.2), ("train/000002.jpg", 8.0, 1.1), ("valid/000001.jpg", 61.25, 7.5)]
    assert [reason for _, reason in result.skipped] == ["image file not found"]
    assert "missing.jpg" in result.skipped[0][0]


def test_chalearn_2015_semicolon_format(tmp_path):
    result = read_dataset("chalearn_lap", fx.make_chalearn_2015(tmp_path))
    assert [(r.key, r.age, r.age_std) for r in result.records] == [("Train/image_1.jpg", 22.0, 4.5)]
    assert reasons(result) == {"image_2.jpg": "age 'x' is not a number"}


def test_cacd_subject_is_the_name(tmp_path):
    result = read_dataset("cacd", fx.make_cacd(tmp_path))
    assert [(r.age, r.subject) for r in result.records] == [
        (23, "Mary-Kate_Olsen"), (53, "Robin_Williams"), (62, "Robin_Williams")]
    assert set(reasons(result)) == {"unknown.jpg"}


def test_agedb_gender_and_subject(tmp_path):
    result = read_dataset("agedb", fx.make_agedb(tmp_path))
    assert [(r.age, r.gender, r.subject) for r in result.records] == [
        (35, FEMALE, "MariaCallas"), (70, MALE, "AlbertEinstein"), (40, FEMALE, "MariaCallas")]
    assert set(reasons(result)) == {"18_Nobody_30.jpg"}


def test_aaf_gender_from_lists_then_id_range(tmp_path):
    root = fx.make_aaf(tmp_path)
    result = read_dataset("aaf", root)
    assert [(r.key, r.age, r.gender) for r in result.records] == [
        ("aglined faces/00000A02.jpg", 2, FEMALE),
        ("aglined faces/00005A20.jpg", 20, MALE),  # listed as male in image sets/val.txt
        ("aglined faces/07380A45.jpg", 45, FEMALE),  # last female id
        ("aglined faces/07381A30.jpg", 30, MALE),  # first male id
        ("aglined faces/13321A80.jpg", 80, MALE)]
    assert set(reasons(result)) == {"thumbs.jpg"}
    original = read_dataset("aaf", root, images="original")
    assert [r.key for r in original.records][0] == "original images/00000A02.jpg"
    assert not original.skipped


def test_generic_csv(tmp_path):
    table = fx.make_csv(tmp_path)
    for result in (read_dataset("csv", table), read_dataset("csv", table.parent),
                   read_dataset("csv", tmp_path, csv=table)):
        assert [(r.key, r.age, r.gender, r.subject) for r in result.records] == [
            ("imgs/a.jpg", 25, MALE, "s1"), ("imgs/b.jpg", 30.5, FEMALE, None), ("imgs/broken.jpg", 50, MALE, "s1")]
        assert reasons(result) == {"c.jpg": "age 'abc' is not a number", "labels.csv": "unknown gender 'x'",
                                   "missing.jpg": "image file not found"}
    with pytest.raises(AgekitError, match="CSV file not found"):
        read_dataset("csv", tmp_path / "nope.csv")


def test_generic_csv_needs_path_and_age_columns(tmp_path):
    table = fx.write_text(tmp_path / "x" / "bad.csv", "file_path,years\na.jpg,3\n")
    with pytest.raises(AgekitError, match="'path' and 'age'"):
        read_dataset("csv", table)


@pytest.mark.parametrize("make, expected", [
    (fx.make_utkface, "utkface"), (fx.make_fgnet, "fgnet"), (fx.make_afad, "afad"), (fx.make_morph, "morph"),
    (fx.make_morph_names_only, "morph"), (fx.make_imdb_wiki, "imdb_wiki"), (fx.make_appa_real, "appa_real"),
    (fx.make_chalearn_2016, "chalearn_lap"), (fx.make_chalearn_2015, "chalearn_lap"), (fx.make_cacd, "cacd"),
    (fx.make_agedb, "agedb"), (fx.make_aaf, "aaf"), (fx.make_csv, "csv")])
def test_detect_dataset_from_layout(tmp_path, make, expected):
    path = make(tmp_path)
    assert detect_dataset(path) == expected
    if path.is_file():
        assert detect_dataset(path.parent) == expected


def test_detect_dataset_refuses_to_guess(tmp_path):
    for i in range(3):
        fx.write_image(tmp_path / "photos" / f"IMG_{i}.jpg")
    with pytest.raises(AgekitError, match="--dataset"):
        detect_dataset(tmp_path / "photos")


# Real data ---------------------------------------------------------------------------------------


def test_real_utkface(utkface_root):
    result = read_dataset("utkface", utkface_root)
    assert len(result.records) == 21707 and not result.skipped
    records = by_key(result)
    known = records["100_1_2_20170105174847679.jpg.chip.jpg"]
    assert (known.age, known.gender, known.race, known.dataset) == (100, FEMALE, 2, "utkface")
    assert known.path == str(utkface_root / known.key)
    no_race = records["39_1_20170116174525125.jpg.chip.jpg"]
    assert (no_race.age, no_race.gender, no_race.race) == (39, FEMALE, None)
    assert sum(r.race is None for r in result.records) == 3
    # published names with a stray space / missing dot keep their labels
    assert records["24_0_1_20170116220224657 .jpg.chip.jpg"].race == 1
    assert records["55_0_0_20170116232725357jpg.chip.jpg"].age == 55
    assert detect_dataset(utkface_root) == "utkface"


def test_real_fgnet(fgnet_root):
    result = read_dataset("fgnet", fgnet_root)
    assert len(result.records) == 759 and not result.skipped
    assert len({r.subject for r in result.records}) == 62
    assert all(r.landmarks is not None and r.landmarks.shape == (68, 2) for r in result.records)
    first = by_key(result)["images/001A02.JPG"]
    assert (first.subject, first.age) == ("001", 2)
    np.testing.assert_allclose(first.landmarks[0], [74.9337, 200.858], rtol=1e-6)
    assert detect_dataset(fgnet_root) == "fgnet"
