"""A complete third-party marlbench algorithm in one file: linear softmax behaviour cloning.

Install it next to marlbench (``pip install ./examples/marlbench-example-plugin``) and
``marlbench run --algo linear-bc --env rware-tiny-2ag`` works: marlbench finds it through the
``marlbench`` entry-point group declared in this package's pyproject.toml.

What a plugin author writes: a config dataclass (with `steps`, the default budget), the model,
the loss and update, and a policy; the helpers (agent ids, action masking, the optimiser
step, seeded sampling in `FeedForwardPolicy`, config checks) come from `marlbench.api`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from marlbench.api import (
    Algorithm,
    AlgorithmSpec,
    FeedForwardPolicy,
    agent_inputs,
    hookimpl,
    mask_logits,
    optimizer_step,
    validate_config,
)


@dataclass
class LinearBCConfig:
    lr: float = 1e-2  # plain Adam on a convex loss tolerates a large step
    batch_size: int = 512
    steps: int = 2000

    def __post_init__(self):
        validate_config(self)  # lr, batch_size, steps: positive (by their names)


class LinearBC(Algorithm):
    """Logits = W [obs_i, onehot(i)] + b, shared by all agents; masked cross-entropy."""

    Config = LinearBCConfig

    def __init__(self, config, env, device, seed):
        super().__init__(config, env, device, seed)
        self.net = nn.Linear(env.obs_dim + env.n_agents, env.n_actions).to(device)

    def logits(self, obs: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return self.net(agent_inputs(obs))  # [..., n, A]

    def setup(self, data):
        self.data, self.rng = data, np.random.default_rng(self.seed)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=self.config.lr)

    def update(self):
        b = self.data.transitions(self.config.batch_size, self.rng, self.device)
        logits = mask_logits(self.logits(b.obs, b.state), b.avail)
        loss = F.cross_entropy(logits.flatten(0, -2), b.actions.flatten())
        optimizer_step(self.opt, loss, self.net.parameters())
        return {"loss": loss.item()}

    def policy(self, greedy=False, seed=0):
        return FeedForwardPolicy(self.net, self.logits, self.device, greedy, seed)

    def modules(self):
        return {"net": self.net}


@hookimpl
def marlbench_algorithms():
    return [AlgorithmSpec(name="linear-bc", cls=LinearBC,
                          description="example plugin: linear softmax behaviour cloning")]
