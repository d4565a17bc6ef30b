"""Small building blocks: MLPs, fixed input normalisation, action masking, agent ids."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NEG_INF = -1e9  # finite, so a fully masked row stays NaN-free


def mlp(in_dim: int, hidden: int, layers: int, out_dim: int,
        activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """`layers` hidden layers of width `hidden`, then a linear output."""
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), activation()]
        d = hidden
    mods.append(nn.Linear(d, out_dim))
    return nn.Sequential(*mods)


def mask_logits(logits: torch.Tensor, avail: torch.Tensor) -> torch.Tensor:
    """Unavailable actions get a large negative logit (probability 0 after softmax)."""
    return logits.masked_fill(~avail.bool(), NEG_INF)


def select_actions(logits: torch.Tensor, avail: torch.Tensor, greedy: bool,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample from (or argmax over) the available actions; logits [..., A] -> actions [...]."""
    logits = mask_logits(logits, avail)
    if greedy:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float(), -1).reshape(-1, logits.shape[-1])
    return torch.multinomial(probs, 1, generator=generator).reshape(logits.shape[:-1])


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def agent_one_hot(n_agents: int, batch_shape: tuple[int, ...],
                  device: torch.device | str | None = None) -> torch.Tensor:
    """[*batch_shape, n_agents, n_agents] identity rows, one per agent."""
    eye = torch.eye(n_agents, device=device)
    return eye.expand(*batch_shape, n_agents, n_agents)


class FixedNormalizer(nn.Module):
    """(x - mean) / std with statistics fitted once on the dataset and saved as buffers."""

    def __init__(self, dim: int, min_std: float = 1e-3, max_rows: int = 200_000):
        super().__init__()
        self.min_std, self.max_rows = min_std, max_rows
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1])
        if len(x) > self.max_rows:  # an evenly spaced subset is plenty for two moments
            x = x[torch.linspace(0, len(x) - 1, self.max_rows).long()]
        x = x.float()
        std = x.std(0)
        self.mean.copy_(x.mean(0))
        # A feature constant in the data keeps scale 1: dividing by ~0 would blow up any
        # value the policy meets online that the dataset never showed.
        self.std.copy_(torch.where(std < self.min_std, torch.ones_like(std), std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class MaskedBatchNorm(nn.Module):
    """BatchNorm over the feature axis of [..., C] tokens whose statistics skip padding.

    Training uses the mean/variance of the valid tokens only (padding after an episode's end
    would otherwise bias them) and updates running estimates; evaluation and step-by-step
    inference use the running estimates, so the op is the same affine map in both views.
    `slots` keeps separate running statistics per slot (e.g. per agent position when one
    shared network is run once per agent and each pass sees a different input distribution);
    the affine weights are shared.
    """

    def __init__(self, num_features: int, slots: int = 1, momentum: float = 0.1,
                 eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(slots, num_features))
        self.register_buffer("running_var", torch.ones(slots, num_features))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                slot: int = 0) -> torch.Tensor:
        if self.training:
            flat = x.reshape(-1, x.shape[-1])
            if mask is not None:
                flat = flat[mask.reshape(-1)]
            mean, var = flat.mean(0), flat.var(0, unbiased=False)
            with torch.no_grad():
                n = flat.shape[0]
                self.running_mean[slot].lerp_(mean, self.momentum)
                self.running_var[slot].lerp_(var * n / max(n - 1, 1), self.momentum)
            return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias
        # The same affine map from the running estimates, as one fused op (inference speed).
        return F.batch_norm(x.reshape(-1, x.shape[-1]), self.running_mean[slot],
                            self.running_var[slot], self.weight, self.bias, False, 0.0,
                            self.eps).reshape(x.shape)
