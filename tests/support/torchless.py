"""The torch-free run: what a predict-only install (`pip install agekit`, no `[train]` extra) lacks, and the
import blocker that makes this machine look like one (tests/support/torchless_site/sitecustomize.py installs it
in every Python process started with that folder on PYTHONPATH)."""
from __future__ import annotations

import sys
from pathlib import Path

# Top-level modules of the `train` extra that the predict path must never need.
TRAIN_ONLY = frozenset({"torch", "torchvision", "timm", "tensorboard", "onnx"})
SITE_DIR = Path(__file__).resolve().parent / "torchless_site"  # holds sitecustomize.py


def is_train_only(name: str | None) -> bool:
    return bool(name) and name.partition(".")[0] in TRAIN_ONLY


class TrainOnlyBlocker:
    """First on sys.meta_path: importing a train-only module fails as if it were not installed."""

    def find_spec(self, name, path=None, target=None):
        if is_train_only(name):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: torch-free test run)", name=name)


def block() -> None:
    if not any(isinstance(f, TrainOnlyBlocker) for f in sys.meta_path):
        sys.meta_path.insert(0, TrainOnlyBlocker())
