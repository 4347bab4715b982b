"""From a config to batches: read the dataset, assign splits, crop once (cache), iterate batches."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from agekit.data.cache import build_or_load, load_crop
from agekit.data.preprocess import CropSpec
from agekit.data.records import AGE_VALID_RANGE, read_dataset
from agekit.data.splits import assign_splits, hash_unit, select, write_split_file
from agekit.errors import AgekitError

log = logging.getLogger(__name__)

# Folder names under $AGEKIT_DATA (or ../shared/data) when data.root is not set.
DEFAULT_FOLDERS = {"utkface": "UTKFace", "fgnet": "FGNET", "afad": "AFAD", "morph": "MORPH",
                   "imdb_wiki": "IMDB-WIKI", "appa_real": "APPA-REAL", "chalearn_lap": "ChaLearn",
                   "cacd": "CACD2000", "agedb": "AgeDB", "aaf": "AAF"}


def data_root(cfg: dict) -> Path:
    d = cfg["data"]
    if d["root"]:
        return Path(d["root"]).expanduser()
    base = Path(os.environ.get("AGEKIT_DATA", "../shared/data"))
    return base / DEFAULT_FOLDERS.get(d["dataset"], d["dataset"])


@dataclass
class SplitData:
    """Crops and labels of one split. images: (N, S, S, 3) uint8 (None when uncached)."""

    records: list
    images: np.ndarray | None
    ages: np.ndarray
    genders: np.ndarray  # -1 where unknown


def _labels(records):
    ages = np.array([r.age for r in records], dtype=np.float32)
    genders = np.array([-1 if r.gender is None else r.gender for r in records], dtype=np.int64)
    return ages, genders


def seeded_subset(records, n: int, seed: int) -> list:
    """A reproducible random subset of n records (first-n of a sorted list would be a narrow age band)."""
    picked = sorted(records, key=lambda r: hash_unit(r.key, seed + 7))[:n]
    return sorted(picked, key=lambda r: r.key)


def load_splits(cfg: dict, splits=("train", "val"), run_dir=None, progress=True) -> dict:
    """Read records, assign splits (saved to run_dir/split.csv), and crop each requested split."""
    d = cfg["data"]
    root = data_root(cfg)
    result = read_dataset(d["dataset"], root, **d["options"])
    if result.skipped:
        log.warning("%s: skipped %d entries (first: %s: %s)", root, len(result.skipped), *result.skipped[0])
    records = [r for r in result.records if AGE_VALID_RANGE[0] <= r.age <= AGE_VALID_RANGE[1]]
    if not records:
        raise AgekitError(f"{root}: no usable labelled images for dataset '{d['dataset']}'")
    assignment, header = assign_splits(records, d["split"])
    if run_dir is not None:
        write_split_file(Path(run_dir) / "split.csv", assignment, header)
    spec = CropSpec(**d["crop"])
    out = {}
    for split in splits:
        chosen = list(records) if split == "all" else select(records, assignment, split)
        limit = d["limit_train"] if split == "train" else d["limit_eval"]
        if limit and len(chosen) > int(limit):
            chosen = seeded_subset(chosen, int(limit), cfg["seed"])
        if not chosen:
            raise AgekitError(f"split '{split}' of {root} is empty (split {d['split']})")
        if d["cache"] or split != "train":
            # without the cache only training decodes per batch; evaluation splits are cropped in memory once
            cache = build_or_load(d["dataset"], chosen, spec, d["cache_dir"], progress=progress,
                                  use_cache=d["cache"])
            chosen, images = cache.records, cache.images
        else:
            images = None
        out[split] = SplitData(chosen, images, *_labels(chosen))
    out["_split_header"] = header
    return out


class CropDataset(Dataset):
    """The uncached path: decode + crop on every access (what the cache saves)."""

    def __init__(self, records, spec: CropSpec):
        self.records, self.spec = records, spec

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        return torch.from_numpy(load_crop(self.records[i], self.spec)), i


class BatchSource:
    """Yields (uint8 images (B, S, S, 3), ages (B,), genders (B,)) for one epoch of one split.

    Uses a DistributedSampler (plain shuffling when world == 1) so every rank sees its share; `skip`
    drops the first batches of the epoch, which makes a resumed epoch continue where it stopped.
    """

    def __init__(self, data: SplitData, batch_size: int, *, shuffle: bool, seed: int, rank=0, world=1,
                 spec: CropSpec | None = None, workers: int = 2):
        self.data, self.batch_size, self.spec, self.workers = data, batch_size, spec, workers
        self.sampler = DistributedSampler(range(len(data.records)), num_replicas=world, rank=rank,
                                          shuffle=shuffle, seed=seed, drop_last=shuffle)

    def __len__(self):
        n = len(self.sampler)
        return n // self.batch_size if self.sampler.shuffle else -(-n // self.batch_size)

    def batches(self, epoch: int, skip: int = 0):
        self.sampler.set_epoch(epoch)
        order = np.fromiter(iter(self.sampler), dtype=np.int64)
        n_batches = len(self)
        if self.data.images is None:
            yield from self._decoded_batches(order, n_batches, skip)
            return
        for b in range(skip, n_batches):
            idx = np.sort(order[b * self.batch_size:(b + 1) * self.batch_size])  # sorted: faster gather
            yield (torch.from_numpy(self.data.images[idx]), torch.from_numpy(self.data.ages[idx]),
                   torch.from_numpy(self.data.genders[idx]))

    def _decoded_batches(self, order, n_batches, skip):
        subset = order[skip * self.batch_size: n_batches * self.batch_size]
        loader = DataLoader(CropDataset(self.data.records, self.spec), batch_size=self.batch_size,
                            sampler=subset.tolist(), num_workers=self.workers, persistent_workers=False)
        for images, idx in loader:
            idx = idx.numpy()
            yield images, torch.from_numpy(self.data.ages[idx]), torch.from_numpy(self.data.genders[idx])
