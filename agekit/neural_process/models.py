"""Neural processes for set-conditioned regression: CNP, latent NP and attentive NP.

A neural process maps a *context set* {(x_i, y_i)} of one function (one task, later: one subject) to a
predictive distribution p(y | x, context) at any target input x. Shapes used throughout:

    B   functions (tasks) in a batch
    Nc  context points per function (may be 0), Nt target points per function
    x_c (B, Nc, d_x), y_c (B, Nc, d_y), x_t (B, Nt, d_x), y_t (B, Nt, d_y)
    mask_c (B, Nc) / mask_t (B, Nt) bool, optional: False marks padding, so functions with different
    numbers of points can share a batch (None = every point is real)

Models (all `nn.Module`, same call signature):

* `ConditionalNP` -- Garnelo et al., "Conditional Neural Processes", ICML 2018. Deterministic path only:
  r = mean_i MLP([x_i, y_i]); decoder MLP([x, r]) -> (mean, std). Trained by the Gaussian NLL of the targets.
* `LatentNP` -- Garnelo et al., "Neural Processes", ICML 2018 workshop on Theoretical Foundations and
  Applications of Deep Generative Models. The CNP's deterministic path plus a global latent z with
  q(z | S) = N(mu(s), sigma(s)), s = mean_i MLP([x_i, y_i]); decoder MLP([x, r, z]). Trained with the ELBO
  E_{q(z|C u T)}[log p(y_T | x_T, r_C, z)] - KL(q(z | C u T) || q(z | C)) (the context posterior stands in for
  the prior, as in the paper).
* `AttentiveNP` -- Kim et al., "Attentive Neural Processes", ICLR 2019. As `LatentNP`, but the deterministic
  path uses self-attention among the context representations and multi-head cross-attention from each target
  x to the context x's, so every target gets its own r_t. (The paper also allows self-attention in the latent
  path; here the latent path is the NP's MLP + mean.)

Conventions shared with the papers:

* The target set contains the context set (the samplers in `agekit.neural_process.sine` put the context
  first); the training posterior q(z | C u T) is therefore computed from the targets alone.
* Predictive std = 0.1 + 0.9 * softplus(.) (decoder) and latent std = 0.1 + 0.9 * sigmoid(.), as in the
  papers' reference code; the floor of 0.1 is in the units of y, so scale y accordingly.
* Loss = negative ELBO (latent models) or NLL (CNP) *per target point*: (-sum_t log p(y_t) + KL) / Nt,
  averaged over the batch.

Empty context (Nc = 0, or every context point masked): the mean aggregate is replaced by a learned
"empty context" vector (one for the deterministic path, one for the latent path); for the ANP the
cross-attention output is replaced by the learned empty vector at every target. The models then predict
their learned prior over functions; train with some Nc = 0 batches (the sine sampler does by default) so that
this vector is fitted.
"""
from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal, kl_divergence

__all__ = ["ConditionalNP", "LatentNP", "AttentiveNP", "NeuralProcess", "MODELS", "build_model", "mlp",
           "masked_mean"]


