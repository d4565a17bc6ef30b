"""PPO pieces shared by the on-policy algorithms (MAPPO; MADS4's fine-tuning stage).

MAPPO (Yu et al. 2021, and its repository marlbenchmark/on-policy) as equations, over entries
(t, env, agent) weighted by a mask m (valid steps of alive agents):

    r = exp(log π(a|·) - log π_old(a|·))
    L_actor  = -Σ m min(r Â, clip(r, 1-ε, 1+ε) Â) / Σ m                    (clipped surrogate)
    L_critic =  Σ m max(huber(V - R̂), huber(V_old + clip(V - V_old, ±ε) - R̂)) / Σ m

with R̂ the GAE return, normalised by running statistics when value normalisation is on
(on-policy utils/valuenorm.py), and Â the GAE advantage standardised over the masked entries.

GAE with time limits as truncations (Pardo et al. 2018, "Time Limits in Reinforcement
Learning"): a step that ends an episode by termination has no successor value; one that ends it
by a time limit bootstraps from the value of the state it reached; either way the trace stops:

    δ_t = r_t + γ (1 - term_t) V'_t - V_t,      Â_t = δ_t + γ λ (1 - end_t) Â_{t+1}

where V'_t is the value of the state step t reached (`next_values`).
"""

from __future__ import annotations

import torch
from torch import nn

from marlbench.nn.common import masked_mean


class LayerNormMLP(nn.Module):
    """LayerNorm(input) -> [Linear, ReLU, LayerNorm] x layers -> Linear: on-policy's MLPBase
    with feature normalisation, orthogonal weights and zero biases. The parameter names (in_norm,
    hidden.k, hidden_norm.k, out) are the `marlbench-mlp-policy-v1` policy-file layout."""

    def __init__(self, in_dim: int, hidden: int, layers: int, out_dim: int, out_gain: float):
        super().__init__()
        self.in_norm = nn.LayerNorm(in_dim)
        dims = [in_dim] + [hidden] * layers
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.hidden_norm = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.out = nn.Linear(hidden, out_dim)
        for lin in self.hidden:
            nn.init.orthogonal_(lin.weight, nn.init.calculate_gain("relu"))
            nn.init.zeros_(lin.bias)
        nn.init.orthogonal_(self.out.weight, out_gain)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.in_norm(x)
        for lin, norm in zip(self.hidden, self.hidden_norm):
            x = norm(torch.relu(lin(x)))
        return self.out(x)


class ValueNorm(nn.Module):
    """Running mean/variance of value targets, debiased (on-policy utils/valuenorm.py)."""

    def __init__(self, beta: float = 0.99999, eps: float = 1e-5):
        super().__init__()
        self.beta, self.eps = beta, eps
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("mean_sq", torch.zeros(()))
        self.register_buffer("debias", torch.zeros(()))

    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.debias.clamp_min(self.eps)
        mean = self.mean / d
        return mean, (self.mean_sq / d - mean**2).clamp_min(1e-2)

    @torch.no_grad()
    def update(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Fold in the targets `x` (only the entries where `mask` is set, when given)."""
        if mask is not None:
            x = x[mask.bool()]
            if not x.numel():
                return
        b = self.beta
        self.mean.mul_(b).add_(x.mean() * (1 - b))
        self.mean_sq.mul_(b).add_((x**2).mean() * (1 - b))
        self.debias.mul_(b).add_(1 - b)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, var = self._stats()
        return (x - mean) / var.sqrt()

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        mean, var = self._stats()
        return x * var.sqrt() + mean


def alive_agents(avail: torch.Tensor) -> torch.Tensor:
    """An agent whose only available action is the no-op is dead (SMAC's and SMAX's rule)."""
    return avail.sum(-1) > 1


def huber(x: torch.Tensor, delta: float) -> torch.Tensor:
    a = x.abs()
    return torch.where(a <= delta, 0.5 * x**2, delta * (a - 0.5 * delta))


def gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor,
        terminated: torch.Tensor, ended: torch.Tensor, gamma: float, lam: float
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(γ, λ) over time-major tensors [T, B, ...] (unnormalised values).

    rewards [T, B, ...] (broadcast to the values' shape: a team reward for every agent),
    values V(s_t), next_values V(s_{t+1}) of the state each step reached (the final state at an
    episode end, before any reset), terminated [T, B] (no successor value), ended [T, B]
    (terminated or truncated: the trace stops). Returns (advantages, returns = Â + V)."""
    extra = values.dim() - terminated.dim()
    expand = lambda x: x.to(values.dtype).reshape(*x.shape, *[1] * extra)  # noqa: E731
    cont, keep = 1.0 - expand(terminated), 1.0 - expand(ended)
    rewards = rewards.reshape(*rewards.shape, *[1] * (values.dim() - rewards.dim()))
    adv = torch.zeros_like(values)
    running = torch.zeros_like(values[0])
    for t in reversed(range(values.shape[0])):
        delta = rewards[t] + gamma * cont[t] * next_values[t] - values[t]
        running = delta + gamma * lam * keep[t] * running
        adv[t] = running
    return adv, adv + values


def next_state_values(values: torch.Tensor, last_value: torch.Tensor, ended: torch.Tensor,
                      final_values: torch.Tensor) -> torch.Tensor:
    """V(s_{t+1}) for `gae` from a rollout of consecutive steps: the next step's value, the
    value after the rollout for its last step, and `final_values` (the value of the state an
    episode ended in, [T, B, ...]) where an episode ended at t."""
    nxt = torch.cat([values[1:], last_value[None]], 0)
    extra = values.dim() - ended.dim()
    return torch.where(ended.bool().reshape(*ended.shape, *[1] * extra), final_values, nxt)


def standardise(adv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(Â - mean) / (std + 1e-5) over the masked entries (on-policy's advantage normalisation)."""
    mean = masked_mean(adv, mask)
    std = masked_mean((adv - mean) ** 2, mask).sqrt()
    return (adv - mean) / (std + 1e-5)


def clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor,
                      mask: torch.Tensor, clip: float
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped policy loss; returns (loss, ratio, fraction of clipped ratios)."""
    ratio = torch.exp(logp - old_logp)
    surrogate = torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)
    clipped = masked_mean(((ratio - 1).abs() > clip).float(), mask)
    return -masked_mean(surrogate, mask), ratio, clipped


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, targets: torch.Tensor,
                       mask: torch.Tensor, clip: float, delta: float) -> torch.Tensor:
    """MAPPO's value loss: the worse of the plain and the clipped prediction, Huber-weighted."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return masked_mean(torch.max(huber(targets - values, delta), huber(targets - clipped, delta)),
                       mask)
