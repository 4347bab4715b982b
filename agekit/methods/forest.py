"""Deep Regression Forests (Shen, Guo, Wang, Zhao, Wang and Yuille, CVPR 2018).

Structure. An FC layer maps the features to `n_units` outputs; each of `n_trees` trees has 2^(depth-1) - 1
split nodes and 2^(depth-1) leaves (depth counts the leaf level, as in the authors' Caffe code: depth 6 ->
31 split nodes, 32 leaves). Each tree's split nodes read a fixed random subset of distinct FC outputs
(the paper's index function phi), d_n(x) = sigmoid(fc(x)[phi_t(n)]); a sample reaches leaf l with
probability mu_l(x) = prod over the path of d_n(x) (left) or 1 - d_n(x) (right). Each leaf holds a Gaussian
N(m_l, s_l^2) over age. Tree t's predictive density is p_t(y|x) = sum_l mu_tl(x) N(y; m_tl, s_tl^2).

Training alternates two steps, as in the paper:
- split nodes (the FC layer and everything below it) learn by gradient descent on the negative
  log-likelihood, averaged over trees and samples: L = -mean_i mean_t log p_t(y_i | x_i);
- leaf Gaussians are not learned by gradient. They are refitted by the variational-bounding fixed point
  (an EM step): responsibilities zeta_il = mu_l(x_i) N(y_i; m_l, s_l^2) / p_t(y_i | x_i), then
  m_l = sum_i zeta_il y_i / sum_i zeta_il and s_l^2 = sum_i zeta_il (y_i - m_l)^2 / sum_i zeta_il,
  iterated `leaf_iters` times (20 in the paper). Each iteration cannot lower the data likelihood.

Where the leaf refits happen here (our choices, documented):
1. `epoch_end(outputs, ages)`: after every training epoch the trainer collects routing probabilities over
   up to `epoch_end_batches` (default 20) training batches (model in eval mode, no augmentation, no
   gradient) and the full fixed point is run on them. The paper uses all training data (its code: the last
   mini-batches of the epoch); the cap bounds the cost of the extra forward passes.
2. Inside `loss`, every `leaf_update_every` steps (default 1; 0 = off) while the module is in training
   mode: one fixed-point step from the current batch, folded into exponential moving averages of the
   sufficient statistics (sum zeta, sum zeta y, sum zeta y^2 per leaf, per sample) with rate
   `leaf_momentum` (online EM). It costs almost nothing (the responsibilities come from the loss's own
   terms) and lets the method learn without a trainer (e.g. the one-batch tests). The epoch-end refit
   replaces these running statistics with its own.
Leaves start with means evenly spread over the label range and std `init_sigma`; leaf variances are
floored at `min_sigma`^2 (integer ages would otherwise let a leaf collapse onto one age, with infinite
likelihood). Leaves that get (almost) no responsibility keep their values. Under DDP each rank refits from
its own data and DDP's buffer broadcast keeps rank 0's leaves.

Decoder: the forest's mixture (1/T) sum_t sum_l mu_tl(x) N(a; m_tl, s_tl^2) evaluated at the integer ages
and normalised -> probs; mean = (1/T) sum_t sum_l mu_tl(x) m_tl (the paper's prediction); std = the
mixture's std, sqrt(sum w (s^2 + m^2) - mean^2).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from agekit.errors import AgekitError
from agekit.methods.base import AgeDistribution, Method, register_method

LOG_2PI = math.log(2 * math.pi)
_MIN_MASS = 1e-12  # leaves with less total responsibility (per sample) keep their Gaussians


def routing_log_probs(split_logits: torch.Tensor) -> torch.Tensor:
    """Log routing probabilities of every leaf. split_logits: (B, T, N) with N = 2^D - 1 split nodes per tree
    in breadth-first order (node n's children are 2n+1 and 2n+2; left = sigmoid, right = 1 - sigmoid).
    Returns (B, T, N + 1): log mu_l(x), leaves left to right; exp sums to 1 over the leaves."""
    b, t, n = split_logits.shape
    log_left, log_right = nn.functional.logsigmoid(split_logits), nn.functional.logsigmoid(-split_logits)
    log_mu = split_logits.new_zeros(b, t, 1)
    start = 0
    while start < n:
        width = log_mu.shape[-1]
        left, right = log_left[..., start:start + width], log_right[..., start:start + width]
        log_mu = torch.stack([log_mu + left, log_mu + right], dim=-1).reshape(b, t, 2 * width)
        start += width
    return log_mu


def leaf_log_joint(log_route, ages, leaf_mean, leaf_var):
    """log mu_l(x_i) + log N(y_i; m_l, s_l^2). log_route: (B, T, L), ages: (B,), leaf_mean/var: (T, L).
    Returns (B, T, L)."""
    diff = ages[:, None, None] - leaf_mean[None]
    log_gauss = -0.5 * (diff * diff / leaf_var[None] + torch.log(leaf_var[None]) + LOG_2PI)
    return log_route + log_gauss


def drf_nll(log_route, ages, leaf_mean, leaf_var):
    """Deep Regression Forest loss (Shen et al., CVPR 2018, eq. 6, averaged over trees):
    -mean_i mean_t log sum_l mu_tl(x_i) N(y_i; m_tl, s_tl^2).

    log_route: (B, T, L) log routing probabilities, ages: (B,), leaf_mean/var: (T, L).
    Returns (nll scalar, joint (B, T, L) = the log terms, reused for the responsibilities).
    """
    joint = leaf_log_joint(log_route, ages, leaf_mean, leaf_var)
    return -torch.logsumexp(joint, dim=-1).mean(), joint


def leaf_statistics(joint: torch.Tensor, ages: torch.Tensor):
    """Responsibility-weighted sufficient statistics per leaf, averaged over the samples:
    zeta = softmax over leaves of the joint log terms; returns (s0, s1, s2) = mean_i (zeta, zeta y, zeta y^2),
    each (T, L). joint: (B, T, L), ages: (B,)."""
    zeta = torch.softmax(joint, dim=-1)
    y = ages[:, None, None]
    return zeta.mean(0), (zeta * y).mean(0), (zeta * y * y).mean(0)


def gaussians_from_statistics(s0, s1, s2, old_mean, old_var, min_var):
    """Leaf means m = s1 / s0 and variances s2 / s0 - m^2 (floored at min_var); leaves with s0 < 1e-12 keep
    old_mean / old_var. All (T, L)."""
    live = s0 > _MIN_MASS
    safe = torch.where(live, s0, torch.ones_like(s0))
    mean = torch.where(live, s1 / safe, old_mean)
    var = torch.where(live, s2 / safe - mean * mean, old_var).clamp_min(min_var)
    return mean, var


def leaf_fixed_point(log_route, ages, leaf_mean, leaf_var, iters=20, min_var=0.25):
    """The paper's variational-bounding update of the leaf Gaussians (Shen et al., CVPR 2018, eqs. 12-13),
    iterated `iters` times over a fixed set of samples (routing held fixed).

    log_route: (N, T, L), ages: (N,), leaf_mean/var: (T, L). Returns (mean, var, (s0, s1, s2)) where the
    statistics are those of the last iteration's responsibilities (per sample), each (T, L).
    """
    stats = None
    for _ in range(max(1, int(iters))):
        zeta = torch.softmax(leaf_log_joint(log_route, ages, leaf_mean, leaf_var), dim=-1)  # (N, T, L)
        y = ages[:, None, None]
        stats = (zeta.mean(0), (zeta * y).mean(0), (zeta * y * y).mean(0))
        live = stats[0] > _MIN_MASS
        safe = torch.where(live, stats[0], torch.ones_like(stats[0]))
        new_mean = torch.where(live, stats[1] / safe, leaf_mean)
        spread = (zeta * (y - new_mean[None]) ** 2).mean(0)  # about the new mean: no s2/s0 - m^2 cancellation
        leaf_var = torch.where(live, spread / safe, leaf_var).clamp_min(min_var)
        leaf_mean = new_mean
    return leaf_mean, leaf_var, stats


@register_method
class DRF(Method):
    """Deep Regression Forest (see the module docstring for the algorithm and our choices).

    outputs: log routing probabilities (B, n_trees, 2^(depth-1)).
    Params: n_trees (5), depth (6: 31 split nodes, 32 leaves per tree), n_units (FC outputs feeding the
    split nodes, 128; must be >= the split nodes per tree), init_sigma (5 years), min_sigma (0.5 years),
    leaf_iters (20 fixed-point iterations at epoch end), epoch_end_batches (20; 0 = no epoch-end refit),
    leaf_update_every (1 step; 0 = no in-loss refit), leaf_momentum (0.1), seed (0: the split-node wiring).
    """

    name = "drf"
    description = "deep regression forest: sigmoid split nodes, Gaussian leaves refitted by fixed point"
    paper = "Shen, Guo, Wang, Zhao, Wang, Yuille, Deep Regression Forests for Age Estimation, CVPR 2018"

    def __init__(self, in_features, age_min=0, age_max=100, n_trees: int = 5, depth: int = 6,
                 n_units: int = 128, init_sigma: float = 5.0, min_sigma: float = 0.5, leaf_iters: int = 20,
                 epoch_end_batches: int = 20, leaf_update_every: int = 1, leaf_momentum: float = 0.1,
                 seed: int = 0):
        super().__init__(in_features, age_min, age_max)
        n_trees, depth, n_units = int(n_trees), int(depth), int(n_units)
        if n_trees < 1 or depth < 2:
            raise AgekitError(f"drf needs n_trees >= 1 and depth >= 2, got {n_trees}, {depth}")
        n_split = 2 ** (depth - 1) - 1
        if n_units < n_split:
            raise AgekitError(f"drf n_units ({n_units}) must be >= the split nodes per tree ({n_split})")
        if not 0 < float(leaf_momentum) <= 1 or float(min_sigma) <= 0 or float(init_sigma) <= 0:
            raise AgekitError("drf needs 0 < leaf_momentum <= 1, min_sigma > 0 and init_sigma > 0")
        self.n_trees, self.depth, self.n_split, self.n_leaves = n_trees, depth, n_split, n_split + 1
        self.min_var, self.leaf_iters = float(min_sigma) ** 2, int(leaf_iters)
        self.epoch_end_batches, self.leaf_update_every = int(epoch_end_batches), int(leaf_update_every)
        self.leaf_momentum = float(leaf_momentum)
        self.fc = nn.Linear(in_features, n_units)
        gen = torch.Generator().manual_seed(int(seed))
        phi = torch.stack([torch.randperm(n_units, generator=gen)[:n_split] for _ in range(n_trees)])
        self.register_buffer("phi", phi)  # (T, N) FC output read by each split node
        mean = torch.linspace(self.age_min, self.age_max, self.n_leaves).repeat(n_trees, 1)
        var = torch.full_like(mean, float(init_sigma) ** 2)
        self.register_buffer("leaf_mean", mean)  # (T, L)
        self.register_buffer("leaf_var", var)  # (T, L)
        # running per-sample sufficient statistics for the in-loss refit, consistent with the initial leaves
        s0 = torch.full_like(mean, 1.0 / self.n_leaves)
        self.register_buffer("run_s0", s0)
        self.register_buffer("run_s1", s0 * mean)
        self.register_buffer("run_s2", s0 * (var + mean * mean))
        self._loss_calls = 0  # counts training-mode loss calls (not saved: the phase restarts on resume)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        units = self.fc(features).float()  # (B, n_units)
        split_logits = units[:, self.phi]  # (B, T, N)
        return routing_log_probs(split_logits)

    def loss(self, outputs, ages):
        ages = self.clamp_ages(ages)
        nll, joint = drf_nll(outputs.float(), ages, self.leaf_mean, self.leaf_var)
        if self.training and self.leaf_update_every > 0:
            self._loss_calls += 1
            if self._loss_calls % self.leaf_update_every == 0:
                with torch.no_grad():
                    self._running_update(*leaf_statistics(joint.detach(), ages))
        return nll, {"nll": float(nll.detach())}

    @torch.no_grad()
    def _running_update(self, s0, s1, s2):
        a = self.leaf_momentum
        self.run_s0.mul_(1 - a).add_(a * s0)
        self.run_s1.mul_(1 - a).add_(a * s1)
        self.run_s2.mul_(1 - a).add_(a * s2)
        mean, var = gaussians_from_statistics(self.run_s0, self.run_s1, self.run_s2, self.leaf_mean,
                                              self.leaf_var, self.min_var)
        self.leaf_mean.copy_(mean)
        self.leaf_var.copy_(var)

    @torch.no_grad()
    def refit_leaves(self, log_route: torch.Tensor, ages: torch.Tensor, iters: int | None = None) -> None:
        """Run the fixed point on (log_route (N, T, L), ages (N,)) and install the result; the running
        statistics restart from it."""
        ages = self.clamp_ages(ages).to(self.leaf_mean.device)
        mean, var, (s0, s1, _) = leaf_fixed_point(log_route.float().to(self.leaf_mean.device), ages,
                                                   self.leaf_mean, self.leaf_var,
                                                   self.leaf_iters if iters is None else iters, self.min_var)
        self.leaf_mean.copy_(mean)
        self.leaf_var.copy_(var)
        # statistics that reproduce the installed leaves exactly (dead leaves keep a tiny consistent mass)
        s0 = s0.clamp_min(_MIN_MASS * 10)
        self.run_s0.copy_(s0)
        self.run_s1.copy_(s0 * mean)
        self.run_s2.copy_(s0 * (var + mean * mean))

    def epoch_end(self, outputs, ages) -> None:
        """Refit the leaves from the routing probabilities the trainer collected over up to
        `epoch_end_batches` training batches."""
        self.refit_leaves(outputs, ages)

    def decode(self, outputs) -> AgeDistribution:
        log_route = outputs.detach().float()
        b = log_route.shape[0]
        weights = log_route.exp().reshape(b, -1) / self.n_trees  # (B, T*L), rows sum to 1
        mean_l, var_l = self.leaf_mean.reshape(-1), self.leaf_var.reshape(-1)
        mean = weights @ mean_l
        var = weights @ (var_l + mean_l * mean_l) - mean * mean
        diff = self.ages[None, :] - mean_l[:, None]  # (T*L, K)
        density = torch.exp(-0.5 * diff * diff / var_l[:, None]) / torch.sqrt(2 * math.pi * var_l[:, None])
        probs = weights @ density
        probs = probs / probs.sum(1, keepdim=True).clamp_min(1e-30)
        return AgeDistribution(probs, mean.clamp(self.age_min, self.age_max), var.clamp_min(0).sqrt())
