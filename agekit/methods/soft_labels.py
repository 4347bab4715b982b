"""Triangular soft labels with focal and/or KL loss plus L1 on the expectation (the light age & gender study).

Soft label (our definition, stated exactly): for true age y and half-width g (years), the weight of integer
age a is w_a = max(0, (g - |a - y|) / g), i.e. 1 at a = y, falling linearly to 0 AT |a - y| = g; the
weights are normalised to sum to 1 over age_min..age_max. For g = 3 and y = 10: ages 8..12 get
1/3, 2/3, 1, 2/3, 1/3 (ages 7 and 13 get 0), which normalise by 3 to 1/9, 2/9, 3/9, 2/9, 1/9.
Non-integer ages work the same way (y = 10.5, g = 1: ages 10 and 11 get 1/2 each). g must exceed 0.5 so
at least one integer age has positive weight. With a label step other than 1 (`step`, see SoftmaxAgeMethod)
the same weights are taken at the labels a = age_min + j * step, and g must exceed step / 2.
"""
from __future__ import annotations

import torch

from agekit.errors import AgekitError
from agekit.methods.base import register_method, SoftmaxAgeMethod
from agekit.methods.dldl import kl_to_target


def triangular_label_distribution(ages: torch.Tensor, label_ages: torch.Tensor, g: float) -> torch.Tensor:
    """Triangular soft labels max(0, (g - |a - y|) / g), normalised over the label ages.

    ages: (B,) true ages (inside the label range); label_ages: (K,); returns (B, K).
    """
    weights = ((g - (label_ages[None, :] - ages[:, None]).abs()) / g).clamp_min(0)
    return weights / weights.sum(1, keepdim=True)


def soft_focal_loss(log_probs: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss for soft targets, mean over the batch: -sum_k t_k (1 - p_k)^gamma log p_k
    (focal loss: Lin et al., ICCV 2017, with the one-hot target replaced by the soft label).

    log_probs, target: (B, K). Returns a scalar.
    """
    probs = log_probs.exp()
    return -(target * (1 - probs).pow(gamma) * log_probs).sum(1).mean()


CLASS_LOSSES = ("focal", "kl", "focal+kl")


def soft_label_loss(logits, ages, label_ages, g=3.0, class_loss="focal", gamma=2.0, w_reg=1.0, w_class=1.0):
    """L = w_reg * mean_i |E_p[a]_i - y_i| + w_class * L_class, L_class = focal, KL(t || p), or their sum,
    with t the triangular soft label of half-width g.

    logits: (B, K), ages: (B,), label_ages: (K,). Returns (loss, l1, focal or None, kl or None).
    """
    log_p = torch.log_softmax(logits, dim=1)
    target = triangular_label_distribution(ages, label_ages, g)
    l1 = (log_p.exp() @ label_ages - ages).abs().mean()
    focal = soft_focal_loss(log_p, target, gamma) if "focal" in class_loss else None
    kl = kl_to_target(log_p, target) if "kl" in class_loss else None
    class_value = sum(v for v in (focal, kl) if v is not None)
    return w_reg * l1 + w_class * class_value, l1, focal, kl


@register_method
class SoftLabels(SoftmaxAgeMethod):
    """Softmax over integer ages trained with triangular soft labels (module docstring) under a focal and/or
    KL loss, plus an L1 loss on the expectation; decoded by the expectation.

    outputs: logits (B, K), K = (age_max - age_min) / step + 1 labels
    (step = 1 year by default: one label per integer age; see SoftmaxAgeMethod).
    Params: g (half-width in years, default 3), class_loss ("focal" default | "kl" | "focal+kl"),
    gamma (focal exponent, default 2), w_reg (L1 weight, default 1), w_class (class-loss weight, default 1),
    step (years between labels, default 1). With the gender head on, the trainer adds gender.weight * CE:
    L = w_reg * L_reg + w_class * L_class (+ gender.weight * L_gender).
    """

    name = "soft_labels"
    description = "triangular soft labels, focal and/or KL loss + L1 on the expectation"
    paper = "the light age & gender study (triangular soft labels, focal/KL + L1); focal loss: " \
            "Lin et al., Focal Loss for Dense Object Detection, ICCV 2017"

    def __init__(self, in_features, age_min=0, age_max=100, g: float = 3.0, class_loss: str = "focal",
                 gamma: float = 2.0, w_reg: float = 1.0, w_class: float = 1.0, step: float = 1.0):
        super().__init__(in_features, age_min, age_max, step)
        if class_loss not in CLASS_LOSSES:
            raise AgekitError(f"soft_labels class_loss '{class_loss}' unknown; choose from {', '.join(CLASS_LOSSES)}")
        if not float(g) > self.step / 2:
            raise AgekitError(f"soft_labels g must exceed half the label step ({self.step / 2:g} years), got {g}")
        self.g, self.class_loss, self.gamma = float(g), class_loss, float(gamma)
        self.w_reg, self.w_class = float(w_reg), float(w_class)

    def loss(self, outputs, ages):
        total, l1, focal, kl = soft_label_loss(outputs.float(), self.clamp_ages(ages), self.label_ages, self.g,
                                               self.class_loss, self.gamma, self.w_reg, self.w_class)
        parts = {"l1": float(l1.detach())}
        if focal is not None:
            parts["focal"] = float(focal.detach())
        if kl is not None:
            parts["kl"] = float(kl.detach())
        return total, parts
