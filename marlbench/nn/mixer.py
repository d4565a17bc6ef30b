"""Monotonic linear value mixing for value-decomposition methods (ICQ, OMIGA).

    Q_tot(s, a) = sum_i w_i(s) Q_i(o_i, a_i) + b(s),   w_i(s) >= 0

The weights and bias come from a hypernetwork on the global state. Non-negative weights keep
Q_tot monotonic in every Q_i (QMIX's condition for decentralised greedy actions to be jointly
greedy); linearity lets a global objective split exactly into per-agent terms weighted by
w_i(s), which is what ICQ's decomposed actor update and OMIGA's global-to-local value
regularisation rely on.
"""

from __future__ import annotations

import torch
from torch import nn


class LinearMixer(nn.Module):
    """State-conditioned non-negative weights (and optionally a bias) over the agents' values.

    `normalize` rescales the weights to sum to one over agents (Q_tot is then a convex
    combination of the agents' values, ICQ's form); `bias` adds the state-dependent b(s)
    (OMIGA's form).
    """

    def __init__(self, state_dim: int, n_agents: int, hidden: int, normalize: bool = False,
                 bias: bool = True):
        super().__init__()
        self.normalize = normalize
        self.hyper = nn.Sequential(nn.Linear(state_dim, hidden), nn.ReLU())
        self.to_weights = nn.Linear(hidden, n_agents)
        self.to_bias = nn.Linear(hidden, 1) if bias else None

    def weights_and_bias(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """state [..., state_dim] -> weights [..., n_agents] (>= 0), bias [...]."""
        h = self.hyper(state)
        w = self.to_weights(h).abs()
        if self.normalize:
            w = w / w.sum(-1, keepdim=True).clamp_min(1e-8)
        b = self.to_bias(h).squeeze(-1) if self.to_bias is not None else w.new_zeros(w.shape[:-1])
        return w, b

    def forward(self, agent_values: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """agent_values [..., n_agents], state [..., state_dim] -> Q_tot [...]."""
        w, b = self.weights_and_bias(state)
        return (w * agent_values).sum(-1) + b
