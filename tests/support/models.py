"""The tiny age model of the runtime tests. tests/data/tiny-age.onnx is committed, so the ONNX tests need
no torch; tests/data/make_tiny_model.py remakes it with `train_tiny` (the same run the export tests train)."""
from __future__ import annotations

import shutil
from pathlib import Path

from support.datasets import synthetic_dataset

TINY_ONNX = Path(__file__).resolve().parents[1] / "data" / "tiny-age.onnx"

# light_cnn64 for 2 steps on the synthetic dataset: align rule, 32 px crops, gender head; exported with
# split-conformal calibration on its 30% validation split (14 faces)
TINY_RUN = ["model.backbone=light_cnn64", "data.crop.size=32", "data.crop.rule=align", "data.crop.margin=0.4",
            "gender.enabled=true", "train.progress=false", "train.tensorboard=false", "train.precision=fp32",
            "train.num_threads=1", "train.batch_size=8", "train.max_steps=2", "train.scheduler=none",
            "data.dataset=csv", "data.split.kind=random", "data.split.val_fraction=0.3",
            "data.split.test_fraction=0.1"]


def copy_tiny_model(folder: Path) -> dict:
    """The committed model copied into `folder` (tests may write beside it, never into tests/data)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    onnx = folder / "tiny.onnx"
    if not onnx.is_file():
        shutil.copyfile(TINY_ONNX, onnx)
    return {"onnx": onnx}


def train_tiny(base: Path) -> dict:
    """Train the tiny run and export it (needs torch); built once under `base`, then reused.
    Returns the paths of its best checkpoint (best.pt, beside it last.pt), ONNX model and training manifest."""
    base = Path(base)
    paths = {"checkpoint": base / "run" / "best.pt", "onnx": base / "tiny.onnx",
             "manifest": base / "data" / "labels.csv"}
    if paths["onnx"].is_file():
        return paths
    from agekit.config import load_config
    from agekit.engine.export import export_checkpoint
    from agekit.engine.trainer import train

    manifest = synthetic_dataset(base / "data")
    train(load_config(None, TINY_RUN + [f"data.root={manifest}", f"run_dir={base / 'run'}"]), progress=False)
    export_checkpoint(paths["checkpoint"], paths["onnx"], calibrate_on="val", progress=False)
    return paths
