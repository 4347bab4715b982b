"""Reading .pt files safely: torch's restricted unpickler (`weights_only=True`) plus an allow-list of numpy's
scalar and array constructors (ALLOWED_NUMPY). Tensors, numbers, strings, None, dicts, lists and tuples of
them, and numpy scalars and arrays load; a file naming any other Python object (a pickle that would run code)
is refused before anything in it is built. Used for checkpoints (agekit.engine.checkpoint) and backbone
weights files (agekit.models.registry).
"""
from __future__ import annotations

import contextlib
import pickle
import re

import numpy as np
import torch

from agekit.errors import AgekitError


def _numpy_globals() -> list:
    """numpy's pickle constructors for scalars and arrays, under numpy 2's and numpy 1's module names (a
    checkpoint pickled with numpy 1 names numpy.core.multiarray.*)."""
    core = getattr(np, "_core", None) or np.core
    scalar, reconstruct = core.multiarray.scalar, core.multiarray._reconstruct
    out = [np.ndarray, np.dtype, scalar, reconstruct]
    if torch.__version__ >= (2, 6):  # (object, "the name a file uses") entries: torch 2.6+
        for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
            if mod != scalar.__module__:
                out += [(scalar, f"{mod}.scalar"), (reconstruct, f"{mod}._reconstruct")]
    # dtype classes (numpy.dtypes.Float64DType, ...), which some numpy versions pickle by name
    out += sorted({type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDGUS"}, key=lambda t: t.__name__)
    return out


ALLOWED_NUMPY = _numpy_globals()
_FOREIGN = re.compile(r"\bGLOBAL ([\w.]+)")  # torch's words for a refused global, in its several messages
_WEIGHTS_ERROR = re.compile(r"WeightsUnpickler error:\s*([^\n]+)")


@contextlib.contextmanager
def _allowed_numpy():
    safe = getattr(torch.serialization, "safe_globals", None)
    if safe is None:  # torch 2.4: no context manager; the process-wide list then
        torch.serialization.add_safe_globals(ALLOWED_NUMPY)
        yield
    else:
        with safe(ALLOWED_NUMPY):
            yield


def load_restricted(path, what: str = "checkpoint"):
    """torch.load with the restricted unpickler and the numpy allow-list. A file that names any other Python
    object (a pickle that would run code) raises AgekitError, one line naming the file and the object; any
    other unreadable file: AgekitError 'not a readable {what}'."""
    try:
        with _allowed_numpy():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        found = _FOREIGN.search(text)
        if found or "Unsupported global" in text:
            name = found.group(1) if found else "a Python object"
            raise AgekitError(f"{path}: refused to load this {what}: it names {name}, which is neither weights nor "
                              "plain data, and unpickling it could run code (load only files you trust)") from None
        detail = _WEIGHTS_ERROR.search(text)
        reason = detail.group(1).strip() if detail else type(exc).__name__
        raise AgekitError(f"{path}: not a readable {what} ({reason})") from None
    except Exception as exc:  # torch raises many types for a bad file
        raise AgekitError(f"{path}: not a readable {what} ({type(exc).__name__})") from None
