"""Two CPU processes under torchrun (gloo): identical weights on both ranks, same outputs as one process."""
import csv
import json
import os
import subprocess
import sys

import pytest

from support.datasets import synthetic_dataset


@pytest.mark.slow
def test_two_process_ddp_matches_single_process_format(tmp_path):
    manifest = synthetic_dataset(tmp_path / "data", n=96)
    common = ["model.backbone=light_cnn64", "data.crop.size=32", "data.dataset=csv", f"data.root={manifest}",
              "data.split.kind=random", "train.batch_size=16", "train.max_steps=6", "train.epochs=2",
              "train.precision=fp32", "train.tensorboard=false", "train.num_threads=1", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "agekit", "train", *common, f"run_dir={tmp_path / 'ddp'}"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run([sys.executable, "-m", "agekit", "train", *common, f"run_dir={tmp_path / 'one'}"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]

    s_ddp = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    s_one = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert s_ddp["world_size"] == 2 and s_one["world_size"] == 1
    checks = s_ddp["rank_weight_checksums"]
    assert len(checks) == 2 and checks[0] == checks[1]  # both ranks end with identical weights
    assert s_ddp.keys() == s_one.keys() and s_ddp["steps"] == s_one["steps"] == 6
    assert s_ddp["n_train"] == s_one["n_train"]
    rows_ddp = list(csv.DictReader((tmp_path / "ddp" / "metrics.csv").open()))
    rows_one = list(csv.DictReader((tmp_path / "one" / "metrics.csv").open()))
    assert rows_ddp[0].keys() == rows_one[0].keys()
    assert [r["split"] for r in rows_ddp] == [r["split"] for r in rows_one]
    # only rank 0 writes: one summary line on stdout, one checkpoint set
    assert ddp.stdout.count('"run_dir"') == 1
    assert sorted(p.name for p in (tmp_path / "ddp").glob("*.pt")) == ["best.pt", "last.pt"]
