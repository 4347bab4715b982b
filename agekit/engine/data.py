"""From a config to batches: read the dataset, assign splits, crop once (cache), iterate batches."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from agekit.crop import crop_face, view_specs
from agekit.data.cache import build_or_load
from agekit.data.detected import attach_detections
from agekit.data.records import AGE_VALID_RANGE, default_root, read_dataset
from agekit.data.splits import (
    assign_splits,
    hash_unit,
    seeded_subset,
    select,
    write_split_file,
)
from agekit.errors import AgekitError, ImageError
from agekit.io import load_image

log = logging.getLogger(__name__)



def data_root(cfg: dict) -> Path:
    d = cfg["data"]
    if d["root"]:
        return Path(d["root"]).expanduser()
    return default_root(d["dataset"])


@dataclass
class SplitData:
    """Crops and labels of one split. views: one (N, S_v, S_v, 3) uint8 array per crop view
    (None when uncached: training then decodes per batch)."""

    records: list
    views: list | None
    ages: np.ndarray
    genders: np.ndarray  # -1 where unknown


def _labels(records):
    ages = np.array([r.age for r in records], dtype=np.float32)
    genders = np.array([-1 if r.gender is None else r.gender for r in records], dtype=np.int64)
    return ages, genders


def load_splits(cfg: dict, splits=("train", "val"), run_dir=None, progress=True) -> dict:
    """Read records, assign splits (saved to run_dir/split.csv), and crop each requested split.

    With data.extra_datasets, the train and val splits of each extra dataset (its own reader, root and
    split rule) join the main dataset's, the extra training images repeated `repeat` times; the test split
    stays the main dataset's. data.balance then evens out age bands (and race) by repeating rare ones.
    """
    out = _load_one(cfg, splits, run_dir, progress)
    # .get: configs stored in checkpoints of earlier versions lack these keys
    extras = cfg["data"].get("extra_datasets") or []
    wanted = [s for s in splits if s in ("train", "val")]
    names = [e.get("dataset") if isinstance(e, dict) else None for e in extras]
    for i, extra in enumerate(extras if wanted else []):
        sub = extra_dataset_config(cfg, extra, i)
        name = sub["data"]["dataset"]
        split_name = f"split-{name}.csv" if names.count(name) == 1 else f"split-{name}-{i}.csv"
        # an extra dataset may give only training images (all its people in train): no val then
        more = _load_one(sub, wanted, run_dir, progress, split_name=split_name, allow_empty=True)
        if "train" in wanted and "train" not in more:
            raise AgekitError(f"data.extra_datasets[{i}] ({name}): its split {sub['data']['split']} leaves no "
                              "training images")
        for split in wanted:
            part = more.get(split)
            if part is None:
                continue
            if split == "train":
                part = repeat_split(part, float(extra.get("repeat", 1.0)), cfg["seed"])
            out[split] = concat_splits(out[split], part)
    b = cfg["data"].get("balance") or {}
    if "train" in out and b.get("power"):
        out["train"] = repeat_split(out["train"], balance_repeats(out["train"].records, b["power"],
                                                                  b.get("max_repeat", 3.0), b.get("by", ["age"])),
                                    cfg["seed"])
    return out


EXTRA_KEYS = ("dataset", "root", "split", "options", "repeat")


def extra_dataset_config(cfg: dict, extra, index: int) -> dict:
    """The config that reads one entry of data.extra_datasets: the main config with that dataset's
    reader, root, split and options (crop, landmarks, detector and cache as the main dataset's)."""
    if not isinstance(extra, dict) or "dataset" not in extra:
        raise AgekitError(f"data.extra_datasets[{index}] must be a mapping with at least 'dataset', e.g. "
                          "{dataset: fgnet, split: {kind: file, file: fgnet_dev_v1}, repeat: 4}")
    unknown = sorted(set(extra) - set(EXTRA_KEYS))
    if unknown:
        raise AgekitError(f"data.extra_datasets[{index}]: unknown key(s) {', '.join(unknown)}; "
                          f"allowed: {', '.join(EXTRA_KEYS)}")
    d = dict(cfg["data"])
    # the extra dataset's own split rule (the main one's split file would name none of its images);
    # without one, a seeded random split
    split = dict(extra.get("split") or {"kind": "random"})
    d.update(dataset=extra["dataset"], root=extra.get("root"), options=dict(extra.get("options") or {}),
             extra_datasets=[], split=split)
    return {**cfg, "data": d}


def concat_splits(a: SplitData, b: SplitData) -> SplitData:
    """One split holding both datasets' images (views must have the same crop sizes)."""
    views = None
    if a.views is not None and b.views is not None:
        views = [np.concatenate([va, vb]) for va, vb in zip(a.views, b.views)]
    elif (a.views is None) != (b.views is None):
        raise AgekitError("cannot mix cached and uncached splits; set data.cache the same for all datasets")
    return SplitData(a.records + b.records, views, np.concatenate([a.ages, b.ages]),
                     np.concatenate([a.genders, b.genders]))


def repeat_split(data: SplitData, repeats, seed: int) -> SplitData:
    """Oversample: each record i appears floor(r_i) times plus once more with probability frac(r_i),
    decided by a seeded hash of its key (so the same images are repeated on every run).
    repeats: one number for all records or one per record; values below 1 are raised to 1."""
    r = np.broadcast_to(np.asarray(repeats, dtype=np.float64), (len(data.records),))
    r = np.maximum(r, 1.0)
    if np.all(r == 1.0):
        return data
    extra = np.array([hash_unit(rec.key, seed + 11) < frac for rec, frac in zip(data.records, r % 1.0)])
    counts = np.floor(r).astype(np.int64) + extra
    idx = np.repeat(np.arange(len(data.records)), counts)
    views = None if data.views is None else [v[idx] for v in data.views]
    return SplitData([data.records[i] for i in idx], views, data.ages[idx], data.genders[idx])


BALANCE_AGE_EDGES = (0, 3, 7, 13, 20, 30, 40, 50, 60, 70)


def balance_repeats(records, power: float, max_repeat: float, by=("age",)) -> np.ndarray:
    """Repeat factors evening out groups (repeat-factor sampling, Gupta et al., LVIS, CVPR 2019):
    r = clip((median group size / group size) ** power, 1, max_repeat) for each of `by` ("age": the bands
    starting at BALANCE_AGE_EDGES; "race": the race code, unknown race left alone), multiplied across `by`
    and clipped again. Returns (N,) floats."""
    total = np.ones(len(records))
    for key in by:
        if key == "age":
            groups = np.searchsorted(BALANCE_AGE_EDGES, [r.age for r in records], side="right") - 1
        elif key == "race":
            groups = np.array([-1 if r.race is None else r.race for r in records])
        else:
            raise AgekitError(f"data.balance.by: unknown group {key!r}; choose from age, race")
        known = groups >= 0
        values, counts = np.unique(groups[known], return_counts=True)
        if not len(values):
            continue
        size = dict(zip(values.tolist(), counts.tolist()))
        median = float(np.median(counts))
        factor = np.array([(median / size[g]) ** power if g >= 0 else 1.0 for g in groups.tolist()])
        total *= np.clip(factor, 1.0, max_repeat)
    return np.clip(total, 1.0, max_repeat)


def _load_one(cfg: dict, splits, run_dir, progress, split_name: str = "split.csv", allow_empty=False) -> dict:
    """load_splits for one dataset; allow_empty: leave out empty splits instead of failing."""
    d = cfg["data"]
    root = data_root(cfg)
    result = read_dataset(d["dataset"], root, **d["options"])
    if result.skipped:
        log.warning("%s: skipped %d entries (first: %s: %s)", root, len(result.skipped), *result.skipped[0])
    records = [r for r in result.records if AGE_VALID_RANGE[0] <= r.age <= AGE_VALID_RANGE[1]]
    if not records:
        raise AgekitError(f"{root}: no usable labelled images for dataset '{d['dataset']}'")
    if d.get("landmarks") == "detect":

        records, _ = attach_detections(d["dataset"], records, d.get("detector", "default"),
                                       cache_dir=d["cache_dir"], progress=progress)
    assignment, header = assign_splits(records, d["split"])
    if run_dir is not None:
        write_split_file(Path(run_dir) / split_name, assignment, header)
    specs = view_specs(cfg)
    # Without subset limits, crop the whole dataset once and slice the splits from it: one cache then
    # serves every split and every fold (leave-one-person-out would otherwise build one per subject).
    whole = None
    if d["cache"] and not (d["limit_train"] or d["limit_eval"]):
        whole_views, kept = _cropped_views(d, records, specs, progress)
        whole = (whole_views, {r.key: i for i, r in enumerate(kept)})
    out = {}
    for split in splits:
        chosen = list(records) if split == "all" else select(records, assignment, split)
        limit = d["limit_train"] if split == "train" else d["limit_eval"]
        if limit and len(chosen) > int(limit):
            chosen = seeded_subset(chosen, int(limit), cfg["seed"])
        if not chosen and allow_empty:
            continue
        if not chosen:
            raise AgekitError(f"split '{split}' of {root} is empty (split {d['split']})")
        views = None
        if whole is not None:
            whole_views, index = whole
            chosen = [r for r in chosen if r.key in index]
            rows = np.array([index[r.key] for r in chosen], dtype=np.int64)
            views = [v[rows] for v in whole_views]
        elif d["cache"] or split != "train":
            # without the cache only training decodes per batch; evaluation splits are cropped in memory once
            views, chosen = _cropped_views(d, chosen, specs, progress)
        out[split] = SplitData(chosen, views, *_labels(chosen))
    out["_split_header"] = header
    return out


def _cropped_views(d: dict, records, specs, progress):
    """Crop every view; keep only the records that every view could read."""
    caches = [build_or_load(d["dataset"], records, spec, d["cache_dir"], progress=progress, use_cache=d["cache"])
              for spec in specs]
    failed = set().union(*(c.failures for c in caches))
    if len(caches) > 1 and failed:
        keep = [i for i, r in enumerate(records) if r.key not in failed]
        positions = [{r.key: j for j, r in enumerate(c.records)} for c in caches]
        views = [c.images[[pos[records[i].key] for i in keep]] for c, pos in zip(caches, positions)]
        return views, [records[i] for i in keep]
    return [c.images for c in caches], caches[0].records


class CropDataset(Dataset):
    """The uncached path: decode + crop on every access (what the cache saves)."""

    def __init__(self, records, specs: list):
        self.records, self.specs = records, specs

    def __len__(self):
        return len(self.records)

    def __getitem__(self, i):
        r = self.records[i]
        try:
            image = load_image(r.path)  # decoded once; every view is cropped from the same pixels
        except ImageError as exc:
            log.warning("skipping %s", exc)
            return None
        points = r.face_points()
        return [torch.from_numpy(crop_face(image, s, landmarks=points, box=r.box)) for s in self.specs], i


def _collate_readable(items):
    """Batch the items that could be read (unreadable files come back as None and are dropped)."""
    items = [item for item in items if item is not None]
    if not items:
        return None
    return torch.utils.data.default_collate(items)


class BatchSource:
    """Yields (views, ages (B,), genders (B,)) for one epoch of one split; views = one uint8 tensor
    (B, S_v, S_v, 3) per crop view.

    Uses a DistributedSampler (plain shuffling when world == 1) so every rank sees its share; `skip`
    drops the first batches of the epoch, which makes a resumed epoch continue where it stopped.
    """

    def __init__(self, data: SplitData, batch_size: int, *, shuffle: bool, seed: int, rank=0, world=1,
                 specs: list | None = None, workers: int = 2):
        self.data, self.batch_size, self.specs, self.workers = data, batch_size, specs, workers
        self.sampler = DistributedSampler(range(len(data.records)), num_replicas=world, rank=rank,
                                          shuffle=shuffle, seed=seed, drop_last=shuffle)

    def __len__(self):
        n = len(self.sampler)
        return n // self.batch_size if self.sampler.shuffle else -(-n // self.batch_size)

    def batches(self, epoch: int, skip: int = 0):
        self.sampler.set_epoch(epoch)
        order = np.fromiter(iter(self.sampler), dtype=np.int64)
        n_batches = len(self)
        if self.data.views is None:
            yield from self._decoded_batches(order, n_batches, skip)
            return
        for b in range(skip, n_batches):
            idx = np.sort(order[b * self.batch_size:(b + 1) * self.batch_size])  # sorted: faster gather
            yield ([torch.from_numpy(v[idx]) for v in self.data.views], torch.from_numpy(self.data.ages[idx]),
                   torch.from_numpy(self.data.genders[idx]))

    def _decoded_batches(self, order, n_batches, skip):
        subset = order[skip * self.batch_size: n_batches * self.batch_size]
        loader = DataLoader(CropDataset(self.data.records, self.specs), batch_size=self.batch_size,
                            sampler=subset.tolist(), num_workers=self.workers, persistent_workers=False,
                            collate_fn=_collate_readable)
        for batch in loader:
            if batch is None:
                continue
            views, idx = batch
            idx = idx.numpy()
            yield views, torch.from_numpy(self.data.ages[idx]), torch.from_numpy(self.data.genders[idx])
