"""Multi-Agent PPO (MAPPO; Yu et al. 2021, "The Surprising Effectiveness of PPO in Cooperative
Multi-Agent Games") — online: it trains by acting in the environment, without a dataset.

One actor shared by all agents acts on [o_i, onehot(i)]; a centralised critic predicts each
agent's value from the global state (with the agent's own observation and id: the paper's
agent-specific global state). Every update gathers `rollout` steps in `n_envs` envs, computes
GAE advantages, and runs `epochs` passes of the clipped PPO objective

    L_actor  = -E[min(r A, clip(r, 1-ε, 1+ε) A)] - c_H H[π],    r = π(a|o) / π_old(a|o)
    L_critic = E[max(huber(V - R̂), huber(clip(V, V_old ± ε) - R̂))]

with returns normalised by running statistics (ValueNorm), unavailable actions masked out of
π, and dead agents (only the no-op available) left out of both losses and shown to the critic
as zeros plus their id ("death masking"). A time limit is a truncation: GAE bootstraps from the
critic's value of the state the episode stopped in, with that state's own death mask. The PPO
pieces live in marlbench.nn.ppo (shared with MADS4's fine-tuning stage). Defaults follow the
authors' repository (marlbenchmark/on-policy: onpolicy/config.py and
scripts/train_smac_scripts/*.sh) except where a comment says otherwise.

This is the repository's MLP variant (`--algorithm_name mappo`); its SMAC scripts run the GRU
variant (rmappo). MLP keeps the behaviour policies that generate datasets memoryless, cheap to
run and exportable as small policy files.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from marlbench.api import (
    Algorithm,
    AlgorithmSpec,
    EnvInfo,
    EnvSpec,
    Policy,
    hookimpl,
    validate_config,
)
from marlbench.errors import MarlbenchError
from marlbench.nn import agent_one_hot, mask_logits, masked_mean, optimizer_step
from marlbench.nn.ppo import (
    LayerNormMLP,
    ValueNorm,
    alive_agents,
    clipped_surrogate,
    clipped_value_loss,
    gae,
    next_state_values,
    standardise,
)
from marlbench.policies import FeedForwardPolicy
from marlbench.vector import make_vector_env


@dataclass
class MAPPOConfig:
    hidden: int = 64  # config.py hidden_size 64
    layers: int = 2  # MLPBase: fc1 plus layer_N=1 fc2 blocks
    lr: float = 5e-4  # config.py lr and critic_lr 5e-4
    adam_eps: float = 1e-5  # config.py opti_eps
    n_envs: int = 8  # train_smac_*.sh --n_rollout_threads 8
    rollout: int = 400  # train_smac_*.sh --episode_length 400 (steps per env per update)
    epochs: int = 15  # config.py / train_smac_3m.sh ppo_epoch 15 (5m_vs_6m script: 10)
    minibatches: int = 1  # train_smac_*.sh --num_mini_batch 1
    clip: float = 0.2  # config.py clip_param 0.2 (5m_vs_6m script: 0.05)
    entropy_coef: float = 0.01  # config.py entropy_coef
    value_loss_coef: float = 1.0  # config.py value_loss_coef
    huber_delta: float = 10.0  # config.py huber_delta
    max_grad_norm: float = 10.0  # config.py max_grad_norm
    gamma: float = 0.99  # config.py gamma
    gae_lambda: float = 0.95  # config.py gae_lambda
    value_norm: bool = True  # config.py use_valuenorm
    gain: float = 0.01  # config.py gain: init scale of the action layer
    agent_specific_state: bool = True  # SMAC scripts' use_state_agent: critic sees [s, o_i, i]
    # A time limit is a truncation, as everywhere in marlbench (and Pardo et al. 2018): GAE
    # bootstraps from the value of the state it stopped in. on-policy's use_proper_time_limits
    # defaults to False (a time limit treated as terminal); set false to reproduce that.
    bootstrap_time_limits: bool = True
    steps: int = 3125  # updates: train_smac_*.sh --num_env_steps 1e7 / (8 envs x 400 steps)

    def __post_init__(self):
        validate_config(self)  # every numeric field by its meaning (marlbench.config)
        if self.minibatches > self.n_envs * self.rollout:
            raise ValueError("minibatches cannot exceed n_envs * rollout")


# ---------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------


class Actor(nn.Module):
    def __init__(self, cfg: MAPPOConfig, env: EnvInfo):
        super().__init__()
        self.n = env.n_agents
        self.net = LayerNormMLP(env.obs_dim + env.n_agents, cfg.hidden, cfg.layers,
                                env.n_actions, cfg.gain)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [..., n, obs_dim] -> logits [..., n, n_actions] (unmasked)."""
        ids = agent_one_hot(self.n, obs.shape[:-2], obs.device)
        return self.net(torch.cat([obs, ids], -1))


