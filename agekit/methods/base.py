"""A method = head + loss + decoder. Every method runs under the same trainer and evaluator.

- head:    `forward(features (B, F)) -> outputs` (a tensor or dict of tensors, method-specific)
- loss:    `loss(outputs, ages (B,)) -> (scalar, {name: float})`
- decoder: `decode(outputs) -> AgeDistribution` with probabilities over the integer ages
           age_min..age_max (B, K), the point estimate (B,) and the predictive std (B,).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from agekit.errors import AgekitError


@dataclass
class AgeDistribution:
    probs: torch.Tensor  # (B, K) non-negative, rows sum to 1
    mean: torch.Tensor  # (B,) point estimate in [age_min, age_max]
    std: torch.Tensor  # (B,) predictive std (0 where the method gives no spread)


class Method(nn.Module):
    """Base class. Subclasses set `name`, `description`, `paper` and implement head/loss/decode."""

    name = "base"
    description = ""
    paper = ""

    def __init__(self, in_features: int, age_min: int = 0, age_max: int = 100):
        super().__init__()
        if age_max <= age_min:
            raise AgekitError(f"age_max ({age_max}) must exceed age_min ({age_min})")
        self.in_features, self.age_min, self.age_max = in_features, int(age_min), int(age_max)
        self.register_buffer("ages", torch.arange(self.age_min, self.age_max + 1, dtype=torch.float32),
                             persistent=False)

    @property
    def num_ages(self) -> int:
        return self.age_max - self.age_min + 1

    def clamp_ages(self, ages: torch.Tensor) -> torch.Tensor:
        """Targets outside the label range train toward the nearest end of it."""
        return ages.float().clamp(self.age_min, self.age_max)

    def forward(self, features):  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, outputs, ages):  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, outputs) -> AgeDistribution:  # pragma: no cover - abstract
        raise NotImplementedError

    def epoch_end(self, trainer) -> None:
        """Optional hook: the trainer calls it each time a training epoch completes, before validation.

        Default: nothing. Methods with state that is not learned by gradient (e.g. the leaf Gaussians of
        Deep Regression Forests) refit it here; `trainer` gives access to the model (`trainer.model`, maybe
        DDP-wrapped), the training batches (`trainer.source`), `trainer.device` and `trainer.state`.
        """


class SoftmaxAgeMethod(Method):
    """Shared head and decoder of the methods that output a softmax over the integer ages:
    a linear layer to K logits (B, K) and the expectation / std of the softmax as the estimate."""

    def __init__(self, in_features: int, age_min: int = 0, age_max: int = 100):
        super().__init__(in_features, age_min, age_max)
        self.fc = nn.Linear(in_features, self.num_ages)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)

    def decode(self, outputs) -> AgeDistribution:
        return distribution_from_probs(torch.softmax(outputs.detach().float(), dim=1), self.ages)


def distribution_from_probs(probs: torch.Tensor, ages: torch.Tensor) -> AgeDistribution:
    """Expectation and std of a distribution over the integer ages. probs: (B, K), ages: (K,)."""
    mean = probs @ ages
    var = (probs * (ages[None, :] - mean[:, None]) ** 2).sum(1)
    return AgeDistribution(probs, mean, var.clamp_min(0).sqrt())


def distribution_from_point(point: torch.Tensor, ages: torch.Tensor) -> AgeDistribution:
    """A point estimate as a distribution: mass split linearly between the two nearest integer ages,
    so the expectation equals the (clamped) point exactly. point: (B,), ages: (K,)."""
    lo_age, hi_age = float(ages[0]), float(ages[-1])
    point = point.float().clamp(lo_age, hi_age)
    pos = point - lo_age
    lo = pos.floor().long().clamp(max=len(ages) - 1)
    frac = pos - lo.float()
    probs = torch.zeros(point.shape[0], len(ages), dtype=torch.float32, device=point.device)
    probs.scatter_(1, lo[:, None], (1 - frac)[:, None])
    hi = (lo + 1).clamp(max=len(ages) - 1)
    probs.scatter_add_(1, hi[:, None], frac[:, None])
    return AgeDistribution(probs, point, torch.zeros_like(point))


METHODS: dict[str, Callable[..., Method]] = {}


def register_method(cls):
    METHODS[cls.name] = cls
    return cls


def create_method(name: str, in_features: int, age_min: int, age_max: int, **params) -> Method:
    import agekit.methods  # noqa: F401  (fills METHODS)

    if name not in METHODS:
        raise AgekitError(f"unknown method '{name}'; known: {', '.join(sorted(METHODS))}")
    try:
        return METHODS[name](in_features, age_min, age_max, **params)
    except TypeError as exc:
        raise AgekitError(f"method '{name}': bad parameter ({exc})") from None
