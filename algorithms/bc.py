"""Behaviour cloning (BC) with parameter sharing — the offline MARL floor.

Each agent's action is predicted from its own observation (plus, optionally, the global state)
and a one-hot agent id by one MLP shared by all agents; unavailable actions are masked out of
the softmax and the loss is the cross-entropy with the dataset's actions:

    L(θ) = E_{(o_i, a_i) ~ D} [ -log softmax(mask(f_θ([o_i, onehot(i)]), avail_i))[a_i] ]

Greedy (argmax) actions at evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from marlbench.api import Algorithm, AlgorithmSpec, EnvInfo, Policy, hookimpl
from marlbench.data import OfflineDataset
from marlbench.nn import FixedNormalizer, agent_one_hot, mask_logits, mlp
from marlbench.policies import FeedForwardPolicy


@dataclass
class BCConfig:
    # MLP agent with 2 hidden layers of 128 units: AlberDICE repo (the paper's RWARE datasets
    # and BC baseline), pymarl default.yaml `rnn_hidden_dim: 128`, modules/agents/mlp_agent.py.
    hidden: int = 128
    layers: int = 2
    lr: float = 5e-4  # AlberDICE repo default.yaml `lr: 0.0005`
    grad_clip: float = 10.0  # AlberDICE repo default.yaml `grad_norm_clip: 10`
    # Transitions per update. AlberDICE samples 32 episodes; 256 agent-steps x n agents is the
    # usual single-agent BC batch and keeps one update ~1 ms on a CPU.
    batch_size: int = 256
    steps: int = 5000  # default budget: converges on rware-tiny-2ag expert (see README figures)
    use_state: bool = False  # decentralised execution: own observation only (as in MADT's BC)
    agent_id: bool = True  # one-hot id lets the shared network specialise per agent
    normalize_obs: bool = True  # RWARE coordinates reach 20 while other features are 0/1

    def __post_init__(self):
        for name in ("hidden", "layers", "batch_size", "steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


class BCNet(nn.Module):
    def __init__(self, cfg: BCConfig, env: EnvInfo):
        super().__init__()
        self.cfg, self.n = cfg, env.n_agents
        in_dim = env.obs_dim + (env.state_dim if cfg.use_state else 0)
        self.norm = FixedNormalizer(in_dim)
        self.body = mlp(in_dim + (env.n_agents if cfg.agent_id else 0), cfg.hidden, cfg.layers,
                        env.n_actions)

    def features(self, obs: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """obs [..., n, obs_dim], state [..., state_dim] -> [..., n, in_dim] (unnormalised)."""
        if self.cfg.use_state:
            state = state.unsqueeze(-2).expand(*obs.shape[:-1], state.shape[-1])
            return torch.cat([obs, state], -1)
        return obs

    def forward(self, obs: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        x = self.features(obs, state)
        if self.cfg.normalize_obs:
            x = self.norm(x)
        if self.cfg.agent_id:
            x = torch.cat([x, agent_one_hot(self.n, x.shape[:-2], x.device)], -1)
        return self.body(x)


class BC(Algorithm):
    Config = BCConfig

    def __init__(self, config: BCConfig, env: EnvInfo, device: torch.device, seed: int):
        super().__init__(config, env, device, seed)
        self.net = BCNet(config, env).to(device)

    def setup(self, data: OfflineDataset) -> None:
        self.data, self.rng = data, np.random.default_rng(self.seed)
        self.net.norm.fit(self.net.features(data.obs, data.state))
        self.opt = torch.optim.Adam(self.net.parameters(), lr=self.config.lr)

    def update(self) -> dict[str, float]:
        self.net.train()
        b = self.data.transitions(self.config.batch_size, self.rng, self.device)
        logits = mask_logits(self.net(b.obs, b.state), b.avail)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b.actions.reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad = nn.utils.clip_grad_norm_(self.net.parameters(), self.config.grad_clip)
        self.opt.step()
        acc = (logits.argmax(-1) == b.actions).float().mean()
        return {"loss": loss.item(), "accuracy": acc.item(), "grad_norm": grad.item()}

    def policy(self, greedy: bool = False, seed: int = 0) -> Policy:
        return FeedForwardPolicy(self.net, self.net, self.device, greedy, seed)

    def modules(self) -> dict[str, nn.Module]:
        return {"net": self.net}


@hookimpl
def marlbench_algorithms() -> list[AlgorithmSpec]:
    return [AlgorithmSpec(
        name="bc", cls=BC, description="behaviour cloning, shared MLP with agent id",
        paper="Fujimoto et al. 2019 (as the BC baseline of MADS4, AAMAS 2026, Table 1)",
        execution="decentralised", uses_global_state=False)]