class Critic(nn.Module):
    def __init__(self, cfg: MAPPOConfig, env: EnvInfo):
        super().__init__()
        self.n, self.agent_specific = env.n_agents, cfg.agent_specific_state
        in_dim = env.state_dim + (env.obs_dim if cfg.agent_specific_state else 0) + env.n_agents
        self.net = LayerNormMLP(in_dim, cfg.hidden, cfg.layers, 1, 1.0)

    def forward(self, state: torch.Tensor, obs: torch.Tensor,
                alive: torch.Tensor) -> torch.Tensor:
        """state [..., S], obs [..., n, O], alive [..., n] -> values [..., n] (normalised)."""
        x = state.unsqueeze(-2).expand(*obs.shape[:-1], state.shape[-1])
        if self.agent_specific:
            x = torch.cat([x, obs], -1)
        x = x * alive.unsqueeze(-1)  # death masking: a dead agent's value sees only its id
        ids = agent_one_hot(self.n, obs.shape[:-2], obs.device)
        return self.net(torch.cat([x, ids], -1)).squeeze(-1)


# ---------------------------------------------------------------------------------------------
# Algorithm
# ---------------------------------------------------------------------------------------------


@dataclass
class Rollout:
    obs: torch.Tensor  # [T, B, n, O]
    state: torch.Tensor  # [T, B, S]
    avail: torch.Tensor  # [T, B, n, A]
    actions: torch.Tensor  # [T, B, n]
    logp: torch.Tensor  # [T, B, n]
    values: torch.Tensor  # [T, B, n] normalised predictions
    advantages: torch.Tensor  # [T, B, n]
    returns: torch.Tensor  # [T, B, n] (unnormalised)
    alive: torch.Tensor  # [T, B, n] float


