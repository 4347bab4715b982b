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

import os
from pathlib import Path

import numpy as np
import torch

from agekit import __version__
from agekit.detect.base import DEFAULT_DETECTOR
from agekit.errors import AgekitError
from agekit.io import atomic_path
from agekit.models.restricted_load import load_restricted

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

        return DEFAULT_DETECTOR
    return str(name)


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
