"""Started with this folder on PYTHONPATH, every Python process behaves as if torch (and the rest of the
`train` extra) were not installed: see tests/support/torchless.py."""
import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_agekit_torchless", Path(__file__).resolve().parent.parent / "torchless.py")
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
_module.block()