class MAPPO(Algorithm):
    Config = MAPPOConfig

    def __init__(self, config: MAPPOConfig, env: EnvInfo, device: torch.device, seed: int):
        super().__init__(config, env, device, seed)
        self.actor = Actor(config, env).to(device)
        self.critic = Critic(config, env).to(device)
        self.value_norm = ValueNorm().to(device)
        self.env_steps = 0

    def setup(self, data) -> None:
        raise MarlbenchError("mappo trains online in the environment, not on a dataset")

    def setup_online(self, env: EnvSpec) -> None:
        cfg = self.config
        self.envs = make_vector_env(env, cfg.n_envs)
        obs, state, avail = self.envs.reset(seed=self.seed)
        self._obs, self._state, self._avail = self._t(obs), self._t(state), self._t(avail)
        self.gen = torch.Generator(self.device).manual_seed(self.seed)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr,
                                           eps=cfg.adam_eps)
        self.recent = collections.deque(maxlen=100)  # (return, won) of finished episodes
        self._episode_return = np.zeros(cfg.n_envs)

    def _t(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, device=self.device)

    def _value(self, state: torch.Tensor, obs: torch.Tensor, avail: torch.Tensor):
        return self.critic(state, obs, alive_agents(avail).float())

    def _denorm(self, v: torch.Tensor) -> torch.Tensor:
        return self.value_norm.denormalize(v) if self.config.value_norm else v

    # -- experience -----------------------------------------------------------------------------

    @torch.no_grad()
    def _collect(self) -> Rollout:
        cfg, T = self.config, self.config.rollout
        cols = collections.defaultdict(list)
        rewards, terminated, ended, final = [], [], [], []
        for _ in range(T):
            obs, state, avail = self._obs, self._state, self._avail
            logits = mask_logits(self.actor(obs), avail)
            dist = torch.distributions.Categorical(logits=logits)
            actions = torch.multinomial(dist.probs.reshape(-1, logits.shape[-1]), 1,
                                        generator=self.gen).reshape(logits.shape[:-1])
            values = self._value(state, obs, avail)
            for k, v in (("obs", obs), ("state", state), ("avail", avail), ("actions", actions),
                         ("logp", dist.log_prob(actions)), ("values", values)):
                cols[k].append(v)
            out = self.envs.step(actions.cpu().numpy())
            trunc = self._t(out.truncated) & ~self._t(out.terminated)
            if not cfg.bootstrap_time_limits:
                trunc = torch.zeros_like(trunc)
            # V of the state each ending episode stopped in (before the reset), with the death
            # mask of that state: an agent that died on this step is dead there.
            v_final = torch.zeros_like(values)
            if trunc.any():
                final_avail = (self._t(out.final_avail) if out.final_avail is not None
                               else avail)  # env without final masks: the last known ones
                v_final = self._value(self._t(out.final_state), self._t(out.final_obs),
                                      final_avail)
            rewards.append(self._t(out.reward))
            terminated.append(self._t(out.terminated) | (self._t(out.truncated) & ~trunc))
            ended.append(self._t(out.terminated | out.truncated))
            final.append(v_final)
            self._track_episodes(out.reward, out.terminated | out.truncated, out.won)
            self._obs, self._state, self._avail = (self._t(out.obs), self._t(out.state),
                                                   self._t(out.avail))
        self.env_steps += T * cfg.n_envs
        batch = {k: torch.stack(v) for k, v in cols.items()}
        last_value = self._value(self._state, self._obs, self._avail)
        adv, ret = self._gae(batch["values"], last_value, torch.stack(rewards),
                             torch.stack(terminated), torch.stack(ended), torch.stack(final))
        return Rollout(**batch, advantages=adv, returns=ret,
                       alive=alive_agents(batch["avail"]).float())

    def _track_episodes(self, reward: np.ndarray, done: np.ndarray, won: np.ndarray) -> None:
        self._episode_return += reward
        for j in np.flatnonzero(done):
            self.recent.append((self._episode_return[j], bool(won[j])))
            self._episode_return[j] = 0.0

    def _gae(self, values, last_value, rewards, terminated, ended, final_values):
        """GAE over [T, B, n] from normalised critic outputs: an episode end cuts the trace; a
        truncation (`ended` but not `terminated`) adds γ V(final state) at the cut."""
        cfg, v = self.config, self._denorm(values)
        nxt = next_state_values(v, self._denorm(last_value), ended,
                                self._denorm(final_values))
        return gae(rewards, v, nxt, terminated, ended, cfg.gamma, cfg.gae_lambda)

    # -- learning -------------------------------------------------------------------------------

    def update(self) -> dict[str, float]:
        cfg = self.config
        self.actor.train()
        self.critic.train()
        roll = self._collect()
        flat = {k: v.flatten(0, 1) for k, v in vars(roll).items()}  # [T*B, ...]
        flat["advantages"] = standardise(flat["advantages"], flat["alive"])
        sums = collections.Counter()
        n_rows = len(flat["advantages"])
        for _ in range(cfg.epochs):
            order = torch.randperm(n_rows, generator=self.gen, device=self.device)
            for idx in order.chunk(cfg.minibatches):
                for k, v in self._step({k: x[idx] for k, x in flat.items()}).items():
                    sums[k] += v
        count = cfg.epochs * cfg.minibatches
        metrics = {k: v / count for k, v in sums.items()}
        metrics["loss"] = (metrics["policy_loss"] + cfg.value_loss_coef * metrics["value_loss"]
                           - cfg.entropy_coef * metrics["entropy"])
        metrics["env_steps"] = float(self.env_steps)
        if self.recent:
            metrics["train_return"] = float(np.mean([r for r, _ in self.recent]))
            metrics["train_win_rate"] = float(np.mean([w for _, w in self.recent]))
        return metrics

    def _step(self, b: dict[str, torch.Tensor]) -> dict[str, float]:
        cfg, alive = self.config, b["alive"]
        logits = mask_logits(self.actor(b["obs"]), b["avail"])
        dist = torch.distributions.Categorical(logits=logits)
        policy_loss, _, clip_frac = clipped_surrogate(dist.log_prob(b["actions"]), b["logp"],
                                                      b["advantages"], alive, cfg.clip)
        entropy = masked_mean(dist.entropy(), alive)
        actor_grad = optimizer_step(self.actor_opt, policy_loss - cfg.entropy_coef * entropy,
                                    self.actor.parameters(), cfg.max_grad_norm)

        values = self.critic(b["state"], b["obs"], alive)
        returns = b["returns"]
        if cfg.value_norm:
            self.value_norm.update(returns)
            returns = self.value_norm.normalize(returns)
        value_loss = clipped_value_loss(values, b["values"], returns, alive, cfg.clip,
                                        cfg.huber_delta)
        critic_grad = optimizer_step(self.critic_opt, cfg.value_loss_coef * value_loss,
                                     self.critic.parameters(), cfg.max_grad_norm)
        return {"policy_loss": policy_loss.item(), "value_loss": value_loss.item(),
                "entropy": entropy.item(), "clip_fraction": clip_frac.item(),
                "actor_grad_norm": actor_grad.item(), "critic_grad_norm": critic_grad.item()}

    # -- acting and saving ----------------------------------------------------------------------

    def policy(self, greedy: bool = False, seed: int = 0) -> Policy:
        """Decentralised execution: each agent samples from the shared actor on its own obs."""
        return FeedForwardPolicy(self.actor, lambda obs, _state: self.actor(obs), self.device,
                                 greedy, seed)

    def modules(self) -> dict[str, nn.Module]:
        return {"actor": self.actor, "critic": self.critic, "value_norm": self.value_norm}

    def extra_state(self) -> dict[str, int]:
        return {"env_steps": self.env_steps}

    def load_extra_state(self, state) -> None:
        self.env_steps = int(state.get("env_steps", 0))


@hookimpl
def marlbench_algorithms() -> list[AlgorithmSpec]:
    return [AlgorithmSpec(
        name="mappo", cls=MAPPO, offline=False,
        description="multi-agent PPO (online): shared actor, centralised critic",
        paper="Yu et al. 2021, The Surprising Effectiveness of PPO in Cooperative Multi-Agent "
              "Games (NeurIPS 2022 D&B); defaults from marlbenchmark/on-policy",
        execution="decentralised", uses_global_state=True)]
