"""Age as classification over the integer ages: DEX (Rothe, Timofte and Van Gool, IJCV 2018)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from agekit.errors import AgekitError
from agekit.methods.base import AgeDistribution, register_method, SoftmaxAgeMethod


def age_class_index(ages: torch.Tensor, age_min: int, age_max: int) -> torch.Tensor:
    """Class index of each age: round to the nearest integer (halves to even, torch.round), clamp to
    age_min..age_max, shift by age_min.

    ages: (B,) float; returns (B,) int64 in 0..K-1.
    """
    return ages.round().clamp(age_min, age_max).long() - age_min


def dex_loss(logits: torch.Tensor, target_index: torch.Tensor) -> torch.Tensor:
    """DEX training loss: softmax cross-entropy over the K age classes, mean over the batch
    (Rothe et al., "Deep expectation of real and apparent age from a single image without facial
    landmarks", IJCV 2018). logits: (B, K), target_index: (B,) int64. Returns a scalar."""
    return F.cross_entropy(logits, target_index)


DEX_DECODERS = ("expectation", "argmax")


@register_method
class DEX(SoftmaxAgeMethod):
    """DEX: one softmax class per integer age (per label: `step` years apart, default 1), cross-entropy on
    the class of the rounded (clamped) age.

    outputs: logits (B, K), K = (age_max - age_min) / step + 1 labels
    (step = 1 year by default: one label per integer age; see SoftmaxAgeMethod).
    Params: decode = "expectation" (default, the paper's DEX: mean = sum_k p_k * age_k) or "argmax"
    (mean = the most probable age; probs are still the softmax and std is the softmax's std about its
    own expectation); step (years between labels, default 1).
    """

    name = "dex"
    description = "classification over integer ages (softmax cross-entropy), decoded by expectation"
    paper = "Rothe, Timofte, Van Gool, Deep Expectation of Real and Apparent Age from a Single Image " \
            "without Facial Landmarks, IJCV 2018"

    def __init__(self, in_features, age_min=0, age_max=100, decode: str = "expectation", step: float = 1.0):
        super().__init__(in_features, age_min, age_max, step)
        if decode not in DEX_DECODERS:
            raise AgekitError(f"dex decode '{decode}' unknown; choose from {', '.join(DEX_DECODERS)}")
        self.decode_rule = decode

    def loss(self, outputs, ages):
        value = dex_loss(outputs.float(), self.label_index(ages.float()))
        return value, {"ce": float(value.detach())}

    def decode(self, outputs) -> AgeDistribution:
        dist = super().decode(outputs)
        if self.decode_rule == "argmax":
            top = torch.softmax(outputs.detach().float(), dim=1).argmax(1)  # on the label grid
            dist = AgeDistribution(dist.probs, self.label_ages[top], dist.std)
        return dist
