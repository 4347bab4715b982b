"""Checkpoints carry everything inference needs: the resolved config (method, label range, backbone,
input size, normalisation, crop rule), the weights, and for resuming the optimiser/scheduler/RNG state.

A checkpoint is a pickle, and unpickling can run any code the file names. agekit therefore reads every .pt
file with torch's restricted unpickler (`weights_only=True`): tensors (weights, optimiser moments, the RNG
states, which are ByteTensors), numbers, strings, None, and dicts, lists and tuples of them, plus numpy
scalars and arrays (ALLOWED_NUMPY). That covers all `save_checkpoint` writes and wrote in earlier versions
(it now also turns numpy values and paths into plain numbers, lists and text, so its files need no
allow-list at all); a file naming anything else is refused with one line naming the file and the first
foreign object, before anything in it is built.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import re
from pathlib import Path

import numpy as np
import torch

from agekit import __version__
from agekit.errors import AgekitError
from agekit.io import atomic_path

FORMAT = "agekit-checkpoint-v1"


def unwrap(model):
    return model.module if hasattr(model, "module") else model


def plain(obj):
    """obj with numpy scalars turned into Python numbers, numpy arrays into lists, paths into strings and
    tuples kept, recursively through dicts/lists/tuples; tensors and other values unchanged. What it returns
    loads with `weights_only=True` and no allow-list."""
    if isinstance(obj, dict):
        return {plain(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj) if type(obj) in (list, tuple) else [plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def save_checkpoint(path, model, cfg: dict, *, state: dict | None = None, metrics: dict | None = None) -> None:
    payload = {
        "format": FORMAT,
        "agekit_version": __version__,
        "config": plain(cfg),
        "model": unwrap(model).state_dict(),
        "metrics": plain(metrics or {}),
        "inference": plain(inference_spec(cfg)),
        "state": plain(state or {}),
    }
    with atomic_path(path, suffix=".tmp") as tmp:
        torch.save(payload, tmp)


def inference_spec(cfg: dict) -> dict:
    """The facts a predictor needs, spelled out (also readable without rebuilding the config)."""
    return {
        "method": cfg["method"]["name"],
        "method_params": cfg["method"]["params"],
        "age_min": cfg["data"]["age_min"],
        "age_max": cfg["data"]["age_max"],
        "backbone": cfg["model"]["backbone"],
        "crop": cfg["data"]["crop"],
        "input_size": cfg["data"]["crop"]["size"],
        "views": [cfg["data"]["crop"]] + [{**cfg["data"]["crop"], **v} for v in cfg["data"]["extra_views"]],
        "mean": cfg["model"]["mean"],
        "std": cfg["model"]["std"],
        "gender": cfg["gender"]["enabled"],
        # "detect": training crops were aligned on this detector's landmarks, as prediction does
        "landmarks": cfg["data"].get("landmarks", "dataset"),
        "detector": _detector_name(cfg["data"].get("detector", "default")),
        "input": "RGB float in [0, 1], NCHW; normalisation is inside the model",
    }


def _detector_name(name) -> str:
    if name in (None, "", "default"):
        from agekit.detect.base import DEFAULT_DETECTOR

        return DEFAULT_DETECTOR
    return str(name)


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


def read_checkpoint(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise AgekitError(f"checkpoint not found: {path}")
    payload = load_restricted(path)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise AgekitError(f"{path}: not an agekit checkpoint")
    return payload


def load_model(path, device="cpu"):
    """Rebuild the model from a checkpoint. Returns (model in eval mode, payload)."""
    from agekit.models.age_model import build_model

    payload = read_checkpoint(path)
    model = build_model(payload["config"], pretrained=False)
    model.load_state_dict(payload["model"])
    return model.to(device).eval(), payload
