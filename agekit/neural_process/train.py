"""Training and evaluation loops for the neural processes on a batch sampler (e.g. `SineSampler`).

`train_model` runs Adam on the model's `loss` (negative ELBO / NLL per target point) for a fixed number of
iterations; `evaluate` measures the held-out predictive log-likelihood per target point for a given number
of context points; `prior_log_likelihood` is the fixed baseline that ignores the context.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Callable

import torch

from agekit.neural_process.models import NeuralProcess
from agekit.neural_process.sine import NPBatch

log = logging.getLogger(__name__)

__all__ = ["train_model", "evaluate", "prior_log_likelihood"]


def train_model(model: NeuralProcess, sampler, iters: int, batch_size: int = 16, lr: float = 5e-4,
                seed: int = 0, log_every: int = 0,
                callback: Callable[[int, dict], None] | None = None) -> NeuralProcess:
    """Train `model` in place for `iters` Adam steps on `sampler.batch(batch_size)`; return it (in eval mode).

    `seed` seeds torch's global generator, which draws the latent samples during training (the sampler has
    its own generator). `callback(iteration, {"loss", "nll", "kl"})` is called after every step.
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    torch.manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    start, running = time.perf_counter(), 0.0
    for it in range(1, iters + 1):
        b = sampler.batch(batch_size)
        parts = model.loss_parts(b.x_c, b.y_c, b.x_t, b.y_t)
        optimiser.zero_grad(set_to_none=True)
        parts["loss"].backward()
        optimiser.step()
        stats = {k: float(v.detach().mean()) for k, v in parts.items()}
        running += stats["loss"]
        if callback is not None:
            callback(it, stats)
        if log_every and (it % log_every == 0 or it == iters):
            n = it % log_every or log_every
            log.info("%s iter %d/%d loss %.3f (%.0f s)", model.name, it, iters, running / n,
                     time.perf_counter() - start)
            running = 0.0
    return model.eval()


@torch.no_grad()
def evaluate(model: NeuralProcess, batch: NPBatch, n_context: int, n_samples: int = 32, chunk: int = 64,
             seed: int = 0) -> dict:
    """Held-out log-likelihood per target point with the first `n_context` context points of `batch`.

    Returns means over the batch's functions: "ll" (joint, see `NeuralProcess.log_likelihood`),
    "ll_marginal", "ll_sem" (standard error of "ll" over functions) and "mean_std" (mean predictive std
    over targets, mixture over z for latent models). Functions are processed `chunk` at a time.
    """
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    x_c, y_c = batch.context(n_context)
    joint, marginal, stds = [], [], []
    for i in range(0, batch.x_t.shape[0], chunk):
        sl = slice(i, i + chunk)
        means, sd = model.sample_predictions(x_c[sl], y_c[sl], batch.x_t[sl], n_samples, generator=generator)
        log_p = torch.distributions.Normal(means, sd).log_prob(batch.y_t[sl]).sum(-1)      # (K, b, Nt)
        k, n_t = log_p.shape[0], log_p.shape[-1]
        joint.append((torch.logsumexp(log_p.sum(-1), 0) - math.log(k)) / n_t)
        marginal.append((torch.logsumexp(log_p, 0) - math.log(k)).mean(-1))
        var = (sd ** 2).mean(0) + means.var(0, unbiased=False)
        stds.append(var.sqrt().mean(dim=(1, 2)))
    model.train(was_training)
    joint, marginal, stds = torch.cat(joint), torch.cat(marginal), torch.cat(stds)
    return {"n_context": n_context, "ll": float(joint.mean()), "ll_marginal": float(marginal.mean()),
            "ll_sem": float(joint.std() / math.sqrt(len(joint))) if len(joint) > 1 else 0.0,
            "mean_std": float(stds.mean())}


def prior_log_likelihood(batch: NPBatch, mean: float, std: float) -> dict:
    """Fixed baseline: every target y ~ N(mean, std^2), ignoring the context (per target point, mean over
    functions, with its standard error)."""
    ll = torch.distributions.Normal(mean, std).log_prob(batch.y_t).sum(-1).mean(-1)          # (B,)
    return {"ll": float(ll.mean()), "ll_sem": float(ll.std() / math.sqrt(len(ll))) if len(ll) > 1 else 0.0,
            "mean": mean, "std": std}
