"""Behaviour cloning (BC) with parameter sharing — the offline MARL floor.

Each agent's action is predicted from its own observation (plus, optionally, the global state)
and a one-hot agent id by one MLP shared by all agents; unavailable actions are masked out of
the softmax and the loss is the cross-entropy with the dataset's actions:

    L(θ) = E_{(o_i, a_i) ~ D, |avail_i| > 1} [
               -log softmax(mask(f_θ([o_i, onehot(i)]), avail_i))[a_i] ]

Steps where the agent had a single available action (a dead SMAX agent's forced stop) are left
out of the loss and the accuracy (`marlbench.nn.choice_mask`). At evaluation actions are
sampled from the masked softmax (the argmax with `--greedy`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from marlbench.api import Algorithm, AlgorithmSpec, EnvInfo, Policy, hookimpl, validate_config
from marlbench.data import OfflineDataset, TransitionBatch
from marlbench.nn import (
    FixedNormalizer,
    agent_inputs,
    choice_mask,
    mask_logits,
    masked_mean,
    mlp,
    optimizer_step,
)
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
        validate_config(self)  # every numeric field by its meaning (marlbench.config)


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
        norm = self.norm if self.cfg.normalize_obs else None
        if self.cfg.agent_id:
            return self.body(agent_inputs(x, norm))
        return self.body(norm(x) if norm is not None else x)


class BC(Algorithm):
    Config = BCConfig

    def __init__(self, config: BCConfig, env: EnvInfo, device: torch.device, seed: int):
        super().__init__(config, env, device, seed)
        self.net = BCNet(config, env).to(device)

    def setup(self, data: OfflineDataset) -> None:
        self.data, self.rng = data, np.random.default_rng(self.seed)
        self.net.norm.fit(self.net.features(data.obs, data.state))
        self.opt = torch.optim.Adam(self.net.parameters(), lr=self.config.lr)

    def loss(self, batch: TransitionBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy with the dataset's actions and the argmax's agreement with them, over
        the agent-steps that had a choice."""
        logits = mask_logits(self.net(batch.obs, batch.state), batch.avail)
        chose = choice_mask(batch.avail)  # a batch without any choice gives 0, not NaN
        nll = F.cross_entropy(logits.flatten(0, -2), batch.actions.flatten(), reduction="none")
        loss = masked_mean(nll.view_as(chose), chose)
        accuracy = masked_mean((logits.argmax(-1) == batch.actions).float(), chose)
        return loss, accuracy

    def update(self) -> dict[str, float]:
        self.net.train()
        batch = self.data.transitions(self.config.batch_size, self.rng, self.device)
        loss, accuracy = self.loss(batch)
        grad = optimizer_step(self.opt, loss, self.net.parameters(), self.config.grad_clip)
        return {"loss": loss.item(), "accuracy": accuracy.item(), "grad_norm": grad.item()}

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
