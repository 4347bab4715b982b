"""Explanations that need the network itself (torch, a training checkpoint): Grad-CAM, feature maps of chosen
layers, and the channels that respond most to each age band.

Grad-CAM (Selvaraju et al. 2017) with the expected age of the predicted distribution as the output: the
gradients of the age with respect to a layer's activations, averaged over space, weight its channels; the
weighted sum is the map. Unlike a class score, an age can be moved either way, so the map keeps the
magnitude |sum_k alpha_k A_k| (regions whose features push the estimate up or down), scaled to [0, 1] per
face; `grad_cam(..., signed=True)` gives the signed sum instead (positive: pushes the age up).

Default layer: the last one (in forward order) whose output is still a spatial map at least MIN_SIDE cells
wide (dlib's ResNet at 150 px: backbone.layers.9, 8x8), since the last blocks of small-input networks are
2x2 or 1x1 and say little about where.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from agekit.crop import view_specs
from agekit.engine.checkpoint import load_model
from agekit.errors import AgekitError

MIN_SIDE = 7


def load_checkpoint(path):
    """(model in eval mode, its crop specs) of a training checkpoint, through agekit.engine's loader (the
    restricted unpickler)."""
    model, payload = load_model(path)
    return model, view_specs(payload["config"])


def _as_input(crops) -> torch.Tensor:
    """uint8 (N, S, S, 3) -> float (N, 3, S, S) in [0, 1]."""
    x = torch.as_tensor(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div(255.0)
    return x.contiguous()


class _KeepGraph(torch.Tensor):
    """A tensor whose detach() stays on the autograd graph: every method's `decode` starts by detaching its
    input (inference never needs gradients), and Grad-CAM needs the gradient of the decoded mean."""

    def detach(self):
        return self.as_subclass(torch.Tensor)  # as_subclass keeps the autograd history


def expected_age(model, out) -> torch.Tensor:
    """(N,) expected age, differentiable, from a model's forward output: an agekit AgeModel's {'age': ...}
    decoded by its method, or a plain (N,) / (N, 1) tensor (small test models)."""
    if isinstance(out, dict):
        return model.method.decode(out["age"].as_subclass(_KeepGraph)).mean.as_subclass(torch.Tensor)
    return out.reshape(out.shape[0], -1)[:, 0]


def spatial_layers(model, size: int) -> list[tuple[str, tuple]]:
    """(name, output shape (C, h, w)) of every named module whose output is a 4-D map, in forward order, for
    a size x size input."""
    found: list[tuple[str, tuple]] = []
    seen = set()

    def hook(name):
        def record(_module, _inputs, output):
            if torch.is_tensor(output) and output.ndim == 4 and name not in seen:
                seen.add(name)
                found.append((name, tuple(output.shape[1:])))
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    finally:
        for h in handles:
            h.remove()
    return found


def default_layer(model, size: int) -> str:
    """The last spatial layer at least MIN_SIDE cells wide (else the last spatial layer)."""
    layers = spatial_layers(model, size)
    if not layers:
        raise AgekitError("this model has no layer with a spatial output to explain")
    wide = [name for name, shape in layers if min(shape[1:]) >= MIN_SIDE]
    return wide[-1] if wide else layers[-1][0]


def stage_ends(model, size: int) -> list[str]:
    """The last layer at each spatial resolution at least MIN_SIDE wide, in forward order: the ends of the
    network's stages, where its feature maps are worth showing."""
    ends: dict[tuple, str] = {}
    for name, shape in spatial_layers(model, size):
        if min(shape[1:]) >= MIN_SIDE:
            ends[shape[1:]] = name
    return list(ends.values())


def check_layers(model, layers: list[str], size: int) -> None:
    """AgekitError naming the first of `layers` that is not a layer with a spatial output (listing those)."""
    spatial = [n for n, _ in spatial_layers(model, size)]
    for name in layers:
        if name not in spatial:
            examples = stage_ends(model, size) or spatial[-8:]
            raise AgekitError(f"layer '{name}' has no spatial output in this model; such layers are e.g. "
                              f"{', '.join(examples)} ({len(spatial)} in all)")


