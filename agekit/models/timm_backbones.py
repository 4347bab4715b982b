"""timm backbones: registered ImageNet architectures plus the "timm:<model>" escape hatch.

Models are built with `timm.create_model(..., num_classes=0)`, so the classifier is dropped and the model
returns pooled features (B, F). Pooling is timm's own head pooling: for CNNs `global_pool="avgmax"` is
exactly DLDL-v2's hybrid pooling 0.5 * (avg + max), and keeping timm's head means layers that sit after the
pooling (MobileNetV3's 1x1 conv head, ConvNeXt's head norm) keep their place and their pretrained weights,
and state_dict keys stay timm's, so a checkpoint fetched from the hub by hand loads with pretrained=PATH.

Fixed-input-size models (ViT, Swin, ...) are built for `in_size` (timm's `img_size`) and pool their tokens
their own way (ViT: class token, Swin: token average); they accept only pool="avg".

timm is imported lazily: listing backbones and the small networks work without it.
"""
from __future__ import annotations

from torch import nn

from agekit.errors import AgekitError
from agekit.models.registry import register_backbone

_RESNET = "He et al., Deep Residual Learning for Image Recognition, CVPR 2016"
_MOBILENETV3 = "Howard et al., Searching for MobileNetV3, ICCV 2019"
_CONVNEXT = "Liu et al., A ConvNet for the 2020s, CVPR 2022"

# agekit name -> (timm name, description, paper)
TIMM_BACKBONES = {
    "resnet18": ("resnet18", "ResNet-18", _RESNET),
    "resnet34": ("resnet34", "ResNet-34", _RESNET),
    "resnet50": ("resnet50", "ResNet-50 (bottleneck blocks)", _RESNET),
    "mobilenetv3_small": ("mobilenetv3_small_100", "MobileNetV3-Small, width 1.0", _MOBILENETV3),
    "mobilenetv3_large": ("mobilenetv3_large_100", "MobileNetV3-Large, width 1.0", _MOBILENETV3),
    "efficientnet_b0": ("efficientnet_b0", "EfficientNet-B0",
                        "Tan & Le, EfficientNet: Rethinking Model Scaling for CNNs, ICML 2019"),
    "convnext_atto": ("convnext_atto", "ConvNeXt-Atto (timm's smallest ConvNeXt)", _CONVNEXT),
    "convnext_tiny": ("convnext_tiny", "ConvNeXt-Tiny", _CONVNEXT),
    "swin_tiny": ("swin_tiny_patch4_window7_224", "Swin-T, patch 4, window 7; built for in_size",
                  "Liu et al., Swin Transformer: Hierarchical Vision Transformer using Shifted Windows, ICCV 2021"),
    "vit_tiny": ("vit_tiny_patch16_224",
                 "ViT-Ti/16; built for in_size (a size not divisible by 16 loses its last partial patch)",
                 "Dosovitskiy et al., An Image is Worth 16x16 Words, ICLR 2021"),
}


def _import_timm():
    try:
        import timm
    except ImportError:
        raise AgekitError("timm is not installed: pip install 'agekit[train]'") from None
    return timm


def create_timm_backbone(timm_name: str, *, in_size: int, pool: str, pretrained: bool = False,
                         **kwargs) -> nn.Module:
    """timm model `timm_name` without classifier: (B, 3, H, W) -> (B, num_features).

    Sets `num_features` to the pooled output width (timm's `head_hidden_size`, which differs from timm's
    own `num_features` when a conv head follows the pooling, e.g. MobileNetV3: 576 -> 1024) and
    `default_input_size` from timm's pretrained config.
    """
    timm = _import_timm()
    if not timm.is_model(timm_name):
        raise AgekitError(f"unknown timm model {timm_name!r} (see timm.list_models())")
    cfg = timm.models.get_pretrained_cfg(timm_name)
    if cfg is not None and cfg.fixed_input_size:
        if pool != "avg":
            raise AgekitError(f"pool={pool} needs a CNN backbone: {timm_name} is a fixed-size transformer "
                              f"that pools its own tokens; use pool=avg")
        kwargs.setdefault("img_size", in_size)
    elif pool != "avg":
        kwargs["global_pool"] = pool
    try:
        model = timm.create_model(timm_name, pretrained=pretrained, num_classes=0, **kwargs)
    except OSError as exc:
        # Offline, huggingface_hub raises LocalEntryNotFoundError and torch.hub URLError: both OSErrors.
        raise AgekitError(f"could not download pretrained weights for {timm_name} ({type(exc).__name__}); "
                          f"no internet: pass a local weights file with pretrained=PATH") from None
    except (TypeError, ValueError, AssertionError) as exc:
        # Options the model does not support (img_size on a CNN, an unknown pool type, a bad size).
        raise AgekitError(f"timm model {timm_name} rejected its options {kwargs}: {exc}") from None
    # Overwrites timm's pre-head width on MobileNetV3-like models; only timm's reset_classifier reads it,
    # and agekit never re-adds a classifier to a backbone.
    model.num_features = getattr(model, "head_hidden_size", model.num_features)
    model.default_input_size = model.pretrained_cfg.get("input_size", (3, 224, 224))[-1]
    return model


def timm_model_info(timm_name: str) -> dict:
    """backbone_info() for "timm:<model>" names, read from timm's pretrained config."""
    timm = _import_timm()
    if not timm.is_model(timm_name):
        raise AgekitError(f"unknown timm model {timm_name!r} (see timm.list_models())")
    cfg = timm.models.get_pretrained_cfg(timm_name)
    return {"name": f"timm:{timm_name}", "description": f"timm model {timm_name}",
            "paper": str(cfg.paper_name or cfg.paper_ids or "") if cfg is not None else "",
            "default_input_size": cfg.input_size[-1] if cfg is not None else 224,
            "downloadable": bool(cfg is not None and cfg.has_weights)}


def _register(name: str, timm_name: str, description: str, paper: str) -> None:
    @register_backbone(name, default_input_size=224, description=f"{description} (timm {timm_name})",
                       paper=paper, downloadable=True)
    def factory(*, in_size: int, pool: str, pretrained: bool = False, **kwargs) -> nn.Module:
        return create_timm_backbone(timm_name, in_size=in_size, pool=pool, pretrained=pretrained, **kwargs)


for _name, (_timm_name, _description, _paper) in TIMM_BACKBONES.items():
    _register(_name, _timm_name, _description, _paper)
