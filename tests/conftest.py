import os
from pathlib import Path

import pytest

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
