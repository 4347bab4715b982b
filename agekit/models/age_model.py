"""AgeModel = normalisation + backbone + method head (+ optional gender head)."""
from __future__ import annotations

import torch
from torch import nn

from agekit.crop import view_specs
from agekit.methods import create_method


class AgeModel(nn.Module):
    """Takes RGB float images (B, 3, S, S) in [0, 1] — or, for a multi-input model, a list with one such
    tensor per view — and returns {'age': method outputs, 'gender': (B, 2) logits}.

    Multi-input (the light study's M-CNN; MiVOLO's second view): each view has its own backbone (stem), their
    pooled features are concatenated, and one head reads them. Normalisation lives inside the model so an
    exported model needs only the crops.
    """

    def __init__(self, backbones, method: nn.Module, mean, std, gender: bool = False):
        super().__init__()
        backbones = list(backbones) if isinstance(backbones, (list, tuple)) else [backbones]
        # a single-view model keeps the plain `backbone.` weight names
        self.backbone = backbones[0]
        self.extra_backbones = nn.ModuleList(backbones[1:])
        self.method = method
        self.num_features = sum(b.num_features for b in backbones)
        self.register_buffer("pixel_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.gender_head = nn.Linear(self.num_features, 2) if gender else None

    @property
    def num_views(self) -> int:
        return 1 + len(self.extra_backbones)

    def features(self, x) -> torch.Tensor:
        views = list(x) if isinstance(x, (list, tuple)) else [x]
        if len(views) != self.num_views:
            raise ValueError(f"model takes {self.num_views} input view(s), got {len(views)}")
        nets = [self.backbone, *self.extra_backbones]
        feats = [net((v - self.pixel_mean) / self.pixel_std) for net, v in zip(nets, views)]
        return feats[0] if len(feats) == 1 else torch.cat(feats, dim=1)

    def heads(self, features: torch.Tensor) -> dict:
        """The outputs computed from the pooled features (B, num_features): what `forward` returns."""
        out = {"age": self.method(features)}
        if self.gender_head is not None:
            out["gender"] = self.gender_head(features).float()
        return out

    def forward(self, x) -> dict:
        return self.heads(self.features(x))

    def forward_with_features(self, x) -> tuple[dict, torch.Tensor]:
        """(forward outputs, features (B, num_features)): the embedding personalisation builds on."""
        features = self.features(x)
        return self.heads(features), features


def build_model(cfg: dict, pretrained=None) -> AgeModel:
    """Build the model a config describes. `pretrained` overrides cfg.model.pretrained (inference: False)."""
    from agekit.models import create_backbone

    m, d = cfg["model"], cfg["data"]
    weights = m["pretrained"] if pretrained is None else pretrained
    backbones = [create_backbone(m["backbone"], in_size=spec.size, pool=m["pool"], pretrained=weights)
                 for spec in view_specs(cfg)]
    method = create_method(cfg["method"]["name"], sum(b.num_features for b in backbones), d["age_min"],
                           d["age_max"], **cfg["method"]["params"])
    return AgeModel(backbones, method, m["mean"], m["std"], gender=cfg["gender"]["enabled"])
