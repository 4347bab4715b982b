"""Remake tests/data/tiny-age.onnx, the model of the torch-free runtime tests (needs torch):

    python tests/data/make_tiny_model.py

It trains light_cnn64 for 2 steps on a synthetic dataset (brightness encodes the age; no real faces) and
exports it with `agekit export`'s own code, so the file carries the metadata the runtime reads (crop spec,
age range, gender head, split-conformal calibration). Remake it when the export format changes;
tests/test_runtime_export.py says when the committed file no longer matches a fresh export."""
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parents[1])]  # tests/ for `support`, the repo for agekit

from support.models import TINY_ONNX, train_tiny


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = train_tiny(Path(tmp))
        shutil.copyfile(paths["onnx"], TINY_ONNX)
    print(f"wrote {TINY_ONNX} ({TINY_ONNX.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
