"""Global pooling of CNN feature maps: (B, C, H, W) -> (B, C).

"avgmax" is the hybrid pooling of DLDL-v2 (Gao et al., "Age Estimation Using Expectation of Label
Distribution Learning", IJCAI 2018): the mean of global average pooling and global max pooling, which keeps
the peaks of strong, localised responses (wrinkles, eye corners) that averaging alone smooths away.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

POOL_MODES = ("avg", "max", "avgmax")


class GlobalPool(nn.Module):
    """Pool each channel over all positions: (B, C, H, W) -> (B, C); the channel count is unchanged.

    mode: "avg" (global average), "max" (global max) or "avgmax" (0.5 * (avg + max), DLDL-v2 hybrid pooling).
    """

    def __init__(self, mode: str = "avg"):
        super().__init__()
        if mode not in POOL_MODES:
            raise ValueError(f"unknown pool mode {mode!r}, expected one of {', '.join(POOL_MODES)}")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "avg":
            return F.adaptive_avg_pool2d(x, 1).flatten(1)
        if self.mode == "max":
            return F.adaptive_max_pool2d(x, 1).flatten(1)
        return 0.5 * (F.adaptive_avg_pool2d(x, 1) + F.adaptive_max_pool2d(x, 1)).flatten(1)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
