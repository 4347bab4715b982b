"""Train/val/test splits as files.

- "file":  a committed split file (agekit/splits/<name>.csv or a path): lines `key,split`. A file made by
           the name-hash rule records it in a `# rule=` header, so keys missing from the file (another copy
           of the dataset) are assigned by the same rule; the UTKFace split works on any copy or subset.
- "lopo":  leave-one-person-out; `fold` names the test subject; val = a seeded tenth of the other subjects.
- "subject_kfold": k subject-exclusive folds; `fold` is the test fold, val = a seeded share of the rest.
- "random": seeded random split by key (val_fraction, test_fraction).
Every run writes the split it used (split.csv) beside its results.
"""
from __future__ import annotations

import hashlib
import io
from importlib import resources
from pathlib import Path

from agekit.errors import AgekitError
from agekit.io import write_text_atomic

SPLITS = ("train", "val", "test")


def hash_unit(text: str, seed: int) -> float:
    """Deterministic number in [0, 1) from a string and a seed (same on every machine and Python)."""
    digest = hashlib.sha1(f"{seed}:{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def hash_split(key: str, seed: int, val_fraction: float, test_fraction: float) -> str:
    u = hash_unit(Path(key).name, seed)  # by file name only, so folder layout does not matter
    if u < test_fraction:
        return "test"
    return "val" if u < test_fraction + val_fraction else "train"


def _split_path(name: str) -> Path:
    path = Path(name)
    if path.suffix == ".csv" or path.exists():
        if not path.is_file():
            raise AgekitError(f"split file not found: {path}")
        return path
    packaged = resources.files("agekit") / "splits" / f"{name}.csv"
    if not packaged.is_file():
        available = sorted(p.name[:-4] for p in (resources.files("agekit") / "splits").iterdir()
                           if p.name.endswith(".csv"))
        raise AgekitError(f"unknown split '{name}'; packaged splits: {', '.join(available)}")
    return Path(str(packaged))


def read_split_file(name: str) -> tuple[dict, dict]:
    """Return ({key: split}, header) for a split file. Header lines look like `# field=value`."""
    path = _split_path(name)
    assignment, header = {}, {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            if "=" in line:
                k, v = line[1:].split("=", 1)
                header[k.strip()] = v.strip()
            continue
        parts = line.split(",")
        if parts == ["key", "split"]:
            continue
        if len(parts) != 2 or parts[1] not in SPLITS:
            raise AgekitError(f"{path}:{number}: expected 'key,split' with split in {SPLITS}, got {line!r}")
        assignment[parts[0]] = parts[1]
    return assignment, header


def write_split_file(path, assignment: dict, header: dict | None = None) -> None:
    buf = io.StringIO()
    for k, v in (header or {}).items():
        buf.write(f"# {k}={v}\n")
    buf.write("key,split\n")
    for key in sorted(assignment):
        buf.write(f"{key},{assignment[key]}\n")
    write_text_atomic(path, buf.getvalue())


def make_hash_split(keys, seed=0, val_fraction=0.1, test_fraction=0.2) -> tuple[dict, dict]:
    header = {"rule": "name_hash", "seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction}
    return {k: hash_split(k, seed, val_fraction, test_fraction) for k in keys}, header


def _subject_split(records, test_subjects: set, seed: int, val_fraction: float) -> dict:
    out = {}
    for r in records:
        if r.subject in test_subjects:
            out[r.key] = "test"
        else:
            out[r.key] = "val" if hash_unit(str(r.subject), seed + 1) < val_fraction else "train"
    return out


def assign_splits(records, spec: dict) -> tuple[dict, dict]:
    """Map every record key to train/val/test following `spec` (the config's data.split)."""
    kind = spec.get("kind", "file")
    seed, val_f, test_f = int(spec.get("seed", 0)), float(spec.get("val_fraction", 0.1)), float(spec.get("test_fraction", 0.2))
    keys = [r.key for r in records]
    if kind == "file":
        table, header = read_split_file(spec["file"])
        header = {**header, "file": spec["file"]}
        if header.get("rule") == "name_hash":
            hs, hv, ht = int(header["seed"]), float(header["val_fraction"]), float(header["test_fraction"])
            by_name = {Path(k).name: v for k, v in table.items()}
            return {k: by_name.get(Path(k).name) or hash_split(k, hs, hv, ht) for k in keys}, header
        return {k: table[k] for k in keys if k in table}, header
    if kind == "random":
        return make_hash_split(keys, seed, val_f, test_f)
    subjects = sorted({r.subject for r in records if r.subject is not None})
    if not subjects:
        raise AgekitError(f"split kind '{kind}' needs subject ids, and this dataset has none")
    if kind == "lopo":
        fold = spec.get("fold")
        if fold is None or str(fold) not in subjects:
            raise AgekitError(f"split kind 'lopo' needs data.split.fold = one of the {len(subjects)} subject ids "
                              f"(e.g. {subjects[0]}), got {fold!r}")
        header = {"rule": "lopo", "fold": fold, "seed": seed, "val_fraction": val_f}
        return _subject_split(records, {str(fold)}, seed, val_f), header
    if kind == "subject_kfold":
        k, fold = int(spec.get("k", 5)), int(spec.get("fold") or 0)
        if not 0 <= fold < k:
            raise AgekitError(f"data.split.fold must be in 0..{k - 1}, got {fold}")
        order = sorted(subjects, key=lambda s: hash_unit(str(s), seed))
        test = {s for i, s in enumerate(order) if i % k == fold}
        header = {"rule": "subject_kfold", "k": k, "fold": fold, "seed": seed, "val_fraction": val_f}
        return _subject_split(records, test, seed, val_f), header
    raise AgekitError(f"unknown split kind '{kind}'; choose from file, random, lopo, subject_kfold")


def seeded_subset(records, n: int | None, seed: int = 0) -> list:
    """A reproducible subset of n records, in key order: sorted by hash_unit(key, seed + 7), first n (a
    smaller n is a subset of a larger one; first-n of a sorted list would be a narrow age band).
    None/0 or n >= len keeps all."""
    if not n or n >= len(records):
        return sorted(records, key=lambda r: r.key)
    picked = sorted(records, key=lambda r: hash_unit(r.key, seed + 7))[:int(n)]
    return sorted(picked, key=lambda r: r.key)


def select(records, assignment: dict, split: str) -> list:
    if split not in SPLITS:
        raise AgekitError(f"unknown split '{split}'; choose from {', '.join(SPLITS)}")
    return [r for r in records if assignment.get(r.key) == split]
