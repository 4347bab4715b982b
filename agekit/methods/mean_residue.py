"""Adaptive mean-residue loss (Zhao, Qian, Hou and Zeng, ICME 2022).

What is implemented, and why. The paper's abstract defines the residue loss as "the entropy of age
probability out of dynamic top-K in the distribution". The authors' code (github.com/jacobzhaoziyuan/
AMR-Loss, residue_loss_adaptive_K.py, MeanResidueLossAdaptive) makes "dynamic top-K" precise: for each
sample the top-K set is every class whose probability is at least the ground-truth class's probability
(so the true age is always inside it and K = the rank of the true class), and the residue loss is

    L_res = mean_i sum_{k : p_ik < p_i,y_i} -p_ik log p_ik

over the probabilities *outside* that set, NOT renormalised (an unnormalised -p log p term is minimised
by moving the residue mass into the top-K; the entropy of a renormalised residue would instead reward
concentrating it on one wrong age). The mask is a constant for the gradient. Total:

    L = CE + lambda1 * mean_i (E[a]_i - y_i)^2 / 2 + lambda2 * L_res

with lambda1 = 0.2, lambda2 = 0.05 (their FG-NET script), CE on the rounded age.
Differences from their code: we use the exact p log p (0 at p = 0, computed from log-softmax) instead of
(p + 1e-3) log(p + 1e-3), which adds a constant floor of about 0.0069 per residue class; we round the age
to its class (their code truncates) and subtract age_min (their code assumes age_min = 0).
Their repository also carries a fixed-K variant (the top-K set = the K most probable classes); it is
available here as `top_k=K` (default None = adaptive).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from agekit.errors import AgekitError
from agekit.methods.base import register_method, SoftmaxAgeMethod


def residue_mask(probs: torch.Tensor, target_index: torch.Tensor, top_k: int | None = None) -> torch.Tensor:
    """1.0 for the classes outside the top-K set, else 0.0 (no gradient). probs: (B, K), target_index: (B,).

    Adaptive (top_k None): top-K = {k : p_k >= p_true}. Fixed: the top_k most probable classes.
    """
    probs = probs.detach()
    if top_k is None:
        p_true = probs.gather(1, target_index[:, None])
        return (probs < p_true).to(probs.dtype)
    mask = torch.ones_like(probs)
    mask.scatter_(1, probs.topk(min(top_k, probs.shape[1]), dim=1).indices, 0.0)
    return mask


def mean_residue_loss(logits, ages, label_ages, target_index, lambda1=0.2, lambda2=0.05, top_k=None):
    """Adaptive mean-residue loss (Zhao et al., "Adaptive Mean-Residue Loss for Robust Facial Age
    Estimation", ICME 2022); see the module docstring for the exact definition.

    logits: (B, K), ages: (B,) float, label_ages: (K,), target_index: (B,) int64.
    Returns (loss, ce, mean_loss, residue_loss, average K), the parts unweighted; average K is a float.
    """
    log_p = torch.log_softmax(logits, dim=1)
    probs = log_p.exp()
    ce = F.nll_loss(log_p, target_index)
    mean_loss = ((probs @ label_ages - ages) ** 2).mean() / 2.0
    mask = residue_mask(probs, target_index, top_k)
    residue = -(mask * probs * log_p).sum(1).mean()
    avg_k = float((mask == 0).sum(1).float().mean())
    return ce + lambda1 * mean_loss + lambda2 * residue, ce, mean_loss, residue, avg_k


@register_method
class MeanResidue(SoftmaxAgeMethod):
    """Softmax over integer ages trained with CE + lambda1 * mean loss + lambda2 * residue loss (entropy of
    the probabilities outside a dynamic top-K); decoded by the expectation.
    Params: lambda1 (default 0.2), lambda2 (default 0.05), top_k (None = adaptive K, the paper's method;
    an int = fixed K), step (years between labels, default 1).

    outputs: logits (B, K), K = (age_max - age_min) / step + 1 labels
    (step = 1 year by default: one label per integer age; see SoftmaxAgeMethod).
    """

    name = "mean_residue"
    description = "softmax CE + mean loss + residue loss (entropy outside a dynamic top-K), by expectation"
    paper = "Zhao, Qian, Hou, Zeng, Adaptive Mean-Residue Loss for Robust Facial Age Estimation, ICME 2022"

    def __init__(self, in_features, age_min=0, age_max=100, lambda1: float = 0.2, lambda2: float = 0.05,
                 top_k: int | None = None, step: float = 1.0):
        super().__init__(in_features, age_min, age_max, step)
        if top_k is not None and int(top_k) < 1:
            raise AgekitError(f"mean_residue top_k must be >= 1 (or null for adaptive), got {top_k}")
        self.lambda1, self.lambda2 = float(lambda1), float(lambda2)
        self.top_k = None if top_k is None else int(top_k)

    def loss(self, outputs, ages):
        ages = self.clamp_ages(ages)
        total, ce, mean_loss, residue, avg_k = mean_residue_loss(
            outputs.float(), ages, self.label_ages, self.label_index(ages),
            self.lambda1, self.lambda2, self.top_k)
        return total, {"ce": float(ce.detach()), "mean": float(mean_loss.detach()),
                       "residue": float(residue.detach()), "k": avg_k}