def mlp(d_in: int, d_hidden: int, d_out: int, n_layers: int) -> nn.Sequential:
    """`n_layers` linear layers (>= 1) with ReLU between them (none after the last)."""
    dims = [d_in] + [d_hidden] * (n_layers - 1) + [d_out]
    layers: list[nn.Module] = []
    for i in range(n_layers):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < n_layers - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def masked_mean(h: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of h (B, N, H) over the points where mask (B, N) is True -> (mean (B, H), count (B,)).

    Rows with no point give a zero mean and count 0 (the caller substitutes its empty-context vector).
    """
    if mask is None:
        count = torch.full(h.shape[:1], float(h.shape[1]), dtype=h.dtype, device=h.device)
        total = h.sum(1)
    else:
        m = mask.to(h.dtype).unsqueeze(-1)
        total = (h * m).sum(1)
        count = m.sum(1).squeeze(-1)
    return total / count.clamp(min=1.0).unsqueeze(-1), count


def _aggregate(h: torch.Tensor, mask: torch.Tensor | None, empty: torch.Tensor) -> torch.Tensor:
    """Permutation-invariant mean of h (B, N, H); functions without context get the learned `empty` (H,)."""
    mean, count = masked_mean(h, mask)
    return torch.where((count > 0).unsqueeze(-1), mean, empty.to(mean.dtype).expand_as(mean))


def _n_points(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """Number of real points per function (B,) for a (B, N, .) tensor and its optional mask."""
    if mask is None:
        return torch.full(like.shape[:1], float(like.shape[1]), dtype=like.dtype, device=like.device)
    return mask.to(like.dtype).sum(1)


class MultiheadAttention(nn.Module):
    """Scaled dot-product multi-head attention (Vaswani et al. 2017) with a key-padding mask.

    query (B, Nq, d_q), key (B, Nk, d_k), value (B, Nk, d_v) -> (B, Nq, d_model). Nk may be 0 (zeros out);
    queries whose keys are all masked get an average over padding, which callers replace.
    """

    def __init__(self, d_q: int, d_k: int, d_v: int, d_model: int, n_heads: int):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.n_heads, self.d_head = n_heads, d_model // n_heads
        self.wq = nn.Linear(d_q, d_model, bias=False)
        self.wk = nn.Linear(d_k, d_model, bias=False)
        self.wv = nn.Linear(d_v, d_model, bias=False)
        self.wo = nn.Linear(d_model, d_model)

    def forward(self, query, key, value, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, nq, nk = query.shape[0], query.shape[1], key.shape[1]
        q = self.wq(query).view(b, nq, self.n_heads, self.d_head).transpose(1, 2)
        k = self.wk(key).view(b, nk, self.n_heads, self.d_head).transpose(1, 2)
        v = self.wv(value).view(b, nk, self.n_heads, self.d_head).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)           # (B, h, Nq, Nk)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
        out = torch.softmax(scores, dim=-1) @ v                             # (B, h, Nq, d_head)
        return self.wo(out.transpose(1, 2).reshape(b, nq, self.n_heads * self.d_head))


class SelfAttentionBlock(nn.Module):
    """Post-norm Transformer block over the context set: h = LN(h + MHA(h)); h = LN(h + FFN(h))."""

    def __init__(self, d: int, n_heads: int):
        super().__init__()
        self.attn = MultiheadAttention(d, d, d, d, n_heads)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ffn = mlp(d, d, d, 2)

    def forward(self, h, mask=None):
        h = self.ln1(h + self.attn(h, h, h, mask))
        return self.ln2(h + self.ffn(h))


class NeuralProcess(nn.Module):
    """Shared machinery: shape checks, latent path, decoder, loss and predictive evaluation.

    Subclasses define `_deterministic(x_c, y_c, x_t, mask_c) -> r (B, Nt, d_hidden)`.
    """

    name = "np-base"
    paper = ""

    def __init__(self, d_x: int = 1, d_y: int = 1, d_hidden: int = 128, d_latent: int | None = 128,
                 n_encoder_layers: int = 3, n_decoder_layers: int = 3):
        super().__init__()
        if d_x < 1 or d_y < 1 or d_hidden < 1:
            raise ValueError(f"d_x, d_y and d_hidden must be >= 1, got {d_x}, {d_y}, {d_hidden}")
        self.d_x, self.d_y, self.d_hidden = d_x, d_y, d_hidden
        self.d_latent = d_latent or 0
        self.config = {"d_x": d_x, "d_y": d_y, "d_hidden": d_hidden, "d_latent": d_latent,
                       "n_encoder_layers": n_encoder_layers, "n_decoder_layers": n_decoder_layers}
        if self.d_latent:
            self.latent_encoder = mlp(d_x + d_y, d_hidden, d_hidden, n_encoder_layers)
            self.latent_empty = nn.Parameter(torch.zeros(d_hidden))
            self.latent_hidden = nn.Linear(d_hidden, d_hidden)
            self.latent_mu = nn.Linear(d_hidden, self.d_latent)
            self.latent_sigma = nn.Linear(d_hidden, self.d_latent)
        self.decoder = mlp(d_x + d_hidden + self.d_latent, d_hidden, 2 * d_y, n_decoder_layers)

    @property
    def has_latent(self) -> bool:
        return self.d_latent > 0

    # -- pieces -------------------------------------------------------------------------------------------
    def _check(self, x_c, y_c, x_t, y_t=None, mask_c=None, mask_t=None):
        def bad(msg):
            raise ValueError(f"{type(self).__name__}: {msg}")
        for name, t, d in (("x_c", x_c, self.d_x), ("y_c", y_c, self.d_y), ("x_t", x_t, self.d_x),
                           ("y_t", y_t, self.d_y)):
            if t is not None and (t.dim() != 3 or t.shape[-1] != d):
                bad(f"{name} must have shape (B, N, {d}), got {tuple(t.shape)}")
        if x_c.shape[:2] != y_c.shape[:2]:
            bad(f"x_c {tuple(x_c.shape)} and y_c {tuple(y_c.shape)} disagree on (B, Nc)")
        if x_t.shape[0] != x_c.shape[0]:
            bad(f"x_t has batch {x_t.shape[0]} but the context has {x_c.shape[0]}")
        if y_t is not None and y_t.shape[:2] != x_t.shape[:2]:
            bad(f"x_t {tuple(x_t.shape)} and y_t {tuple(y_t.shape)} disagree on (B, Nt)")
        for name, m, t in (("mask_c", mask_c, x_c), ("mask_t", mask_t, x_t)):
            if m is not None and (m.dtype != torch.bool or m.shape != t.shape[:2]):
                bad(f"{name} must be a bool tensor of shape {tuple(t.shape[:2])}")

    def latent_distribution(self, x, y, mask=None) -> Normal:
        """q(z | {(x_i, y_i)}): N(mu, 0.1 + 0.9 sigmoid(.)) with batch shape (B, d_latent)."""
        s = _aggregate(self.latent_encoder(torch.cat([x, y], -1)), mask, self.latent_empty)
        h = F.relu(self.latent_hidden(s))
        return Normal(self.latent_mu(h), 0.1 + 0.9 * torch.sigmoid(self.latent_sigma(h)))

    def _deterministic(self, x_c, y_c, x_t, mask_c):
        raise NotImplementedError

    def decode(self, x_t, r, z=None):
        """Decoder p(y | x, r, z): x_t (B, Nt, d_x), r (B, Nt, H), z (..., B, d_latent) or None.

        Leading sample dimensions of z are broadcast: returns mean, std of shape (..., B, Nt, d_y).
        """
        # The first layer applied to [x, r, z] is split into W_x x + W_r r + W_z z, so that x and r are
        # projected once for all draws of z and z once for all targets (same result as concatenating).
        first, rest = self.decoder[0], self.decoder[1:]
        w = first.weight
        h = F.linear(x_t, w[:, :self.d_x], first.bias) + F.linear(r, w[:, self.d_x:self.d_x + self.d_hidden])
        if z is not None:
            h = h + F.linear(z, w[:, self.d_x + self.d_hidden:]).unsqueeze(-2)      # (..., B, Nt, H)
        out = rest(h) if len(rest) else h
        mean, raw = out.split(self.d_y, dim=-1)
        return mean, 0.1 + 0.9 * F.softplus(raw)

    @staticmethod
    def _sample(dist: Normal, n: int | None, generator=None) -> torch.Tensor:
        """Reparameterised sample(s) z = mu + sigma * eps: (B, d) or (n, B, d)."""
        shape = dist.loc.shape if n is None else (n, *dist.loc.shape)
        eps = torch.randn(shape, generator=generator, dtype=dist.loc.dtype, device=dist.loc.device)
        return dist.loc + dist.scale * eps

    # -- API ----------------------------------------------------------------------------------------------
    def forward(self, x_c, y_c, x_t, y_t=None, *, mask_c=None, mask_t=None, generator=None):
        """Predict at x_t from the context.

        x_c (B, Nc, d_x), y_c (B, Nc, d_y), x_t (B, Nt, d_x), y_t (B, Nt, d_y) or None.
        Returns mean (B, Nt, d_y), std (B, Nt, d_y) and a dict of extras. Latent models draw one z:
        from q(z | T) when y_t is given (training: extras["kl"] (B,) = KL(q(z|T) || q(z|C)) summed over the
        latent dimensions), otherwise from q(z | C) (a sample from the predictive; see `predict` for the
        moments over many z). extras also holds "z" and the "prior" (and "posterior") Normal.
        """
        self._check(x_c, y_c, x_t, y_t, mask_c, mask_t)
        r = self._deterministic(x_c, y_c, x_t, mask_c)
        extras: dict = {}
        if not self.has_latent:
            mean, std = self.decode(x_t, r)
            return mean, std, extras
        prior = self.latent_distribution(x_c, y_c, mask_c)
        extras["prior"] = prior
        if y_t is not None:
            posterior = self.latent_distribution(x_t, y_t, mask_t)
            extras["posterior"] = posterior
            extras["kl"] = kl_divergence(posterior, prior).sum(-1)
            z = self._sample(posterior, None, generator)
        else:
            z = self._sample(prior, None, generator)
        extras["z"] = z
        mean, std = self.decode(x_t, r, z)
        return mean, std, extras

    def loss_parts(self, x_c, y_c, x_t, y_t, *, mask_c=None, mask_t=None, generator=None) -> dict:
        """{"loss": scalar, "nll": (B,), "kl": (B,)}: per target point, loss = mean_B(nll + kl)."""
        mean, std, extras = self(x_c, y_c, x_t, y_t, mask_c=mask_c, mask_t=mask_t, generator=generator)
        n_t = _n_points(mask_t, x_t)
        if x_t.shape[1] == 0 or bool((n_t == 0).any()):
            raise ValueError("every function needs at least one target point for the loss")
        log_p = Normal(mean, std).log_prob(y_t).sum(-1)                     # (B, Nt)
        if mask_t is not None:
            log_p = log_p * mask_t.to(log_p.dtype)
        nll = -log_p.sum(1) / n_t
        kl = extras["kl"] / n_t if "kl" in extras else torch.zeros_like(nll)
        return {"loss": (nll + kl).mean(), "nll": nll, "kl": kl}

    def loss(self, x_c, y_c, x_t, y_t, *, mask_c=None, mask_t=None, generator=None) -> torch.Tensor:
        """Negative ELBO (latent models) or NLL (CNP) per target point, averaged over the batch (scalar)."""
        return self.loss_parts(x_c, y_c, x_t, y_t, mask_c=mask_c, mask_t=mask_t, generator=generator)["loss"]

    def sample_predictions(self, x_c, y_c, x_t, n_samples: int = 16, *, mask_c=None, generator=None):
        """Decoder outputs for n_samples draws z ~ q(z | C): mean, std of shape (K, B, Nt, d_y).

        K = n_samples for latent models, 1 for the CNP (deterministic). The deterministic path runs once.
        """
        self._check(x_c, y_c, x_t, None, mask_c, None)
        r = self._deterministic(x_c, y_c, x_t, mask_c)
        if not self.has_latent:
            mean, std = self.decode(x_t, r)
            return mean.unsqueeze(0), std.unsqueeze(0)
        z = self._sample(self.latent_distribution(x_c, y_c, mask_c), max(1, int(n_samples)), generator)
        return self.decode(x_t, r, z)

    def predict(self, x_c, y_c, x_t, n_samples: int = 16, *, mask_c=None, generator=None):
        """Predictive mean and std (B, Nt, d_y); for latent models the moments of the mixture over z:
        mean = E_z[mu], std = sqrt(E_z[sigma^2] + Var_z[mu]) (Monte Carlo with n_samples draws)."""
        means, stds = self.sample_predictions(x_c, y_c, x_t, n_samples, mask_c=mask_c, generator=generator)
        mean = means.mean(0)
        var = (stds ** 2).mean(0) + means.var(0, unbiased=False)
        return mean, var.sqrt()

    def log_likelihood(self, x_c, y_c, x_t, y_t, n_samples: int = 16, *, mask_c=None, mask_t=None,
                       generator=None) -> dict:
        """Predictive log-likelihood of y_t given the context, per target point, per function (B,).

        "joint": (1/Nt) log p(y_T | x_T, C) with p(y_T | .) = E_{z~q(z|C)} prod_t N(y_t; mu_t(z), sigma_t(z)),
        estimated by log-mean-exp over n_samples draws (a consistent estimate, biased low for few samples).
        "marginal": (1/Nt) sum_t log E_z N(y_t; ...) -- each target on its own. The two coincide for the CNP.
        """
        self._check(x_c, y_c, x_t, y_t, mask_c, mask_t)
        means, stds = self.sample_predictions(x_c, y_c, x_t, n_samples, mask_c=mask_c, generator=generator)
        log_p = Normal(means, stds).log_prob(y_t).sum(-1)                   # (K, B, Nt)
        if mask_t is not None:
            log_p = log_p * mask_t.to(log_p.dtype)
        n_t = _n_points(mask_t, x_t).clamp(min=1.0)
        log_k = math.log(log_p.shape[0])
        joint = (torch.logsumexp(log_p.sum(-1), 0) - log_k) / n_t
        marginal = (torch.logsumexp(log_p, 0) - log_k).sum(-1) / n_t
        return {"joint": joint, "marginal": marginal}


class ConditionalNP(NeuralProcess):
    """Conditional Neural Process (Garnelo et al., ICML 2018).

    r = mean_i MLP([x_i, y_i]) (learned empty vector when Nc = 0); (mean, std) = MLP([x_t, r]).
    No latent variable: predictions at different targets are independent given the context.
    """

    name = "cnp"
    paper = "Garnelo et al., Conditional Neural Processes, ICML 2018"

    def __init__(self, d_x: int = 1, d_y: int = 1, d_hidden: int = 128, n_encoder_layers: int = 3,
                 n_decoder_layers: int = 3):
        super().__init__(d_x, d_y, d_hidden, None, n_encoder_layers, n_decoder_layers)
        self.encoder = mlp(d_x + d_y, d_hidden, d_hidden, n_encoder_layers)
        self.det_empty = nn.Parameter(torch.zeros(d_hidden))

    def _deterministic(self, x_c, y_c, x_t, mask_c):
        r = _aggregate(self.encoder(torch.cat([x_c, y_c], -1)), mask_c, self.det_empty)   # (B, H)
        return r.unsqueeze(1).expand(-1, x_t.shape[1], -1)


class LatentNP(NeuralProcess):
    """Neural Process with deterministic and latent paths (Garnelo et al., 2018, ICML workshop; the
    "NP" baseline of Kim et al. 2019).

    r = mean_i MLP_r([x_i, y_i]); z ~ N(mu(s), sigma(s)) with s = mean_i MLP_s([x_i, y_i]);
    (mean, std) = MLP([x_t, r, z]). Trained with the ELBO (see the module docstring).
    """

    name = "np"
    paper = "Garnelo et al., Neural Processes, ICML 2018 workshop"

    def __init__(self, d_x: int = 1, d_y: int = 1, d_hidden: int = 128, d_latent: int = 128,
                 n_encoder_layers: int = 3, n_decoder_layers: int = 3):
        super().__init__(d_x, d_y, d_hidden, d_latent, n_encoder_layers, n_decoder_layers)
        self.encoder = mlp(d_x + d_y, d_hidden, d_hidden, n_encoder_layers)
        self.det_empty = nn.Parameter(torch.zeros(d_hidden))

    def _deterministic(self, x_c, y_c, x_t, mask_c):
        r = _aggregate(self.encoder(torch.cat([x_c, y_c], -1)), mask_c, self.det_empty)
        return r.unsqueeze(1).expand(-1, x_t.shape[1], -1)


class AttentiveNP(NeuralProcess):
    """Attentive Neural Process (Kim et al., ICLR 2019).

    Deterministic path: r_i = MLP([x_i, y_i]) -> `n_self_attention` self-attention blocks over the context ->
    multi-head cross-attention with queries e(x_t), keys e(x_c) (e: a 2-layer MLP shared by both) and values
    r_i, giving a target-specific r_t (B, Nt, H) (learned empty vector when Nc = 0). Latent path and decoder
    as in `LatentNP`.
    """

    name = "anp"
    paper = "Kim et al., Attentive Neural Processes, ICLR 2019"

    def __init__(self, d_x: int = 1, d_y: int = 1, d_hidden: int = 128, d_latent: int = 128,
                 n_encoder_layers: int = 3, n_decoder_layers: int = 3, n_heads: int = 8,
                 n_self_attention: int = 2):
        super().__init__(d_x, d_y, d_hidden, d_latent, n_encoder_layers, n_decoder_layers)
        self.config.update(n_heads=n_heads, n_self_attention=n_self_attention)
        self.encoder = mlp(d_x + d_y, d_hidden, d_hidden, n_encoder_layers)
        self.self_attention = nn.ModuleList(SelfAttentionBlock(d_hidden, n_heads) for _ in range(n_self_attention))
        self.x_embed = mlp(d_x, d_hidden, d_hidden, 2)
        self.cross_attention = MultiheadAttention(d_hidden, d_hidden, d_hidden, d_hidden, n_heads)
        self.cross_norm = nn.LayerNorm(d_hidden)
        self.det_empty = nn.Parameter(torch.zeros(d_hidden))

    def _deterministic(self, x_c, y_c, x_t, mask_c):
        h = self.encoder(torch.cat([x_c, y_c], -1))                          # (B, Nc, H)
        for block in self.self_attention:
            h = block(h, mask_c)
        q = self.x_embed(x_t)                                                # (B, Nt, H)
        r = self.cross_norm(q + self.cross_attention(q, self.x_embed(x_c), h, mask_c))
        has_context = _n_points(mask_c, x_c) > 0                             # (B,)
        return torch.where(has_context[:, None, None], r, self.det_empty.to(r.dtype).expand_as(r))


MODELS: dict[str, type[NeuralProcess]] = {"cnp": ConditionalNP, "np": LatentNP, "anp": AttentiveNP}


def build_model(name: str, d_x: int = 1, d_y: int = 1, **kwargs) -> NeuralProcess:
    """Model by short name ('cnp', 'np', 'anp'); keyword arguments go to its constructor.

    Options that some other model has but this one lacks (d_latent for the CNP, n_heads and n_self_attention
    outside the ANP) are dropped, so one set of options can build all three; unknown options raise TypeError.
    """
    if name not in MODELS:
        raise ValueError(f"unknown neural process {name!r} (choose from {', '.join(MODELS)})")
    accepted = set(inspect.signature(MODELS[name].__init__).parameters)
    known = set().union(*(inspect.signature(c.__init__).parameters for c in MODELS.values()))
    kwargs = {k: v for k, v in kwargs.items() if k in accepted or k not in known}
    return MODELS[name](d_x=d_x, d_y=d_y, **kwargs)
