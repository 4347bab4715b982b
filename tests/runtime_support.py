"""Shared by the tests/test_runtime_*.py files: one tiny trained model, exported once per session."""
from __future__ import annotations

import zlib
from pathlib import Path

from tests_support import synthetic_dataset

TINY_RUN = ["model.backbone=light_cnn64", "data.crop.size=32", "data.crop.rule=align", "data.crop.margin=0.4",
            "gender.enabled=true", "train.progress=false", "train.tensorboard=false", "train.precision=fp32",
            "train.num_threads=1", "train.batch_size=8", "train.max_steps=2", "train.scheduler=none",
            "data.dataset=csv", "data.split.kind=random", "data.split.val_fraction=0.3",
            "data.split.test_fraction=0.1"]


def tiny_model(base: Path) -> dict:
    """Train light_cnn64 for 2 steps on the synthetic dataset (align rule, 32 px, gender head) and export it
    with split-conformal calibration on its validation split. Built once under `base`, then reused."""
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


def png_claiming_size(path: Path, width: int, height: int, bit_depth: int = 8, colour_type: int = 2) -> Path:
    """A PNG whose header declares width x height pixels with almost no data: a decompression bomb's
    signature (agekit refuses it from the header, before decoding). Default 8-bit RGB; bit_depth=1,
    colour_type=0 is a 1-bit grayscale one (1 byte a pixel once decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([bit_depth, colour_type, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path
