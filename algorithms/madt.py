"""Multi-Agent Decision Transformer (MADT; Meng et al. 2021) with parameter sharing.

Every agent is a decision transformer over its own trajectory: one GPT shared by all agents
(its agent id one-hot is part of the observation), and nothing passes between agents. Agent i
at step t contributes three tokens, the team return-to-go R_t, its observation o_t^i and its
action a_t^i, each embedded (Linear or Embedding, then tanh) plus a learned timestep embedding.
A causal GPT over the last K steps reads the output at the o_t^i token and predicts a_t^i:

    L(θ) = E_{K-step windows ~ D} [ mean_{i, valid t, |avail_t^i| > 1} -log softmax(
               mask(W h_θ(R_{≤t}, o^i_{≤t}, a^i_{<t}), avail_t^i))[a_t^i] ]

with unavailable actions masked out of the softmax; steps where the agent had a single
available action (a dead SMAX agent's forced stop) are left out of the loss and the accuracy
(`marlbench.nn.choice_mask`), though they stay in the context. At evaluation R_0 is the target
return (10% above the best return in the dataset, the rule of MADS4 §5.2, shared with MADS4 as
`marlbench.nn.target_return`) and R_{t+1} = R_t - r_t.

Inference: within the first K steps every new token is appended to a KV cache
(`marlbench.nn.gpt`), which is exactly the training forward over a window that starts at step
0; from step K on, the last K steps are recomputed as one window at every step, as in the MADT
and DT repos, so the evaluated policy is the trained one.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from marlbench.api import Algorithm, AlgorithmSpec, EnvInfo, Policy, hookimpl, validate_config
from marlbench.data import OfflineDataset, TrajectoryBatch
from marlbench.nn import (
    TARGET_RETURN_SCALE,
    ActionSampler,
    FixedNormalizer,
    agent_inputs,
    choice_mask,
    mask_logits,
    masked_mean,
    optimizer_step,
    return_to_go_scale,
    target_return,
)
from marlbench.nn.gpt import GPT, KVCache, weight_decay_groups

# The MADT authors' repo ("ReinholdM/Offline-Pre-trained-Multi-Agent-Decision-Transformer") is
# cited below as `MADT repo`; the Decision Transformer repo ("kzl/decision-transformer") as
# `DT repo`.


@dataclass
class MADTConfig:
    # Transformer size from the MADT repo, sc2/run_madt_sc2.py: GPTConfig(n_layer=2, n_head=2,
    # n_embd=32). The MADS4 authors' DT baseline (128-dim, 3 layers, 1 head, K=50; their repo
    # gym/experiment_warehouse.py) is `--set dim=128 layers=3 heads=1 mlp_ratio=4 context=50`
    # (+ dropout=0.1 for DT's GPT-2); on one CPU thread it takes ~3 s per update against
    # ~35 ms for this default, which is why it is not the default.
    dim: int = 32
    layers: int = 2
    heads: int = 2
    mlp_ratio: int = 2  # MADT repo sc2/models/gpt_model.py Block: Linear(n_embd, 2 * n_embd)
    dropout: float = 0.0  # MADT repo GPTConfig: embd_pdrop = resid_pdrop = attn_pdrop = 0.
    # Context K in steps (3K tokens). The MADT repo's short default (--context_length 1) makes
    # the model memoryless (BC with return conditioning) while RWARE's 3x3 views make memory
    # useful; 20 is DT's default context (DT repo gym/experiment.py `--K 20`), between that
    # and the MADS4 DT baseline's 50.
    context: int = 20
    lr: float = 5e-4  # MADT repo run_madt_sc2.py `--offline_lr 5e-4`
    betas: tuple[float, float] = (0.9, 0.95)  # MADT repo framework/trainer.py TrainerConfig
    weight_decay: float = 0.1  # MADT repo TrainerConfig, on linear weights only
    grad_clip: float = 0.5  # MADT repo TrainerConfig `grad_norm_clip = 0.5`
    # Agent windows per update: MADT repo `--offline_mini_batch_size 128` (each sample there is
    # one agent's window); drawn as 128 // n_agents episode windows with every agent in them.
    batch_size: int = 128
    # Default budget: 10 epochs of the MADT repo (`--offline_epochs 10`) over a 200-episode
    # rware-tiny-2ag dataset are 10 * 200 * 500 * 2 / 128 ≈ 15.6k updates. On rware-tiny-2ag
    # expert, training accuracy goes 0.964 -> 0.966 from 8k to 10k (loss still falling slowly).
    steps: int = 10000
    # Return-to-go the policy is conditioned on at evaluation; None = the best dataset return
    # raised by target_scale (MADS4 §5.2: "10% higher than the highest returns encountered in
    # the offline datasets", the rule the MADS4 paper evaluates its MADT baseline with).
    target_return: float | None = None
    target_scale: float = TARGET_RETURN_SCALE
    normalize_obs: bool = True  # RWARE coordinates reach 20 while other features are 0/1

    def __post_init__(self):
        self.betas = tuple(self.betas)  # a list when read back from config.json
        validate_config(self)  # every numeric field by its meaning (marlbench.config)
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if len(self.betas) != 2:
            raise ValueError(f"betas must be two numbers, got {self.betas}")


class MADTNet(nn.Module):
    """Token encoders, the GPT trunk and the action head, shared by all agents."""

    def __init__(self, cfg: MADTConfig, env: EnvInfo):
        super().__init__()
        d, self.n = cfg.dim, env.n_agents
        self.cfg, self.episode_limit = cfg, env.episode_limit
        self.norm = FixedNormalizer(env.obs_dim)
        # Encoders as in the MADT repo (sc2/models/gpt_model.py): Linear/Embedding + tanh.
        self.embed_return = nn.Sequential(nn.Linear(1, d), nn.Tanh())
        self.embed_obs = nn.Sequential(nn.Linear(env.obs_dim + env.n_agents, d), nn.Tanh())
        self.embed_action = nn.Sequential(nn.Embedding(env.n_actions, d), nn.Tanh())
        nn.init.normal_(self.embed_action[0].weight, 0.0, 0.02)
        # Timestep embedding, zero at start (MADT repo `global_pos_emb`, torch.zeros): tokens
        # begin as their content and learn how much time matters.
        self.embed_time = nn.Embedding(env.episode_limit, d)
        nn.init.zeros_(self.embed_time.weight)
        # A window of K steps ends at o_t, 3K - 1 tokens back to R_{t-K+1}.
        self.gpt = GPT(d, cfg.layers, cfg.heads, span=3 * cfg.context - 1,
                       mlp_ratio=cfg.mlp_ratio, dropout=cfg.dropout)
        self.head = nn.Linear(d, env.n_actions, bias=False)

    def agent_inputs(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [..., n, obs_dim] -> normalised obs with the agent's one-hot id appended."""
        return agent_inputs(obs, self.norm if self.cfg.normalize_obs else None)

    def _time(self, t: torch.Tensor) -> torch.Tensor:
        return self.embed_time(t.clamp(0, self.episode_limit - 1))

    def forward(self, rtg: torch.Tensor, obs: torch.Tensor, actions: torch.Tensor,
                timesteps: torch.Tensor) -> torch.Tensor:
        """Per-agent sequences: rtg [S, T] (scaled), obs [S, T, obs_dim + n] (from
        `agent_inputs`), actions [S, T], timesteps [S, T] -> action logits [S, T, A]."""
        time = self._time(timesteps)
        tokens = torch.stack([self.embed_return(rtg.unsqueeze(-1)) + time,
                              self.embed_obs(obs) + time,
                              self.embed_action(actions) + time], 2)
        S, T = rtg.shape
        x = tokens.reshape(S, 3 * T, -1)[:, :-1]  # the last action is only ever a target
        return self.head(self.gpt(x)[:, 1::3])  # outputs at the observation tokens

    def step(self, cache: KVCache, rtg: torch.Tensor, obs: torch.Tensor,
             prev_action: torch.Tensor | None, t: int) -> torch.Tensor:
        """One step of S sequences whose past is in `cache`: rtg [S], obs [S, obs_dim + n],
        the previous step's actions [S] (None at t = 0) -> logits [S, A]."""
        now = self._time(torch.full(rtg.shape, t, dtype=torch.long, device=rtg.device))
        new = [self.embed_return(rtg.unsqueeze(-1)) + now, self.embed_obs(obs) + now]
        if prev_action is not None:
            new.insert(0, self.embed_action(prev_action) + self._time(
                torch.full(rtg.shape, t - 1, dtype=torch.long, device=rtg.device)))
        return self.head(self.gpt.step(torch.stack(new, 1), cache)[:, -1])


