"""Random sine functions for neural-process meta-regression.

Each function is f(x) = a * sin(x - b) with amplitude a ~ U[0.1, 5] and phase b ~ U[0, pi], observed at
x ~ U[-5, 5] -- the sinusoid regression benchmark of Finn et al., "Model-Agnostic Meta-Learning", ICML 2017,
which is a common 1-D testbed for neural processes (the NP papers themselves use GP samples). Observations
may carry Gaussian noise y = f(x) + noise_std * eps (default: none).

Batches follow the papers' protocol: all B functions of a batch share one number of context points Nc and
of target points Nt >= Nc; the x's are drawn i.i.d., the context is the first Nc of them and the targets are
all Nt, so the target set contains the context set. All randomness comes from the sampler's
`torch.Generator`, so a seed reproduces every batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["SineTask", "SineSampler", "NPBatch", "sine"]


def sine(x: torch.Tensor, amplitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """a * sin(x - b); x (B, N, 1), amplitude and phase (B,) -> (B, N, 1)."""
    return amplitude[:, None, None] * torch.sin(x - phase[:, None, None])


@dataclass(frozen=True)
class SineTask:
    """The distribution over functions and inputs."""

    amplitude: tuple[float, float] = (0.1, 5.0)
    phase: tuple[float, float] = (0.0, math.pi)
    x_range: tuple[float, float] = (-5.0, 5.0)
    noise_std: float = 0.0

    def describe(self) -> str:
        lo, hi = self.x_range
        text = (f"f(x) = a sin(x - b), a ~ U[{self.amplitude[0]:g}, {self.amplitude[1]:g}], "
                f"b ~ U[{self.phase[0]:g}, {self.phase[1]:.4g}], x ~ U[{lo:g}, {hi:g}]")
        return text + (f", noise std {self.noise_std:g}" if self.noise_std else ", no noise")


@dataclass
class NPBatch:
    """One batch of functions. x_c (B, Nc, 1), y_c (B, Nc, 1), x_t (B, Nt, 1), y_t (B, Nt, 1) and the
    true parameters amplitude, phase (B,) (noise-free f is `sine(x, amplitude, phase)`)."""

    x_c: torch.Tensor
    y_c: torch.Tensor
    x_t: torch.Tensor
    y_t: torch.Tensor
    amplitude: torch.Tensor
    phase: torch.Tensor

    def context(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first n context points (contexts of different sizes from one batch are nested)."""
        return self.x_c[:, :n], self.y_c[:, :n]


class SineSampler:
    """Draws batches of sine functions with a private, seeded `torch.Generator`.

    Training batches (`batch`): Nc ~ U{min_context..max_context}, Nt ~ U{max(Nc, 1)..max_points}, target set
    = context + (Nt - Nc) further points. Held-out batches (`heldout`): `n_context` context points and
    `n_target` *separate* target points (targets do not include the context, so the log-likelihood measures
    prediction away from the observations).
    """

    def __init__(self, task: SineTask | None = None, seed: int = 0, min_context: int = 0,
                 max_context: int = 50, max_points: int = 100):
        if not 0 <= min_context <= max_context <= max_points or max_points < 1:
            raise ValueError(f"need 0 <= min_context <= max_context <= max_points and max_points >= 1, got "
                             f"{min_context}, {max_context}, {max_points}")
        self.task = task or SineTask()
        self.min_context, self.max_context, self.max_points = min_context, max_context, max_points
        self.generator = torch.Generator().manual_seed(int(seed))

    def _uniform(self, shape, lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(shape, generator=self.generator)

    def _randint(self, lo: int, hi: int) -> int:
        """Integer uniform on [lo, hi] inclusive."""
        return int(torch.randint(lo, hi + 1, (1,), generator=self.generator))

    def functions(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """amplitude, phase (B,)."""
        return (self._uniform((batch_size,), *self.task.amplitude),
                self._uniform((batch_size,), *self.task.phase))

    def observe(self, x, amplitude, phase) -> torch.Tensor:
        y = sine(x, amplitude, phase)
        if self.task.noise_std:
            y = y + self.task.noise_std * torch.randn(y.shape, generator=self.generator)
        return y

    def batch(self, batch_size: int = 16, n_context: int | None = None, n_target: int | None = None) -> NPBatch:
        """A training batch; targets include the context (the first Nc target points are the context)."""
        n_c = self._randint(self.min_context, self.max_context) if n_context is None else int(n_context)
        n_t = self._randint(max(n_c, 1), self.max_points) if n_target is None else int(n_target)
        if n_c < 0 or n_t < n_c:
            raise ValueError(f"need 0 <= n_context <= n_target, got {n_c}, {n_t}")
        amplitude, phase = self.functions(batch_size)
        x = self._uniform((batch_size, n_t, 1), *self.task.x_range)
        y = self.observe(x, amplitude, phase)
        return NPBatch(x[:, :n_c], y[:, :n_c], x, y, amplitude, phase)

    def heldout(self, batch_size: int, n_context: int, n_target: int = 100) -> NPBatch:
        """An evaluation batch: n_context context points and n_target separate target points."""
        amplitude, phase = self.functions(batch_size)
        x_c = self._uniform((batch_size, n_context, 1), *self.task.x_range)
        x_t = self._uniform((batch_size, n_target, 1), *self.task.x_range)
        return NPBatch(x_c, self.observe(x_c, amplitude, phase), x_t, self.observe(x_t, amplitude, phase),
                       amplitude, phase)

    def marginal_moments(self, n_functions: int = 10000, n_points: int = 100) -> tuple[float, float]:
        """Mean and std of y over many sampled functions and inputs (for the fixed prior baseline)."""
        amplitude, phase = self.functions(n_functions)
        x = self._uniform((n_functions, n_points, 1), *self.task.x_range)
        y = self.observe(x, amplitude, phase)
        return float(y.mean()), float(y.std())
