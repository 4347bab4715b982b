"""A method = head + loss + decoder. Every method runs under the same trainer and evaluator.

- head:    `forward(features (B, F)) -> outputs` (a tensor or dict of tensors, method-specific)
- loss:    `loss(outputs, ages (B,)) -> (scalar, {name: float})`
- decoder: `decode(outputs) -> AgeDistribution` with probabilities over the integer ages
           age_min..age_max (B, K), the point estimate (B,) and the predictive std (B,) (whatever labels the
           method uses internally, e.g. a coarser or finer grid: SoftmaxAgeMethod's `step`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from agekit.errors import AgekitError
from agekit.registry import Registry


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

    # Training batches the trainer runs the model over at the end of each epoch for `epoch_end`; 0 = the
    # method has no epoch-end step and `epoch_end` is never called.
    epoch_end_batches = 0

    def epoch_end(self, outputs, ages: torch.Tensor) -> None:
        """Optional hook: the trainer calls it each time a training epoch completes, before validation, when
        `epoch_end_batches` > 0 (and the epoch yields at least one batch).

        outputs: this method's head outputs over the first `epoch_end_batches` training batches of the next
        epoch's order (model in eval mode, no augmentation, no gradient), concatenated along the batch;
        ages (N,): their labels, float, on the training device. Methods with state that is not learned by
        gradient (e.g. the leaf Gaussians of Deep Regression Forests) refit it here. Default: nothing.
        """


class SoftmaxAgeMethod(Method):
    """Shared head and decoder of the methods that output a softmax over discrete age labels:
    a linear layer to K logits (B, K) and the expectation / std of the softmax as the estimate.

    Label grid (`step`, years between neighbouring labels; default 1 = one label per integer year): the
    labels are a_j = age_min + j * step, j = 0..K-1, K = (age_max - age_min) / step + 1 (step must divide
    age_max - age_min; e.g. 0..100: step 0.5 -> 201 labels, 2 -> 51, 5 -> 21, 10 -> 11). This is the
    "number of discrete labels" of DLDL-v2's ablation (Gao et al., IJCAI 2018). Losses build their targets on
    this grid (`label_ages`, `label_index`). The decoder's mean and std are the softmax's own expectation and
    std over the grid; its `probs` are always over the integer ages age_min..age_max (B, age_max - age_min + 1),
    as the evaluator, the exporter and the calibration expect: each label's mass is split linearly between
    the two integer ages around it (all of it on a_j when a_j is an integer), which keeps the expectation
    exactly. With step 1 the grid is the integer ages and nothing is mapped.
    """

    def __init__(self, in_features: int, age_min: int = 0, age_max: int = 100, step: float = 1.0):
        super().__init__(in_features, age_min, age_max)
        try:
            step = float(step)
        except (TypeError, ValueError):
            raise AgekitError(f"{self.name} step {step!r}: need a number of years") from None
        span = self.age_max - self.age_min
        count = round(span / step) if step > 0 else 0
        if not step > 0 or count < 1 or abs(count * step - span) > 1e-6 * max(1.0, span):
            raise AgekitError(f"{self.name} step {step:g}: the label step must be > 0 and divide "
                              f"age_max - age_min = {span} (e.g. 0.5, 1, 2, 4, 5, 10 for 0..100)")
        self.step, self.num_labels = step, count + 1
        if step == 1.0:  # the integer ages: nothing to map (the default, unchanged)
            self.register_buffer("label_grid", None, persistent=False)
            self.register_buffer("label_to_ages", None, persistent=False)
        else:
            grid = self.age_min + step * torch.arange(self.num_labels, dtype=torch.float64)
            grid[-1] = self.age_max  # exactly
            self.register_buffer("label_grid", grid.float(), persistent=False)
            self.register_buffer("label_to_ages", label_to_integer_ages(grid, self.age_min, self.age_max),
                                 persistent=False)
        self.fc = nn.Linear(in_features, self.num_labels)

    @property
    def label_ages(self) -> torch.Tensor:
        """The label ages (K,): the integer ages for step 1, else age_min + j * step."""
        return self.ages if self.label_grid is None else self.label_grid

    def label_index(self, ages: torch.Tensor) -> torch.Tensor:
        """Index of the nearest label of each age (clamped to the grid). ages: (B,) float -> (B,) int64.
        With step 1: round to the nearest integer age (halves to even), as DEX does."""
        if self.label_to_ages is None:
            return ages.round().clamp(self.age_min, self.age_max).long() - self.age_min
        return ((ages.float() - self.age_min) / self.step).round().clamp(0, self.num_labels - 1).long()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)

    def decode(self, outputs) -> AgeDistribution:
        probs = torch.softmax(outputs.detach().float(), dim=1)
        if self.label_to_ages is None:
            return distribution_from_probs(probs, self.ages)
        dist = distribution_from_probs(probs, self.label_ages)  # mean and std on the method's own grid
        return AgeDistribution(probs @ self.label_to_ages, dist.mean, dist.std)


def label_to_integer_ages(label_ages: torch.Tensor, age_min: int, age_max: int) -> torch.Tensor:
    """(K, K_int) matrix moving a distribution over label ages (K,) in [age_min, age_max] onto the integer
    ages age_min..age_max (K_int = age_max - age_min + 1): label a goes to floor(a) with weight
    1 - frac(a) and to floor(a) + 1 with weight frac(a). Rows sum to 1; sum_i M[j, i] * i = a_j, so
    (p @ M) @ integer_ages = p @ label_ages: the expectation is kept. Returns float32."""
    k_int = age_max - age_min + 1
    pos = (label_ages.double() - age_min).clamp(0, age_max - age_min)
    lo = pos.floor().long().clamp(max=k_int - 1)
    frac = pos - lo.double()
    out = torch.zeros(len(label_ages), k_int, dtype=torch.float64)
    rows = torch.arange(len(label_ages))
    out[rows, lo] += 1 - frac
    out[rows, (lo + 1).clamp(max=k_int - 1)] += frac
    return out.float()


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


# name -> Method class; importing agekit.methods registers the built-in ones (agekit.registry)
METHODS = Registry("method", fill="agekit.methods")


def register_method(cls):
    """Class decorator adding a Method under its `name`."""
    return METHODS.register(cls.name, cls)


def list_methods() -> list[str]:
    return METHODS.names()


def create_method(name: str, in_features: int, age_min: int, age_max: int, **params) -> Method:
    cls = METHODS.get(name)
    try:
        return cls(in_features, age_min, age_max, **params)
    except TypeError as exc:
        raise AgekitError(f"method '{name}': bad parameter ({exc})") from None
