"""The runtime needs onnxruntime, OpenCV and numpy only: nothing on the predict path imports torch. The model
is the committed tests/data/tiny-age.onnx (fixture `tiny`)."""
import subprocess
import sys

import pytest

pytestmark = pytest.mark.torchfree

NO_TORCH = """
import sys
import agekit.runtime
from agekit import AgeEstimator, FaceResult
import agekit.runtime.annotate, agekit.runtime.calibration, agekit.runtime.cli, agekit.runtime.inputs
import agekit.runtime.quantize
from agekit.cli import build_parser
build_parser()
assert AgeEstimator is agekit.runtime.AgeEstimator
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not loaded, loaded
print("ok")
"""

PREDICT = """
import sys
from agekit.cli import main
code = main(["predict", sys.argv[1], "--no-detect", "--model", sys.argv[2], "--output", "json"])
assert code == 0, code
assert "torch" not in sys.modules, "predict imported torch"
"""


def test_importing_the_runtime_does_not_import_torch():
    proc = subprocess.run([sys.executable, "-c", NO_TORCH], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_predict_runs_without_torch(tiny, tmp_path):
    import numpy as np
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 50, 3), dtype=np.uint8)).save(tmp_path / "f.png")
    proc = subprocess.run([sys.executable, "-c", PREDICT, str(tmp_path / "f.png"), str(tiny["onnx"])],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert '"age"' in proc.stdout
