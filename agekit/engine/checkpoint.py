"""Checkpoints carry everything inference needs: the resolved config (method, label range, backbone,
input size, normalisation, crop rule), the weights, and for resuming the optimiser/scheduler/RNG state."""
from __future__ import annotations

from pathlib import Path

import torch

from agekit import __version__
from agekit.errors import AgekitError
from agekit.io import atomic_path

FORMAT = "agekit-checkpoint-v1"


def unwrap(model):
    return model.module if hasattr(model, "module") else model


def save_checkpoint(path, model, cfg: dict, *, state: dict | None = None, metrics: dict | None = None) -> None:
    payload = {
        "format": FORMAT,
        "agekit_version": __version__,
        "config": cfg,
        "model": unwrap(model).state_dict(),
        "metrics": metrics or {},
        "inference": inference_spec(cfg),
        "state": state or {},
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


def read_checkpoint(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise AgekitError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a bad file
        raise AgekitError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise AgekitError(f"{path}: not an agekit checkpoint")
    return payload


def load_model(path, device="cpu"):
    """Rebuild the model from a checkpoint. Returns (model in eval mode, payload)."""
    from agekit.engine.model import build_model

    payload = read_checkpoint(path)
    model = build_model(payload["config"], pretrained=False)
    model.load_state_dict(payload["model"])
    return model.to(device).eval(), payload
