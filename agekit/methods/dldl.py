"""Label-distribution learning: DLDL (Gao et al., TIP 2017) and DLDL-v2 (Gao et al., IJCAI 2018)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from agekit.methods.base import register_method, SoftmaxAgeMethod


def gaussian_label_distribution(ages: torch.Tensor, label_ages: torch.Tensor, sigma: float) -> torch.Tensor:
    """Discretised Gaussian N(age, sigma^2) over the label ages, normalised to sum to 1.

    ages: (B,) true ages; label_ages: (K,) the label ages (the integer ages, or a grid of another step);
    returns (B, K).
    """
    logits = -((label_ages[None, :] - ages[:, None]) ** 2) / (2.0 * sigma**2)
    return torch.softmax(logits, dim=1)


def kl_to_target(log_probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL(target || p) = sum_k t_k (log t_k - log p_k). Shapes (B, K)."""
    return F.kl_div(log_probs, target, reduction="batchmean")


def dldl_v2_loss(logits, ages, label_ages, sigma=2.0, lam=1.0):
    """DLDL-v2 loss = KL(Gaussian label distribution || softmax) + lam * |E_p[age] - age|.

    logits: (B, K), ages: (B,), label_ages: (K,). Returns (loss, kl, l1), all scalars.
    """
    log_p = torch.log_softmax(logits.float(), dim=1)
    kl = kl_to_target(log_p, gaussian_label_distribution(ages, label_ages, sigma))
    expectation = log_p.exp() @ label_ages
    l1 = (expectation - ages).abs().mean()
    return kl + lam * l1, kl, l1


@register_method
class DLDLv2(SoftmaxAgeMethod):
    """DLDL-v2: softmax over the age labels, trained with KL to a Gaussian label distribution plus an L1
    loss on the expectation; decoded by the expectation. Params: sigma (label std, years), lam (L1 weight),
    step (years between labels, default 1; the paper's "number of discrete labels" ablation).
    The paper's hybrid max+avg pooling of the last feature map is the backbone option `model.pool=avgmax`.

    outputs: logits (B, K), K = (age_max - age_min) / step + 1 labels
    (step = 1 year by default: one label per integer age; see SoftmaxAgeMethod).
    """

    name = "dldl_v2"
    description = "label distribution (Gaussian) KL + lambda * L1 on the expectation"
    paper = "Gao et al., Age Estimation Using Expectation of Label Distribution Learning, IJCAI 2018"

    def __init__(self, in_features, age_min=0, age_max=100, sigma: float = 2.0, lam: float = 1.0,
                 step: float = 1.0):
        super().__init__(in_features, age_min, age_max, step)
        self.sigma, self.lam = float(sigma), float(lam)

    def loss(self, outputs, ages):
        total, kl, l1 = dldl_v2_loss(outputs, self.clamp_ages(ages), self.label_ages, self.sigma,
                                       self.lam)
        return total, {"kl": float(kl.detach()), "l1": float(l1.detach())}


def dldl_loss(logits, ages, label_ages, sigma=2.0):
    """DLDL loss = KL(Gaussian label distribution N(age, sigma^2) over the integer ages || softmax)
    (Gao et al., "Deep Label Distribution Learning with Label Ambiguity", TIP 2017).

    logits: (B, K), ages: (B,), label_ages: (K,). Returns a scalar (mean over the batch).
    """
    log_p = torch.log_softmax(logits, dim=1)
    return kl_to_target(log_p, gaussian_label_distribution(ages, label_ages, sigma))


@register_method
class DLDL(SoftmaxAgeMethod):
    """DLDL: softmax over the age labels trained with KL divergence to a discretised Gaussian label
    distribution N(age, sigma^2); decoded by the expectation. Params: sigma (label std in years, default 2),
    step (years between labels, default 1).

    outputs: logits (B, K), K = (age_max - age_min) / step + 1 labels
    (step = 1 year by default: one label per integer age; see SoftmaxAgeMethod).
    """

    name = "dldl"
    description = "label distribution learning: KL to a Gaussian label distribution, decoded by expectation"
    paper = "Gao et al., Deep Label Distribution Learning with Label Ambiguity, IEEE TIP 2017"

    def __init__(self, in_features, age_min=0, age_max=100, sigma: float = 2.0, step: float = 1.0):
        super().__init__(in_features, age_min, age_max, step)
        self.sigma = float(sigma)

    def loss(self, outputs, ages):
        kl = dldl_loss(outputs.float(), self.clamp_ages(ages), self.label_ages, self.sigma)
        return kl, {"kl": float(kl.detach())}
