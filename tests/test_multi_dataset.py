"""Several datasets in one run, repeat-factor oversampling and age/race balancing."""
import numpy as np
import pytest

from agekit.config import load_config
from agekit.data.records import FaceRecord
from agekit.data.splits import hash_unit
from agekit.engine.data import SplitData, balance_repeats, extra_dataset_config, load_splits, repeat_split
from agekit.errors import AgekitError
from support.datasets import make_fgnet, make_utkface


def _records(ages, races=None):
    races = races or [None] * len(ages)
    return [FaceRecord(path=f"/x/{i}.jpg", key=f"{i}.jpg", age=a, dataset="t", race=r)
            for i, (a, r) in enumerate(zip(ages, races))]


def _split(records):
    views = [np.arange(len(records), dtype=np.uint8).reshape(-1, 1, 1, 1).repeat(2, 1)]
    return SplitData(records, views, np.array([r.age for r in records], dtype=np.float32),
                     np.full(len(records), -1))


def test_balance_repeats_by_hand():
    # bands: ages 1 -> 0-2 (4 images), 25 -> 20-29 (2), 65 -> 60-69 (1); median group size 2
    recs = _records([1, 1, 1, 1, 25, 25, 65])
    # power 1: 2/4 -> 1 (never below 1), 2/2 = 1, 2/1 = 2
    assert np.allclose(balance_repeats(recs, 1.0, 3.0), [1, 1, 1, 1, 1, 1, 2])
    assert np.allclose(balance_repeats(recs, 0.5, 3.0)[-1], np.sqrt(2))
    assert np.allclose(balance_repeats(recs, 1.0, 1.5)[-1], 1.5)  # capped
    # race: 3 x race 0, 1 x race 2, unknown left alone; median of (3, 1) = 2 -> race 2 gets 2
    recs = _records([30, 30, 30, 30, 30], [0, 0, 0, 2, None])
    assert np.allclose(balance_repeats(recs, 1.0, 3.0, by=("race",)), [1, 1, 1, 2, 1])
    with pytest.raises(AgekitError, match="unknown group"):
        balance_repeats(recs, 1.0, 3.0, by=("height",))


def test_repeat_split_whole_and_fractional():
    recs = _records([10, 20, 30, 40])
    data = _split(recs)
    twice = repeat_split(data, 2.0, seed=0)
    assert [r.key for r in twice.records] == ["0.jpg", "0.jpg", "1.jpg", "1.jpg", "2.jpg", "2.jpg", "3.jpg", "3.jpg"]
    assert twice.views[0][:, 0, 0, 0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and twice.ages.tolist()[::2] == [10, 20, 30, 40]
    half = repeat_split(data, [1.5, 1.5, 1.5, 1.5], seed=3)
    expected = [1 + (hash_unit(r.key, 3 + 11) < 0.5) for r in recs]
    assert [sum(r.key == k.key for r in half.records) for k in recs] == expected
    assert repeat_split(data, 0.5, seed=0) is data  # below 1 is raised to 1: nothing to do


def test_extra_dataset_config_takes_its_own_reader_and_split():
    cfg = load_config(overrides=["data.extra_datasets=[{dataset: fgnet, split: {kind: lopo, fold: '001'}, repeat: 2}]"])
    sub = extra_dataset_config(cfg, cfg["data"]["extra_datasets"][0], 0)
    assert sub["data"]["dataset"] == "fgnet" and sub["data"]["split"]["kind"] == "lopo"
    assert sub["data"]["extra_datasets"] == [] and sub["data"]["crop"] == cfg["data"]["crop"]
    with pytest.raises(AgekitError, match=r"extra_datasets\[0\]: unknown key"):
        extra_dataset_config(cfg, {"dataset": "fgnet", "weight": 2}, 0)
    with pytest.raises(AgekitError, match="must be a mapping"):
        extra_dataset_config(cfg, "fgnet", 0)


def test_load_splits_joins_train_and_val_of_two_datasets(tmp_path):
    utk, fg = make_utkface(tmp_path), make_fgnet(tmp_path)
    cfg = load_config(overrides=[
        f"data.root={utk}", "data.split.kind=random", "data.split.val_fraction=0.5", "data.split.test_fraction=0.0",
        f"data.extra_datasets=[{{dataset: fgnet, root: '{fg}', split: {{kind: random, val_fraction: 0.0, "
        f"test_fraction: 0.0}}, repeat: 3}}]", "data.crop.size=32", f"data.cache_dir={tmp_path / 'cache'}"])
    alone = load_splits({**cfg, "data": {**cfg["data"], "extra_datasets": []}}, ("train", "val"), progress=False)
    run = tmp_path / "run"
    run.mkdir()
    both = load_splits(cfg, ("train", "val"), run, progress=False)
    fg_keys = [r.key for r in both["train"].records if r.dataset == "fgnet"]
    n_fg = len(set(fg_keys))
    assert n_fg >= 4 and len(fg_keys) == 3 * n_fg  # every FG-NET training image three times
    assert len(both["train"].records) == len(alone["train"].records) + 3 * n_fg
    assert both["train"].views[0].shape[0] == len(both["train"].records) == len(both["train"].ages)
    assert [r.key for r in both["val"].records] == [r.key for r in alone["val"].records]  # FG-NET gave no val
    assert (run / "split.csv").is_file() and (run / "split-fgnet.csv").is_file()


def test_extra_dataset_without_split_gets_a_random_one_and_an_empty_one_is_an_error(tmp_path):
    cfg = load_config(overrides=["data.extra_datasets=[{dataset: fgnet}]"])
    assert extra_dataset_config(cfg, cfg["data"]["extra_datasets"][0], 0)["data"]["split"] == {"kind": "random"}
    utk, fg = make_utkface(tmp_path), make_fgnet(tmp_path)
    cfg = load_config(overrides=[
        f"data.root={utk}", "data.split.kind=random", "data.split.val_fraction=0.5", "data.split.test_fraction=0.0",
        f"data.extra_datasets=[{{dataset: fgnet, root: '{fg}', split: {{kind: random, val_fraction: 0.0, "
        f"test_fraction: 1.0}}}}]", "data.crop.size=32", f"data.cache_dir={tmp_path / 'cache'}"])
    with pytest.raises(AgekitError, match=r"extra_datasets\[0\] \(fgnet\).*leaves no training images"):
        load_splits(cfg, ("train", "val"), progress=False)
