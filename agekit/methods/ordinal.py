"""Ordinal regression by K-1 binary tasks "is the age above r_k?": OR-CNN (Niu et al., CVPR 2016) and
CORAL (Cao, Mirjalili and Raschka, Pattern Recognition Letters 2020).

With integer ages a_0 < ... < a_{K-1} (a_0 = age_min) the thresholds are r_k = a_{k-1}, k = 1..K-1, and
task k's extended binary label is y_k = 1[y > r_k] for the rounded, clamped age y. The head outputs one
logit z_k per task; P(y > r_k) = sigmoid(z_k).

Decoding (both methods). Point estimate: age_min + sum_k P(y > r_k), the expectation of the age under the
cumulative probabilities (the papers count the tasks with P > 0.5; the sum is its smooth version and equals
the count when the probabilities are 0/1). Distribution over the ages: with P_0 = 1 and P_K = 0,
p_k = P(y > r_k) - P(y > r_{k+1}) for k = 0..K-1 (a telescoping sum that adds up to 1), clipped at 0 and
renormalised. For rank-consistent (non-increasing) P nothing is clipped and the distribution's expectation
is exactly the point estimate; when OR-CNN's tasks disagree the clipped distribution's expectation can
differ from the point estimate (the std is taken about the point estimate).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from agekit.errors import AgekitError
from agekit.methods.base import AgeDistribution, Method, register_method
from agekit.methods.classification import age_class_index


def ordinal_levels(target_index: torch.Tensor, num_tasks: int) -> torch.Tensor:
    """Extended binary labels: levels[i, k] = 1 if target_index[i] > k (i.e. age > r_{k+1}), k = 0..K-2.

    target_index: (B,) int64 in 0..K-1; returns (B, K-1) float.
    """
    ranks = torch.arange(num_tasks, device=target_index.device)
    return (target_index[:, None] > ranks[None, :]).float()


def ordinal_bce_loss(logits: torch.Tensor, levels: torch.Tensor, importance: torch.Tensor | None = None):
    """Weighted binary cross-entropy over the K-1 tasks, summed over tasks and averaged over the batch:

        L = -mean_i sum_k lambda_k [ y_ik log s(z_ik) + (1 - y_ik) log(1 - s(z_ik)) ]

    (CORAL, Cao et al., PRL 2020, eq. 4; OR-CNN, Niu et al., CVPR 2016, with its importance weights
    lambda_k). logits, levels: (B, K-1); importance: (K-1,) or None (all 1). Returns a scalar.
    """
    per_task = F.binary_cross_entropy_with_logits(logits, levels.to(logits.dtype), reduction="none")
    if importance is not None:
        per_task = per_task * importance[None, :]
    return per_task.sum(1).mean()


def cumulative_to_distribution(cum: torch.Tensor, ages: torch.Tensor) -> AgeDistribution:
    """Cumulative probabilities P(y > r_k) (B, K-1) -> AgeDistribution over ages (K,) (see module docstring)."""
    ones = torch.ones_like(cum[:, :1])
    ext = torch.cat([ones, cum, torch.zeros_like(ones)], dim=1)  # (B, K+1): P_0 = 1, ..., P_K = 0
    probs = (ext[:, :-1] - ext[:, 1:]).clamp_min(0)
    probs = probs / probs.sum(1, keepdim=True)  # >= 1 before renormalising: never zero
    mean = float(ages[0]) + cum.sum(1)
    var = (probs * (ages[None, :] - mean[:, None]) ** 2).sum(1)
    return AgeDistribution(probs, mean, var.clamp_min(0).sqrt())


class _OrdinalMethod(Method):
    """Shared loss and decoder; subclasses build the head `logits(features) -> (B, K-1)`."""

    def __init__(self, in_features, age_min=0, age_max=100, importance=None):
        super().__init__(in_features, age_min, age_max)
        self.num_tasks = self.num_ages - 1
        if importance is not None:
            importance = torch.as_tensor(importance, dtype=torch.float32).flatten()
            if importance.numel() != self.num_tasks or bool((importance < 0).any()):
                raise AgekitError(f"{self.name} importance: need {self.num_tasks} non-negative weights "
                                  f"(one per threshold), got {importance.numel()}")
        self.register_buffer("importance", importance, persistent=False)

    def loss(self, outputs, ages):
        index = age_class_index(ages.float(), self.age_min, self.age_max)
        value = ordinal_bce_loss(outputs.float(), ordinal_levels(index, self.num_tasks), self.importance)
        return value, {"bce": float(value.detach())}

    def decode(self, outputs) -> AgeDistribution:
        return cumulative_to_distribution(torch.sigmoid(outputs.detach().float()), self.ages)


@register_method
class CORAL(_OrdinalMethod):
    """CORAL: K-1 binary tasks sharing one weight vector w, each with its own bias b_k: z_k = w.x + b_k.

    Rank consistency (the paper's Theorem 1): at the loss minimum b_1 >= b_2 >= ... >= b_{K-1}, so
    P(y > r_k) = sigmoid(w.x + b_k) never increases with k, whatever w and x. The biases are free
    parameters, as in the paper; they start ordered, at the logits of a uniform prior over the ages,
    b_k = log((K-k)/k) for k = 1..K-1, i.e. P(y > r_k) = (K-k)/K before w has learned anything (our choice:
    the authors' coral-pytorch starts them at (K-k)/(K-1), a span of one logit, which the thresholds then
    have to spread out by gradient steps). Tasks whose binary labels coincide on the training data have
    equal optimal biases, so tiny violations of the order can appear in practice; the decoder clips them.
    outputs: logits (B, K-1). Params: importance (optional list of K-1 task weights; default all 1).
    """

    name = "coral"
    description = "rank-consistent ordinal regression: K-1 binary tasks, shared weights, own biases"
    paper = "Cao, Mirjalili, Raschka, Rank Consistent Ordinal Regression for Neural Networks with " \
            "Application to Age Estimation, Pattern Recognition Letters 2020"

    def __init__(self, in_features, age_min=0, age_max=100, importance=None):
        super().__init__(in_features, age_min, age_max, importance)
        self.fc = nn.Linear(in_features, 1, bias=False)
        k = torch.arange(self.num_tasks, dtype=torch.float32)
        self.bias = nn.Parameter(torch.log((self.num_tasks - k) / (k + 1)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features) + self.bias


@register_method
class ORCNN(_OrdinalMethod):
    """OR-CNN: K-1 independent binary classifiers (own weight vector and bias each): z_k = w_k.x + b_k.

    No rank-consistency guarantee: P(y > r_k) may increase with k; the decoder clips and renormalises.
    outputs: logits (B, K-1). Params: importance (optional list of K-1 task weights; default all 1 —
    the paper's task-importance weights depend on the training data's age counts, so they are left to
    the user).
    """

    name = "or_cnn"
    description = "ordinal regression: K-1 independent binary classifiers (rank-inconsistent baseline)"
    paper = "Niu, Zhou, Wang, Gao, Hua, Ordinal Regression with Multiple Output CNN for Age Estimation, CVPR 2016"

    def __init__(self, in_features, age_min=0, age_max=100, importance=None):
        super().__init__(in_features, age_min, age_max, importance)
        self.fc = nn.Linear(in_features, self.num_tasks)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)
