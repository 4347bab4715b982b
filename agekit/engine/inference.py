"""Batched prediction over cached crops, shared by validation, `agekit eval` and benchmarks."""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from agekit.engine.checkpoint import unwrap


def to_input(batch_uint8, device, channels_last: bool = True):
    """(B, S, S, 3) uint8 numpy/tensor -> (B, 3, S, S) float in [0, 1] on device; a list of views -> a list."""
    if isinstance(batch_uint8, (list, tuple)):
        return [to_input(view, device, channels_last) for view in batch_uint8]
    x = torch.as_tensor(batch_uint8).to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def autocast_context(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device.type, dtype=torch.float16)
    return contextlib.nullcontext()


@torch.inference_mode()
def predict_images(model, images, *, batch_size=256, device="cpu", precision="fp32",
                   channels_last=True, keep_probs=False) -> dict:
    """Predict ages (and gender) for uint8 crops (N, S, S, 3), or a list of such arrays, one per view of a
    multi-input model. Returns numpy arrays:
    'age' (N,), 'std' (N,), optionally 'probs' (N, K), and 'gender_prob' (N,) = P(female) when the
    model has a gender head."""
    device = torch.device(device)
    net = unwrap(model)
    was_training = net.training
    net.eval()
    views = list(images) if isinstance(images, (list, tuple)) else [images]
    ages, stds, probs, female = [], [], [], []
    for start in range(0, len(views[0]), batch_size):
        x = to_input([v[start:start + batch_size] for v in views], device, channels_last)
        with autocast_context(device, precision):
            out = net(x)
        dist = net.method.decode(out["age"])
        ages.append(dist.mean.float().cpu())
        stds.append(dist.std.float().cpu())
        if keep_probs:
            probs.append(dist.probs.float().cpu())
        if "gender" in out:
            female.append(torch.softmax(out["gender"].float(), 1)[:, 1].cpu())
    net.train(was_training)
    cat = lambda xs: torch.cat(xs).numpy() if xs else None  # noqa: E731
    result = {"age": cat(ages) if ages else np.zeros(0), "std": cat(stds) if stds else np.zeros(0)}
    if keep_probs:
        result["probs"] = cat(probs)
    if female:
        result["gender_prob"] = cat(female)
    return result