def _module(model, name: str):
    modules = dict(model.named_modules())
    if name not in modules:
        shallow = [n for n in modules if n and n.count(".") <= 2]
        raise AgekitError(f"layer '{name}' not found in the model; its layers include {', '.join(shallow[-8:])}")
    return modules[name]


def grad_cam(model, crops, layer: str | None = None, signed: bool = False) -> np.ndarray:
    """Grad-CAM maps (N, S, S) float32 of uint8 crops (N, S, S, 3) for the model's expected age: |map|
    scaled to [0, 1] per face (signed=True: the signed map in the layer's units, unscaled)."""
    crops = np.asarray(crops)
    size = crops.shape[1]
    layer = layer or default_layer(model, size)
    store = {}

    def keep(_module, _inputs, output):
        output.retain_grad()
        store["act"] = output

    handle = _module(model, layer).register_forward_hook(keep)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = _as_input(crops)
            age = expected_age(model, model(x))
            model.zero_grad(set_to_none=True)
            age.sum().backward()
    finally:
        handle.remove()
        model.train(was_training)
    act = store["act"]
    weights = act.grad.mean(dim=(2, 3), keepdim=True)
    cam = (weights * act).sum(1, keepdim=True).detach()
    cam = F.interpolate(cam, size=(size, size), mode="bilinear", align_corners=False)[:, 0].numpy()
    if signed:
        return cam.astype(np.float32)
    cam = np.abs(cam)
    top = cam.reshape(len(cam), -1).max(1).reshape(-1, 1, 1)
    return (cam / np.where(top > 0, top, 1.0)).astype(np.float32)


def feature_maps(model, crops, layers: list[str]) -> dict[str, np.ndarray]:
    """{layer: (N, C, h, w) float32 activations} of uint8 crops (N, S, S, 3) at each named layer."""
    store = {}
    handles = []
    for name in layers:
        handles.append(_module(model, name).register_forward_hook(
            lambda _m, _i, out, n=name: store.__setitem__(n, out.detach().float().numpy())))
    try:
        with torch.no_grad():
            model(_as_input(crops))
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in layers if n not in store or store[n].ndim != 4]
    if missing:
        raise AgekitError(f"layer(s) {', '.join(missing)} have no spatial output to show")
    return {n: store[n] for n in layers}


def band_channels(model, crops_by_band: dict, layer: str, top: int = 4, batch: int = 32) -> dict:
    """Channels of `layer` that respond most to each age band, relative to all bands.

    crops_by_band: {band: uint8 (N, S, S, 3)}. Each channel's response to a face is its mean activation;
    per band, a channel's selectivity is (mean response in the band - mean over all faces) / the std over
    all faces. Returns {band: {'channels': [top channel ids], 'selectivity': [...], 'mean_maps': (top, h, w)
    mean activation maps over the band's faces}} (aggregates only: no single face)."""
    per_band = {}
    for band, crops in crops_by_band.items():
        maps = [feature_maps(model, crops[i:i + batch], [layer])[layer] for i in range(0, len(crops), batch)]
        per_band[band] = np.concatenate(maps) if maps else np.zeros((0,))
    responses = np.concatenate([m.mean(axis=(2, 3)) for m in per_band.values() if len(m)])
    mu, sd = responses.mean(0), responses.std(0) + 1e-8
    out = {}
    for band, maps in per_band.items():
        if not len(maps):
            continue
        score = (maps.mean(axis=(2, 3)).mean(0) - mu) / sd
        order = np.argsort(-score)[:top]
        out[band] = {"channels": order.tolist(), "selectivity": score[order].round(3).tolist(),
                     "mean_maps": maps[:, order].mean(0), "n": len(maps)}
    return out
