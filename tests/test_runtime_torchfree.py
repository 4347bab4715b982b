"""The predict path works on a predict-only install: the tests marked `torchfree` pass with torch, torchvision,
timm, tensorboard and onnx unimportable (tests/support/torchless.py blocks them in every process).

A predict-only user runs the same tests with

    pip install -e . pytest && python -m pytest -m torchfree

Modules that need the `train` extra are skipped at collection there (tests/conftest.py). This test runs that
command here, in a subprocess whose imports of those packages fail, so every normal run checks it.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

from support.torchless import SITE_DIR

ROOT = Path(__file__).resolve().parents[1]
# the slowest torchfree tests (memory, signals, permissions: not about imports) are left to the normal run here,
# to keep this one under a minute on 2 cores
HEAVY = ["test_predict_safety.py::test_memory_stays_flat_over_a_batch",
         "test_predict_safety.py::test_ctrl_c_and_sigterm_write_what_is_done",
         "test_predict_safety.py::test_permission_denied_is_said_so",
         "test_predict_safety.py::test_a_huge_legal_image_costs_bounded_memory"]


def test_torchfree_tests_pass_with_torch_blocked(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SITE_DIR), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "torchfree", "-p", "no:cacheprovider",
                           "--basetemp", str(tmp_path / "basetemp"), "-rs", str(ROOT / "tests"),
                           *(arg for name in HEAVY for arg in ("--deselect", f"tests/{name}"))],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    summary = out.strip().splitlines()[-1]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert passed >= 60 and "error" not in summary, summary
    # the blocker was in force: modules that import torch were skipped at collection, not run
    assert re.search(r"SKIPPED .*test_runtime_export\.py needs torch\b", out), out[-3000:]
