"""Fixtures for the whole suite: data folders, the tiny model, UTKFace chips for composed scenes.

Marker `torchfree`: the test runs on a predict-only install (no torch, timm or onnx). Such a user runs them with

    pip install -e . pytest && python -m pytest -m torchfree

A test module whose imports need the `train` extra is skipped there, not an error (see pytest_pycollect_makemodule);
tests/test_runtime_torchfree.py runs them with torch blocked on every normal run.
"""
import os
from pathlib import Path

import pytest
from support.models import copy_tiny_model, train_tiny
from support.scenes import chip_paths
from support.torchless import is_train_only

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AGEKIT_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Tests never read or fill the user's ~/.cache/agekit."""
    old = os.environ.get("AGEKIT_CACHE")
    os.environ["AGEKIT_CACHE"] = str(tmp_path_factory.mktemp("agekit-cache"))
    yield
    if old is None:
        os.environ.pop("AGEKIT_CACHE", None)
    else:
        os.environ["AGEKIT_CACHE"] = old


@pytest.fixture(scope="session")
def utkface_root() -> Path:
    path = SHARED / "UTKFace"
    if not path.is_dir():
        pytest.skip(f"UTKFace not found at {path} (set AGEKIT_DATA or put ../shared/data beside the repo)")
    return path


@pytest.fixture(scope="session")
def fgnet_root() -> Path:
    path = SHARED / "FGNET"
    if not path.is_dir():
        pytest.skip(f"FG-NET not found at {path} (set AGEKIT_DATA or put ../shared/data beside the repo)")
    return path


@pytest.fixture
def torch_one_thread(monkeypatch):
    """Torch (and OpenMP children) on one thread: the small numeric tests are faster and deterministic so."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch = pytest.importorskip("torch")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def pytest_configure(config):
    config.addinivalue_line("markers", "torchfree: runs on a predict-only install, without torch "
                                       "(python -m pytest -m torchfree)")


class TrainExtraModule(pytest.Module):
    """A test module that cannot be imported because the `train` extra is missing is skipped, not an error:
    collection on a predict-only install works (pytest.importorskip, done for every module)."""

    def _getobj(self):
        try:
            return super()._getobj()
        except self.CollectError as exc:
            cause = exc.__cause__
            if isinstance(cause, ModuleNotFoundError) and is_train_only(cause.name):
                pytest.skip(f"{self.path.name} needs {cause.name} (pip install 'agekit[train]')",
                            allow_module_level=True)
            raise


def pytest_pycollect_makemodule(module_path, parent):
    if module_path.name != "__init__.py":
        return TrainExtraModule.from_parent(parent, path=module_path)
    return None


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict:
    """{"onnx": path}: the committed tiny model (tests/data/tiny-age.onnx, light_cnn64, 32 px align crops,
    gender head, calibrated), copied to a session folder. No torch needed."""
    return copy_tiny_model(tmp_path_factory.getbasetemp() / "tiny-committed")


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory) -> dict:
    """The same tiny run trained here (torch): {"checkpoint", "onnx", "manifest"}; run/ holds best.pt and last.pt.
    For tests of training and export; runtime tests use `tiny`."""
    pytest.importorskip("torch")
    return train_tiny(tmp_path_factory.getbasetemp() / "tiny-trained")


@pytest.fixture(scope="session")
def chips(utkface_root) -> list:
    """Four 200x200 UTKFace chips (adults 25-40) as RGB arrays, to paste into scenes (support.scenes)."""
    from agekit.io import load_image

    paths = chip_paths(utkface_root)
    if len(paths) < 4:
        pytest.skip(f"too few UTKFace chips in {utkface_root}")
    return [load_image(p) for p in paths]
