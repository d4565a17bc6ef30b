"""Small building blocks: MLPs, fixed input normalisation, action masking, agent ids, the
optimiser step and the return-conditioning rule (one of each, shared by the algorithms)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
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


def select_actions(logits: torch.Tensor, avail: torch.Tensor,
                   noise: torch.Tensor | None = None) -> torch.Tensor:
    """The argmax over the available actions of logits [..., A] (greedy), or of logits plus
    Gumbel `noise` (a sample from softmax(logits) over the available actions) -> [...]."""
    return mask_logits(logits if noise is None else logits + noise, avail).argmax(-1)


class ActionSampler:
    """A policy's action choice over `n_envs` environments in lockstep: greedy, or sampled
    with one random stream per episode.

    Episodes are numbered in the order the policy starts them (`reset(n)` starts the next
    n), and episode e of a policy with seed s draws from its own generator seeded by (s, e).
    A batched evaluation (episodes 0..k-1 together) therefore samples exactly what running
    them one at a time does: the returns do not depend on `--eval-parallel`. Sampling is
    Gumbel-max, argmax(logits + G) with G = -log(Exp(1)), equivalent to softmax sampling.
    """

    def __init__(self, greedy: bool, seed: int, device: torch.device | str = "cpu"):
        self.greedy, self.seed, self.device = greedy, seed, torch.device(device)
        self.started, self.streams = 0, []

    def reset(self, n_envs: int) -> None:
        first, self.started = self.started, self.started + n_envs
        self.streams = [torch.Generator(self.device).manual_seed(int(
            np.random.SeedSequence(self.seed, spawn_key=(e,)).generate_state(1, np.uint64)[0]))
            for e in range(first, first + n_envs)]

    def noise(self, shape: tuple[int, ...]) -> torch.Tensor | None:
        """Gumbel noise [n_envs, *shape], row e from episode e's stream; None when greedy."""
        if self.greedy:
            return None
        if not self.streams:
            raise RuntimeError("the policy samples per episode: call reset(n_envs) before act")
        exp = [torch.empty(shape, device=self.device).exponential_(generator=g)
               for g in self.streams]
        return torch.stack(exp).log_().neg_()

    def __call__(self, logits: torch.Tensor, avail: torch.Tensor) -> torch.Tensor:
        """logits [n_envs, ..., A], avail alike -> actions [n_envs, ...]."""
        if not self.greedy and self.streams and logits.shape[0] != len(self.streams):
            raise ValueError(f"ActionSampler was reset for {len(self.streams)} environments, "
                             f"got logits for {logits.shape[0]}")
        return select_actions(logits, avail, self.noise(tuple(logits.shape[1:])))


def choice_mask(avail: torch.Tensor) -> torch.Tensor:
    """avail [..., A] -> bool [...]: True where the agent had more than one action to choose from.

    A step with a single available action is forced and says nothing about the policy: the
    data marks a dead agent this way (SMAX leaves only `stop` available to a dead ally, SMAC
    only `no-op`). Imitation losses and their accuracy leave such steps out, else the forced
    steps (zero loss, always right) shrink the loss and inflate the accuracy.
    """
    return avail.sum(-1) > 1


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def agent_one_hot(n_agents: int, batch_shape: tuple[int, ...],
                  device: torch.device | str | None = None) -> torch.Tensor:
    """[*batch_shape, n_agents, n_agents] identity rows, one per agent."""
    eye = torch.eye(n_agents, device=device)
    return eye.expand(*batch_shape, n_agents, n_agents)


def agent_inputs(obs: torch.Tensor, normalizer: nn.Module | None = None) -> torch.Tensor:
    """obs [..., n, d] -> [..., n, d + n]: each agent's observation (scaled by `normalizer`
    when given) with its one-hot agent id appended, the input of a network shared by the
    agents (parameter sharing with ids, as in pymarl's agents)."""
    x = normalizer(obs) if normalizer is not None else obs
    ids = agent_one_hot(x.shape[-2], x.shape[:-2], x.device).to(x.dtype)
    return torch.cat([x, ids], -1)


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor,
                   params: Iterable[torch.Tensor], max_norm: float = math.inf) -> torch.Tensor:
    """One gradient step on `loss`: clear the gradients, backpropagate, clip the gradient of
    `params` to global norm `max_norm` (default: no clipping), step. Returns the norm before
    clipping (a tensor)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = nn.utils.clip_grad_norm_(params, max_norm)
    opt.step()
    return norm


# Return conditioning. At evaluation a return-conditioned policy is asked for 10% more than the
# best return in its dataset (MADS4 paper §5.2: "10% higher than the highest returns
# encountered in the offline datasets"; the MADT baseline there is evaluated the same way).
TARGET_RETURN_SCALE = 1.1


def target_return(best_return: float, scale: float = TARGET_RETURN_SCALE) -> float:
    """The return-to-go to condition on: the dataset's best return raised by `scale` - 1 of
    its size, so that it is raised also when the best return is negative."""
    return best_return + (scale - 1.0) * abs(best_return)


def return_to_go_scale(best_return: float) -> float:
    """Returns-to-go enter the networks divided by this: the best dataset return's size, at
    least 1, so the conditioning input is O(1) on any task while small returns (SMAX's are
    at most 2) are not blown up. The ratio of target to dataset returns is unchanged."""
    return max(abs(best_return), 1.0)


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
