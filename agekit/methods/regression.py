"""Direct regression of age from features (the founding UTKFace study's "Regression"; metric regression
as the baseline of Niu et al., "Ordinal Regression with Multiple Output CNN for Age Estimation", CVPR 2016)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from agekit.errors import AgekitError
from agekit.methods.base import AgeDistribution, Method, distribution_from_point, register_method

REGRESSION_LOSSES = {
    "l1": lambda pred, target: F.l1_loss(pred, target),
    "l2": lambda pred, target: F.mse_loss(pred, target),
    "smooth_l1": lambda pred, target: F.smooth_l1_loss(pred, target, beta=1.0),
}


@register_method
class Regression(Method):
    """One linear output, scaled to the label range; L1 loss by default (`loss` = l1 | l2 | smooth_l1).

    outputs: (B,) predicted age in years. The head predicts in units of half the label range around its
    centre, which keeps the initial outputs and gradients well scaled.
    """

    name = "regression"
    description = "direct age regression, L1/L2/smooth-L1 loss"
    paper = "baseline; e.g. Niu et al., CVPR 2016 (metric regression)"

    def __init__(self, in_features, age_min=0, age_max=100, loss: str = "l1"):
        super().__init__(in_features, age_min, age_max)
        if loss not in REGRESSION_LOSSES:
            raise AgekitError(f"regression loss '{loss}' unknown; choose from {', '.join(REGRESSION_LOSSES)}")
        self.loss_name = loss
        self.fc = nn.Linear(in_features, 1)
        self.center = (self.age_min + self.age_max) / 2.0
        self.half_range = (self.age_max - self.age_min) / 2.0

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.center + self.half_range * self.fc(features).squeeze(1).float()

    def loss(self, outputs: torch.Tensor, ages: torch.Tensor):
        value = REGRESSION_LOSSES[self.loss_name](outputs, self.clamp_ages(ages))
        return value, {self.loss_name: float(value.detach())}

    def decode(self, outputs: torch.Tensor) -> AgeDistribution:
        return distribution_from_point(outputs.detach(), self.ages)
