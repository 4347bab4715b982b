"""AgeModel = normalisation + backbone + method head (+ optional gender head)."""
from __future__ import annotations

import torch
from torch import nn

from agekit.methods import create_method


class AgeModel(nn.Module):
    """Takes RGB float images (B, 3, S, S) in [0, 1]; returns {'age': method outputs, 'gender': (B, 2) logits}.

    Normalisation lives inside the model so an exported model needs only the crop.
    """

    def __init__(self, backbone: nn.Module, method: nn.Module, mean, std, gender: bool = False):
        super().__init__()
        self.backbone, self.method = backbone, method
        self.register_buffer("pixel_mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.gender_head = nn.Linear(backbone.num_features, 2) if gender else None

    def forward(self, x: torch.Tensor) -> dict:
        features = self.backbone((x - self.pixel_mean) / self.pixel_std)
        out = {"age": self.method(features)}
        if self.gender_head is not None:
            out["gender"] = self.gender_head(features).float()
        return out


def build_model(cfg: dict, pretrained=None) -> AgeModel:
    """Build the model a config describes. `pretrained` overrides cfg.model.pretrained (inference: False)."""
    from agekit.models import create_backbone

    m, d = cfg["model"], cfg["data"]
    backbone = create_backbone(m["backbone"], in_size=d["crop"]["size"], pool=m["pool"],
                               pretrained=m["pretrained"] if pretrained is None else pretrained)
    method = create_method(cfg["method"]["name"], backbone.num_features, d["age_min"], d["age_max"],
                           **cfg["method"]["params"])
    return AgeModel(backbone, method, m["mean"], m["std"], gender=cfg["gender"]["enabled"])
