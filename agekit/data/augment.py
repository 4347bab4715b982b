"""Training augmentation in one place, shared by all methods, applied to whole batches.

Works on float images (B, 3, H, W) in [0, 1]. Every random draw comes from the caller's torch.Generator,
so a seed fixes the output exactly.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentSpec:
    flip: float = 0.5  # probability of a horizontal flip
    rotate: float = 10.0  # degrees, uniform in [-rotate, rotate]
    scale: float = 0.1  # zoom factor uniform in [1 - scale, 1 + scale]
    shift: float = 0.05  # translation, fraction of the side, uniform in [-shift, shift] per axis
    brightness: float = 0.3  # a ~ U[-brightness, brightness]
    contrast: float = 0.2  # b ~ U[-contrast, contrast]

    def to_dict(self) -> dict:
        return asdict(self)


def _uniform(n: int, bound: float, gen: torch.Generator, device) -> torch.Tensor:
    return (torch.rand(n, generator=gen, device=device) * 2.0 - 1.0) * bound


def geometric(x: torch.Tensor, spec: AugmentSpec, gen: torch.Generator) -> torch.Tensor:
    """Random flip, rotation, scale and shift as one affine warp per image (reflection at the borders)."""
    n = x.shape[0]
    angle = _uniform(n, math.radians(spec.rotate), gen, x.device)
    zoom = 1.0 + _uniform(n, spec.scale, gen, x.device)
    tx = _uniform(n, 2.0 * spec.shift, gen, x.device)  # grid coordinates span [-1, 1] = 2 units per side
    ty = _uniform(n, 2.0 * spec.shift, gen, x.device)
    flip = torch.where(torch.rand(n, generator=gen, device=x.device) < spec.flip, -1.0, 1.0)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1
    ).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def brightness_contrast(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The founding documents' photometric jitter, per image.

    brightness: y = (x - mean) * (1 + a) + mean, mean = the image's mean intensity (formula as specified);
    contrast:   y = (y - 0.5) * (1 + b) + 0.5, stretching around mid-grey, so it also moves the mean.
    a, b: (B,). Output clamped to [0, 1].
    """
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    y = (x - mean) * (1.0 + a.view(-1, 1, 1, 1)) + mean
    y = (y - 0.5) * (1.0 + b.view(-1, 1, 1, 1)) + 0.5
    return y.clamp_(0.0, 1.0)


def augment_batch(x: torch.Tensor, spec: AugmentSpec, gen: torch.Generator) -> torch.Tensor:
    """Geometric then photometric augmentation of a float batch (B, 3, H, W) in [0, 1]."""
    x = geometric(x, spec, gen)
    a = _uniform(x.shape[0], spec.brightness, gen, x.device)
    b = _uniform(x.shape[0], spec.contrast, gen, x.device)
    return brightness_contrast(x, a, b)
