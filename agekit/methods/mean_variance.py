"""Mean-variance loss (Pan, Han, Shan and Chen, CVPR 2018)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from agekit.methods.base import register_method, SoftmaxAgeMethod


def softmax_mean_and_variance(probs: torch.Tensor, label_ages: torch.Tensor):
    """Mean m = sum_k p_k a_k and variance v = sum_k p_k (a_k - m)^2 of a distribution over the ages.

    probs: (B, K), label_ages: (K,). Returns (m (B,), v (B,)).
    """
    mean = probs @ label_ages
    var = (probs * (label_ages[None, :] - mean[:, None]) ** 2).sum(1)
    return mean, var


def mean_variance_loss(logits, ages, label_ages, target_index, lambda1=0.2, lambda2=0.05):
    """Mean-variance loss (Pan et al., "Mean-Variance Loss for Deep Age Estimation from a Face", CVPR 2018):

        L = L_softmax + lambda1 * L_mean + lambda2 * L_var
        L_softmax = mean_i CE(logits_i, target_index_i)
        L_mean    = mean_i (m_i - y_i)^2 / 2            (m_i = sum_k p_ik a_k)
        L_var     = mean_i sum_k p_ik (a_k - m_i)^2

    logits: (B, K), ages: (B,) float, label_ages: (K,), target_index: (B,) int64 (the rounded age's
    class). Returns (loss, softmax, mean, variance), all scalars (unweighted parts).
    """
    probs = torch.softmax(logits, dim=1)
    ce = F.cross_entropy(logits, target_index)
    mean, var = softmax_mean_and_variance(probs, label_ages)
    mean_loss = ((mean - ages) ** 2).mean() / 2.0
    var_loss = var.mean()
    return ce + lambda1 * mean_loss + lambda2 * var_loss, ce, mean_loss, var_loss


@register_method
class MeanVariance(SoftmaxAgeMethod):
    """Softmax over integer ages trained with cross-entropy + lambda1 * mean loss + lambda2 * variance loss;
    decoded by the expectation. Params: lambda1 (default 0.2), lambda2 (default 0.05), the paper's values;
    step (years between labels, default 1).

    outputs: logits (B, K), K = (age_max - age_min) / step + 1 labels
    (step = 1 year by default: one label per integer age; see SoftmaxAgeMethod).
    """

    name = "mean_variance"
    description = "softmax CE + lambda1 * (E[a]-y)^2/2 + lambda2 * Var[a], decoded by expectation"
    paper = "Pan, Han, Shan, Chen, Mean-Variance Loss for Deep Age Estimation from a Face, CVPR 2018"

    def __init__(self, in_features, age_min=0, age_max=100, lambda1: float = 0.2, lambda2: float = 0.05,
                 step: float = 1.0):
        super().__init__(in_features, age_min, age_max, step)
        self.lambda1, self.lambda2 = float(lambda1), float(lambda2)

    def loss(self, outputs, ages):
        ages = self.clamp_ages(ages)
        total, ce, mean_loss, var_loss = mean_variance_loss(
            outputs.float(), ages, self.label_ages, self.label_index(ages),
            self.lambda1, self.lambda2)
        return total, {"ce": float(ce.detach()), "mean": float(mean_loss.detach()),
                       "variance": float(var_loss.detach())}
