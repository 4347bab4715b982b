"""agekit's own small CNNs: DLDL-v2's ThinAgeNet / TinyAgeNet and light age & gender CNNs.

All are plain VGG-style stacks (Simonyan & Zisserman, ICLR 2015): blocks of 3x3 conv-BN-ReLU with a 2x2
max-pool between blocks and global pooling at the end, so they are fully convolutional and accept any input
of at least 2**(blocks - 1) pixels (every one of them takes in_size >= 32; in_size does not change the
layout). Shapes: (B, 3, H, W) -> last block (B, C, H / 2**(blocks-1), W / 2**(blocks-1)) -> (B, C).

Parameter counts below are measured (BN included, conv biases dropped because BN follows each conv);
they do not depend on the input size.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from agekit.models.pooling import GlobalPool
from agekit.models.registry import register_backbone

_DLDL_V2 = ("Gao, Zhou, Wu & Geng, Age Estimation Using Expectation of Label Distribution Learning, "
            "IJCAI 2018 (DLDL-v2)")
_LIGHT = "agekit baseline (no single source paper); plain VGG-style conv-BN-ReLU stack"
# VGG16's convolutional layout: filters per block and 3x3 convs per block.
_VGG16_WIDTHS = (64, 128, 256, 512, 512)
_VGG16_CONVS = (2, 2, 3, 3, 3)


class PlainCNN(nn.Module):
    """VGG-style feature extractor: (B, 3, H, W) -> (B, widths[-1]).

    Block i has convs[i] 3x3 conv-BN-ReLU layers with widths[i] filters; a 2x2 max-pool separates blocks
    (none after the last, whose map goes straight to global pooling: "avg", "max" or "avgmax").
    """

    def __init__(self, widths: Sequence[int], convs: Sequence[int], pool: str = "avg"):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for block, (width, n_convs) in enumerate(zip(widths, convs, strict=True)):
            if block:
                layers.append(nn.MaxPool2d(2))
            for _ in range(n_convs):
                layers += [nn.Conv2d(in_ch, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                           nn.ReLU(inplace=True)]
                in_ch = width
        self.features = nn.Sequential(*layers)
        self.pool = GlobalPool(pool)
        self.num_features = in_ch
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He init suits ReLU stacks trained from scratch (PyTorch's default is scaled for leaky ReLU).
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x))


@register_backbone("thinagenet", default_input_size=224, paper=_DLDL_V2,
                   description="ThinAgeNet: VGG16 conv layout at half width (32-64-128-256-256) + BN, "
                               "hybrid pooling recommended (pool='avgmax'); 3.68M params (paper: 3.7M)")
def thinagenet(*, in_size: int, pool: str = "avg") -> PlainCNN:
    """DLDL-v2 ThinAgeNet: VGG16's 13 convs (2, 2, 3, 3, 3 per block) with half the filters, BN after each
    conv, VGG16's fully connected layers replaced by global pooling (the paper's hybrid pooling is
    pool="avgmax"). Output (B, 256). Measured 3,682,272 parameters; the paper reports 3.7M. At 224 the last
    map is 14x14, as VGG16's conv5_3. in_size does not change the layout."""
    return PlainCNN([w // 2 for w in _VGG16_WIDTHS], _VGG16_CONVS, pool)


@register_backbone("tinyagenet", default_input_size=224, paper=_DLDL_V2,
                   description="TinyAgeNet: VGG16 conv layout at quarter width (16-32-64-128-128) + BN, "
                               "hybrid pooling recommended (pool='avgmax'); 0.92M params (paper: 0.9M)")
def tinyagenet(*, in_size: int, pool: str = "avg") -> PlainCNN:
    """DLDL-v2 TinyAgeNet: as ThinAgeNet with a quarter of VGG16's filters. Output (B, 128). Measured
    921,840 parameters; the paper reports 0.9M (3.8 MB on disk). in_size does not change the layout."""
    return PlainCNN([w // 4 for w in _VGG16_WIDTHS], _VGG16_CONVS, pool)


@register_backbone("light_cnn64", default_input_size=64, paper=_LIGHT,
                   description="light CNN for 64x64 faces: 4 blocks of one conv (32-64-128-256); 0.39M params")
def light_cnn64(*, in_size: int, pool: str = "avg") -> PlainCNN:
    """Base light CNN for 64x64 input: conv3x3-BN-ReLU with 32, 64, 128, 256 filters, max-pool between.
    64x64 -> 8x8x256 -> (B, 256). Measured 388,896 parameters. in_size does not change the layout."""
    return PlainCNN((32, 64, 128, 256), (1, 1, 1, 1), pool)


@register_backbone("light_cnn64_deep", default_input_size=64, paper=_LIGHT,
                   description="deeper light CNN for 64x64 faces: 5 blocks of two convs "
                               "(32-64-96-128-256); 1.35M params")
def light_cnn64_deep(*, in_size: int, pool: str = "avg") -> PlainCNN:
    """Deep light CNN for 64x64 input: 5 blocks of two conv3x3-BN-ReLU with 32, 64, 96, 128, 256 filters,
    max-pool between. 64x64 -> 4x4x256 -> (B, 256). Measured 1,348,704 parameters. in_size does not
    change the layout."""
    return PlainCNN((32, 64, 96, 128, 256), (2, 2, 2, 2, 2), pool)


@register_backbone("light_cnn160", default_input_size=160, paper=_LIGHT,
                   description="light CNN for 160x160 faces: 5 blocks of one conv (32-64-128-256-256); "
                               "0.98M params")
def light_cnn160(*, in_size: int, pool: str = "avg") -> PlainCNN:
    """Base light CNN for 160x160 input: as light_cnn64 plus a fifth 256-filter block for the larger input.
    160x160 -> 10x10x256 -> (B, 256). Measured 979,232 parameters. in_size does not change the layout."""
    return PlainCNN((32, 64, 128, 256, 256), (1, 1, 1, 1, 1), pool)


@register_backbone("light_cnn160_deep", default_input_size=160, paper=_LIGHT,
                   description="deeper light CNN for 160x160 faces: 6 blocks of two convs "
                               "(32-64-96-128-160-256); 1.84M params")
def light_cnn160_deep(*, in_size: int, pool: str = "avg") -> PlainCNN:
    """Deep light CNN for 160x160 input: 6 blocks of two conv3x3-BN-ReLU with 32, 64, 96, 128, 160, 256
    filters, max-pool between. 160x160 -> 5x5x256 -> (B, 256); 32x32 -> 1x1. Measured 1,837,792 parameters.
    in_size does not change the layout."""
    return PlainCNN((32, 64, 96, 128, 160, 256), (2, 2, 2, 2, 2, 2), pool)