def agent_sequences(x: torch.Tensor) -> torch.Tensor:
    """[B, T, n, ...] -> [B * n, T, ...]: each agent's trajectory is its own sequence."""
    x = x.transpose(1, 2)
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def team_sequences(x: torch.Tensor, n_agents: int) -> torch.Tensor:
    """[B, T] per-step team quantity (return-to-go, timestep, mask) -> [B * n, T]."""
    return agent_sequences(x.unsqueeze(2).expand(-1, -1, n_agents))


class MADT(Algorithm):
    Config = MADTConfig

    def __init__(self, config: MADTConfig, env: EnvInfo, device: torch.device, seed: int):
        super().__init__(config, env, device, seed)
        self.net = MADTNet(config, env).to(device)
        self.target_return, self.return_scale = 0.0, 1.0

    def setup(self, data: OfflineDataset) -> None:
        self.data, self.rng = data, np.random.default_rng(self.seed)
        self.net.norm.fit(data.obs)
        cfg = self.config
        self.target_return = (cfg.target_return if cfg.target_return is not None
                              else target_return(data.max_return, cfg.target_scale))
        # Returns-to-go enter the network divided by the best return's size (at least 1), so
        # the conditioning input is O(1) on any task (DT scales by a fixed per-env constant).
        self.return_scale = return_to_go_scale(data.max_return)
        # Episodes are drawn in proportion to their length and a window's start uniformly
        # within its episode (the MADT repo indexes windows over all steps; DT weights
        # episodes by length).
        self.episode_p = data.length / data.length.sum()
        self.episodes_per_batch = max(1, self.config.batch_size // self.env.n_agents)
        self.opt = torch.optim.AdamW(weight_decay_groups(self.net, self.config.weight_decay),
                                     lr=self.config.lr, betas=self.config.betas)

    def loss(self, batch: TrajectoryBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy with the dataset's actions and the argmax's agreement with them, over
        the real steps at which the agent had a choice."""
        n = self.env.n_agents
        actions = agent_sequences(batch.actions)
        avail = agent_sequences(batch.avail)
        logits = self.net(team_sequences(batch.rtg, n) / self.return_scale,
                          agent_sequences(self.net.agent_inputs(batch.obs)), actions,
                          team_sequences(batch.timesteps, n))
        logits = mask_logits(logits, avail)
        counted = team_sequences(batch.mask, n) & choice_mask(avail)  # no choice: 0, not NaN
        nll = F.cross_entropy(logits.flatten(0, -2), actions.flatten(), reduction="none")
        loss = masked_mean(nll.view_as(counted), counted)
        accuracy = masked_mean((logits.argmax(-1) == actions).float(), counted)
        return loss, accuracy

    def update(self) -> dict[str, float]:
        self.net.train()
        episodes = self.rng.choice(len(self.episode_p), self.episodes_per_batch, p=self.episode_p)
        batch = self.data.trajectories(len(episodes), self.rng, length=self.config.context,
                                       episodes=episodes, device=self.device)
        loss, accuracy = self.loss(batch)
        grad = optimizer_step(self.opt, loss, self.net.parameters(), self.config.grad_clip)
        return {"loss": loss.item(), "accuracy": accuracy.item(), "grad_norm": grad.item()}

    def policy(self, greedy: bool = False, seed: int = 0) -> Policy:
        return MADTPolicy(self.net, self.env, self.target_return, self.return_scale,
                          self.device, greedy, seed)

    def modules(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def extra_state(self) -> dict[str, float]:
        return {"target_return": self.target_return, "return_scale": self.return_scale}

    def load_extra_state(self, state) -> None:
        self.target_return = float(state["target_return"])
        self.return_scale = float(state["return_scale"])


class MADTPolicy(Policy):
    """Each agent conditions on the team return-to-go still to collect and its own last K steps.

    While t < K the context is the whole episode so far, appended to a KV cache (exactly the
    training forward over a window starting at step 0). From t = K on, the window's first step
    drops out at every step, which a cache cannot undo in deeper layers (their keys already
    mixed it in), so the last K steps are recomputed as one training window, as the MADT and
    DT repos do at every step.
    """

    def __init__(self, net: MADTNet, env: EnvInfo, target_return: float, return_scale: float,
                 device: torch.device, greedy: bool, seed: int):
        self.net, self.env, self.device = net.eval(), env, device
        self.target_return, self.return_scale = target_return, return_scale
        self.K = net.cfg.context
        self.choose = ActionSampler(greedy, seed, device)

    def reset(self, n_envs: int) -> None:
        self.choose.reset(n_envs)
        self.cache, self.t, self.prev = KVCache(), 0, None
        self.rtg = torch.full((n_envs,), self.target_return, device=self.device)
        # For the window forward: the last K steps' (scaled return-to-go, agent inputs) and the
        # actions taken at the K - 1 steps before the current one.
        self.window: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=self.K)
        self.taken: deque[torch.Tensor] = deque(maxlen=self.K - 1)

    @torch.inference_mode()
    def act(self, obs: np.ndarray, state: np.ndarray, avail: np.ndarray) -> np.ndarray:
        B, n = obs.shape[:2]
        x = self.net.agent_inputs(torch.as_tensor(obs, device=self.device)).reshape(B * n, -1)
        rtg = (self.rtg / self.return_scale).repeat_interleave(n)
        self.window.append((rtg, x))
        if self.t < self.K:
            logits = self.net.step(self.cache, rtg, x, self.prev, self.t)
        else:
            rtgs, xs = (torch.stack(v, 1) for v in zip(*self.window))
            # The current step's action is only ever a target: any value stands in for it.
            acts = torch.stack([*self.taken, torch.zeros_like(self.prev)], 1)
            steps = torch.arange(self.t - self.K + 1, self.t + 1, device=self.device)
            logits = self.net(rtgs, xs, acts, steps.expand(B * n, -1))[:, -1]
        actions = self.choose(logits.reshape(B, n, -1), torch.as_tensor(avail, device=self.device))
        self.prev, self.t = actions.reshape(B * n), self.t + 1
        self.taken.append(self.prev)
        return actions.cpu().numpy()

    def observe(self, rewards: np.ndarray) -> None:
        self.rtg -= torch.as_tensor(rewards, dtype=torch.float32, device=self.device)


@hookimpl
def marlbench_algorithms() -> list[AlgorithmSpec]:
    return [AlgorithmSpec(
        name="madt", cls=MADT,
        description="multi-agent decision transformer: shared GPT over (return-to-go, obs, "
                    "action) tokens with agent id, K-step context, no inter-agent cooperation",
        paper="Meng et al. 2021, Offline Pre-trained Multi-Agent Decision Transformer "
              "(arXiv:2112.02845)",
        execution="decentralised", uses_global_state=False)]
