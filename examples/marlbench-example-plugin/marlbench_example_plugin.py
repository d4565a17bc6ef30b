"""A complete third-party marlbench algorithm in one file: linear softmax behaviour cloning.

Install it next to marlbench (``pip install ./examples/marlbench-example-plugin``) and
``marlbench run --algo linear-bc --env rware-tiny-2ag`` works: marlbench finds it through the
``marlbench`` entry-point group declared in this package's pyproject.toml.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from marlbench.api import Algorithm, AlgorithmSpec, Policy, hookimpl


@dataclass
class LinearBCConfig:
    lr: float = 1e-2  # plain Adam on a convex loss tolerates a large step
    batch_size: int = 512
    steps: int = 2000

    def __post_init__(self):
        if self.lr <= 0 or self.batch_size <= 0 or self.steps <= 0:
            raise ValueError("lr, batch_size and steps must be positive")


class LinearBC(Algorithm):
    """Logits = W [obs_i, onehot(i)] + b, shared by all agents; masked cross-entropy."""

    Config = LinearBCConfig

    def __init__(self, config, env, device, seed):
        super().__init__(config, env, device, seed)
        self.net = nn.Linear(env.obs_dim + env.n_agents, env.n_actions).to(device)

    def _logits(self, obs: torch.Tensor, avail: torch.Tensor) -> torch.Tensor:
        ids = torch.eye(self.env.n_agents, device=obs.device).expand(*obs.shape[:-1],
                                                                       self.env.n_agents)
        return self.net(torch.cat([obs, ids], -1)).masked_fill(~avail, -1e9)

    def setup(self, data):
        self.data, self.rng = data, np.random.default_rng(self.seed)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=self.config.lr)

    def update(self):
        b = self.data.transitions(self.config.batch_size, self.rng, self.device)
        logits = self._logits(b.obs, b.avail)
        loss = F.cross_entropy(logits.flatten(0, -2), b.actions.flatten())
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": loss.item()}

    def policy(self, greedy=False, seed=0) -> Policy:
        return LinearPolicy(self, greedy, seed)

    def modules(self):
        return {"net": self.net}


class LinearPolicy(Policy):
    def __init__(self, algo: LinearBC, greedy: bool, seed: int):
        self.algo, self.greedy = algo, greedy
        self.gen = torch.Generator().manual_seed(seed)

    def reset(self, n_envs):
        pass  # memoryless

    @torch.inference_mode()
    def act(self, obs, state, avail):
        logits = self.algo._logits(torch.as_tensor(obs), torch.as_tensor(avail))
        if self.greedy:
            return logits.argmax(-1).numpy()
        probs = torch.softmax(logits, -1).reshape(-1, logits.shape[-1])
        return torch.multinomial(probs, 1, generator=self.gen).reshape(logits.shape[:-1]).numpy()


@hookimpl
def marlbench_algorithms():
    return [AlgorithmSpec(name="linear-bc", cls=LinearBC,
                          description="example plugin: linear softmax behaviour cloning")]
