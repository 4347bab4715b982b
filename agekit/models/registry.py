"""Backbone registry: every feature extractor is one name away (in the style of timm's model registry).

A backbone maps a normalised image batch (B, 3, H, W) to pooled features (B, F) and carries
`num_features` (F) and `default_input_size`. Factories register themselves with `@register_backbone`;
names of the form "timm:<model>" create any timm model without registration.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from agekit.errors import AgekitError
from agekit.models.pooling import POOL_MODES
from agekit.registry import Registry

TIMM_PREFIX = "timm:"
# Every registered backbone downsamples by at most 32, so 32 px leaves at least a 1x1 feature map.
MIN_INPUT_SIZE = 32
# Keys under which training scripts commonly nest the state_dict in a checkpoint file.
_NESTING_KEYS = ("state_dict", "model")
# How many offending keys a mismatch message names before it abbreviates.
_KEYS_SHOWN = 3


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    factory: Callable[..., nn.Module]
    default_input_size: int
    description: str
    paper: str
    downloadable: bool


# name -> BackboneSpec (agekit.registry); the factories register themselves when agekit.models is imported
BACKBONES = Registry("backbone")


def register_backbone(name: str, default_input_size: int = 224, description: str = "", paper: str = "",
                      downloadable: bool = False):
    """Decorator registering `factory(*, in_size, pool, **kwargs) -> nn.Module` under `name`.

    downloadable: the factory also accepts `pretrained=True` and fetches hub weights itself.
    """
    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name.startswith(TIMM_PREFIX):
            raise ValueError(f"backbone names may not start with {TIMM_PREFIX!r}")
        BACKBONES.register(name, BackboneSpec(name, factory, default_input_size, description, paper, downloadable))
        return factory
    return decorator


def list_backbones() -> list[str]:
    """Registered backbone names, sorted ("timm:<model>" names are accepted too but not listed)."""
    return BACKBONES.names()


def _spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise AgekitError(f"unknown backbone {name!r}; known: {', '.join(list_backbones())}, "
                          f"or {TIMM_PREFIX}<any timm model name>")
    return BACKBONES.get(name)


def backbone_info(name: str) -> dict:
    """Description, paper, default input size and hub availability of a backbone."""
    if name.startswith(TIMM_PREFIX):
        from agekit.models.timm_backbones import (
            timm_model_info,  # late: that module imports this one
        )
        return timm_model_info(name[len(TIMM_PREFIX):])
    spec = _spec(name)
    return {"name": spec.name, "description": spec.description, "paper": spec.paper,
            "default_input_size": spec.default_input_size, "downloadable": spec.downloadable}


def create_backbone(name: str, *, in_size: int = 64, pretrained: str | os.PathLike | bool | None = False,
                    pool: str = "avg", **kwargs) -> nn.Module:
    """Build backbone `name`: forward (B, 3, H, W) float (normalised) -> (B, num_features).

    in_size: the input size the model will see (fixed-size transformers are built for it; >= 32).
    pretrained: False (or None) = random init; True = download the hub weights (timm backbones only);
        a path = load a local .pth/.pt/.safetensors state_dict with strict key checking.
    pool: "avg", "max" or "avgmax" (DLDL-v2 hybrid pooling, CNN backbones only).
    kwargs go to the factory (for timm backbones: to timm.create_model).
    Classifier heads are never built. Raises AgekitError for unknown names, bad options or bad weights.
    """
    if pool not in POOL_MODES:
        raise AgekitError(f"unknown pool {pool!r}; expected one of {', '.join(POOL_MODES)}")
    if isinstance(in_size, bool) or not isinstance(in_size, int) or in_size < MIN_INPUT_SIZE:
        raise AgekitError(f"in_size must be an integer >= {MIN_INPUT_SIZE}, got {in_size!r}")
    if pretrained is None:  # an empty `pretrained:` entry in a YAML config
        pretrained = False
    if not isinstance(pretrained, (bool, str, os.PathLike)):
        raise AgekitError(f"pretrained must be True, False or a weights file path, got {pretrained!r}")
    download = pretrained is True
    if name.startswith(TIMM_PREFIX):
        from agekit.models.timm_backbones import (
            create_timm_backbone,  # late: that module imports this one
        )
        model = create_timm_backbone(name[len(TIMM_PREFIX):], in_size=in_size, pool=pool,
                                     pretrained=download, **kwargs)
    else:
        spec = _spec(name)
        if download and not spec.downloadable:
            raise AgekitError(f"backbone {name!r} has no downloadable weights: "
                              f"pass a local weights file with pretrained=PATH")
        if download:
            kwargs["pretrained"] = True
        model = spec.factory(in_size=in_size, pool=pool, **kwargs)
        model.default_input_size = spec.default_input_size
    if not isinstance(pretrained, bool):
        load_weights(model, pretrained, name)
    return model


def load_weights(model: nn.Module, path: str | os.PathLike, name: str = "backbone") -> None:
    """Load a local state_dict file into `model` with strict checking; any problem is one AgekitError line.

    Accepts .safetensors or torch pickles (.pth/.pt), the state_dict possibly nested under 'state_dict' or
    'model' and possibly with DataParallel's 'module.' prefix. Keys of a classifier head that the backbone
    dropped (timm checkpoints keep theirs) are ignored.
    """
    path = Path(path)
    state = _read_state_dict(path)
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    head_prefixes = tuple(f"{c}." for c in ([classifier] if isinstance(classifier, str) else classifier))
    expected = model.state_dict()
    state = {k: v for k, v in state.items() if k in expected or not k.startswith(head_prefixes)}

    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                if k in state and state[k].shape != v.shape]
    problems = [f"{label} {_abbreviate(keys)}" for label, keys in
                (("missing keys:", missing), ("unexpected keys:", unexpected),
                 ("shape mismatch (file vs model):", reshaped)) if keys]
    if problems:
        raise AgekitError(f"{path}: weights do not fit backbone {name!r} (another architecture or input size?): "
                          + "; ".join(problems))
    model.load_state_dict(state, strict=True)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise AgekitError(f"{path}: weights file not found")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
            obj = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises many types for a bad file; all mean "unreadable"
            first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise AgekitError(f"{path}: not a readable weights file ({first_line})") from None
    else:
        from agekit.models.restricted_load import load_restricted

        # torch's restricted unpickler: a file naming any code is refused before it runs
        obj = load_restricted(path, "weights file")
    while isinstance(obj, Mapping) and any(isinstance(obj.get(k), Mapping) for k in _NESTING_KEYS):
        obj = next(obj[k] for k in _NESTING_KEYS if isinstance(obj.get(k), Mapping))
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise AgekitError(f"{path}: no state_dict of tensors found in the file")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def _abbreviate(keys: list[str]) -> str:
    shown = ", ".join(keys[:_KEYS_SHOWN])
    return shown + (f" (+{len(keys) - _KEYS_SHOWN} more)" if len(keys) > _KEYS_SHOWN else "")
