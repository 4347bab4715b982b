"""Backbones: `create_backbone(name)` builds any registered feature extractor (B, 3, H, W) -> (B, F).

Importing this package registers agekit's small networks and the timm architectures; timm itself is only
imported when a timm backbone is created.
"""
from agekit.models import dlib_resnet, small, timm_backbones  # noqa: F401  (imported to register backbones)
from agekit.models.pooling import POOL_MODES, GlobalPool
from agekit.models.registry import (
    backbone_info,
    create_backbone,
    list_backbones,
    load_weights,
    register_backbone,
)

__all__ = ["POOL_MODES", "GlobalPool", "backbone_info", "create_backbone", "list_backbones", "load_weights",
           "register_backbone"]
