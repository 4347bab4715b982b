from collections import Counter

import pytest

from agekit.data.records import FaceRecord, read_dataset
from agekit.data.splits import assign_splits, hash_split, read_split_file, select, write_split_file
from agekit.errors import AgekitError


def _records(n, subjects=None):
    return [FaceRecord(path=f"/x/{i}.jpg", key=f"{i}.jpg", age=20.0, dataset="t",
                       subject=None if subjects is None else str(i % subjects)) for i in range(n)]


def test_hash_split_is_deterministic_and_by_file_name():
    assert hash_split("a/b/1_0_0_x.jpg", 0, 0.1, 0.2) == hash_split("other/1_0_0_x.jpg", 0, 0.1, 0.2)
    counts = Counter(hash_split(f"{i}.jpg", 0, 0.1, 0.2) for i in range(20000))
    assert abs(counts["test"] / 20000 - 0.2) < 0.01 and abs(counts["val"] / 20000 - 0.1) < 0.01


def test_packaged_utkface_split_covers_the_shared_copy(utkface_root):
    table, header = read_split_file("utkface_v1")
    assert header["rule"] == "name_hash" and len(table) == 21707
    records = read_dataset("utkface", utkface_root).records
    assignment, _ = assign_splits(records, {"kind": "file", "file": "utkface_v1"})
    assert len(assignment) == len(records)
    assert {k: v for k, v in assignment.items()} == {r.key: table[r.key] for r in records}
    # a name the file has never seen (another copy of UTKFace) is assigned by the file's rule
    extra = FaceRecord(path="/y/55_0_1_20170000000000000.jpg.chip.jpg", key="55_0_1_20170000000000000.jpg.chip.jpg",
                       age=55, dataset="utkface")
    got, _ = assign_splits([extra], {"kind": "file", "file": "utkface_v1"})
    assert got[extra.key] == hash_split(extra.key, 0, 0.1, 0.2)


def test_lopo_holds_out_exactly_one_subject():
    records = _records(50, subjects=10)
    assignment, header = assign_splits(records, {"kind": "lopo", "fold": "3"})
    test = select(records, assignment, "test")
    assert {r.subject for r in test} == {"3"} and len(test) == 5
    train_subjects = {r.subject for r in select(records, assignment, "train")}
    val_subjects = {r.subject for r in select(records, assignment, "val")}
    assert not train_subjects & val_subjects and "3" not in train_subjects | val_subjects
    assert header["rule"] == "lopo"


def test_subject_kfold_folds_partition_subjects():
    records = _records(100, subjects=20)
    seen = []
    for fold in range(5):
        assignment, _ = assign_splits(records, {"kind": "subject_kfold", "k": 5, "fold": fold})
        test_subjects = {r.subject for r in select(records, assignment, "test")}
        assert len(test_subjects) == 4
        train = {r.subject for r in select(records, assignment, "train")}
        assert not test_subjects & train
        seen.extend(test_subjects)
    assert sorted(seen) == sorted({r.subject for r in records})


def test_split_errors():
    with pytest.raises(AgekitError, match="needs subject ids"):
        assign_splits(_records(5), {"kind": "lopo", "fold": "1"})
    with pytest.raises(AgekitError, match="one of the"):
        assign_splits(_records(10, 5), {"kind": "lopo", "fold": "99"})
    with pytest.raises(AgekitError, match="unknown split 'nope'"):
        assign_splits(_records(5), {"kind": "file", "file": "nope"})


def test_split_file_round_trip_and_bad_line(tmp_path):
    path = tmp_path / "s.csv"
    write_split_file(path, {"b.jpg": "test", "a.jpg": "train"}, {"rule": "manual"})
    table, header = read_split_file(str(path))
    assert table == {"a.jpg": "train", "b.jpg": "test"} and header == {"rule": "manual"}
    records = _records(3)
    assignment, _ = assign_splits(records, {"kind": "file", "file": str(path)})
    assert assignment == {}  # keys absent from a manual file are not used
    path.write_text("key,split\na.jpg,holdout\n")
    with pytest.raises(AgekitError, match=r"s.csv:2"):
        read_split_file(str(path))


def test_packaged_fgnet_development_split_is_subject_exclusive():
    """fgnet_dev_v1: 62 subjects, 20 test / 6 val / 36 train, every photo of a person in one split, and the
    header's subject lists agree with the rows."""
    assignment, header = read_split_file("fgnet_dev_v1")
    assert header["dataset"] == "fgnet" and len(assignment) == 759
    by_subject: dict = {}
    for key, split in assignment.items():
        subject = key.split("/")[-1][:3]
        by_subject.setdefault(subject, set()).add(split)
    assert len(by_subject) == 62 and all(len(s) == 1 for s in by_subject.values())
    counts = Counter(next(iter(s)) for s in by_subject.values())
    assert counts == {"test": 20, "val": 6, "train": 36}
    assert {s for s, v in by_subject.items() if v == {"test"}} == set(header["test_subjects"].split())
    assert {s for s, v in by_subject.items() if v == {"val"}} == set(header["val_subjects"].split())


def test_fgnet_development_split_covers_the_shared_copy(fgnet_root):
    records = read_dataset("fgnet", fgnet_root).records
    assignment, _ = assign_splits(records, {"kind": "file", "file": "fgnet_dev_v1"})
    assert len(assignment) == len(records) == 759
    assert Counter(assignment.values()) == {"train": 431, "val": 76, "test": 252}
