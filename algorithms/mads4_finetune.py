"""MADS4 on-policy fine-tuning: the second stage of Multi-Agent Decision S4 (Bhattacharya & Bal,
AAMAS 2026, §4.2, Algorithm 2, Fig. 2).

It imports no other algorithm: the offline algorithm (`actor_algo`, found in the plugin
registry like any plugin) builds the actor network and gives its recurrent policy, and its
AlgorithmSpec names the algorithm it continues (`continues`); the PPO pieces come from
`marlbench.nn.ppo`, shared with MAPPO. Start it with
`marlbench finetune --from RESULTS/<env>/<dataset>/mads4/seed-K` (marlbench.finetune).

**Actor.** The offline-trained MADS4Net, acting through its recurrent view, agent after agent
within a timestep with the predecessor's message (Eq. 9: p_i^t, h_i^t = π(u_i^t, h_{i-1}^t; θ)),
conditioned on an exploration return-to-go 10% above the best return seen so far (§4.2): the
offline evaluation target 1.1 x the best dataset return, raised to best + 0.1 |best| whenever
an online episode beats it. Evaluation uses the same target, so at step 0 the fine-tuner's
evaluation is the offline run's, episode for episode (tested).

**Rollouts.** Each update plays one whole episode in each of `n_envs` environments, stepped
together with one batched recurrent actor call per timestep (Algorithm 2, lines 5-17). Stored
per step: observations, global state, availability, actions, behaviour log-probabilities,
return-to-go, rewards, termination/truncation and the S4 latent features h^{t-1} (the last
block's output per agent at the previous step, `carry["features"]`).

**Exact log-probabilities.** Every stored sequence starts at an episode's first step, where the
S4 state is zero, so the update recomputes log π(a|·) by running the convolutional view over the
whole stored episodes (same inputs, same teacher-forced actions); it equals the recurrent view to
float precision (~1e-6), so no SSM state has to be stored or replayed. The network stays in
evaluation mode throughout: BatchNorm uses its offline running statistics (frozen buffers) and
dropout is off, since the ratio needs the same function in acting and in learning. Each update
logs `ratio_dev`, max |π/π_old - 1| before its first gradient step (tested < 1e-3).

**Objective** (MAPPO, Yu et al. 2021; marlbench.nn.ppo), over valid steps of alive agents:

    L_actor  = -E[min(r Â, clip(r, 1-ε, 1+ε) Â)] - c_H H[π],   r = π_θ(a|u) / π_old(a|u)
    L_critic =  E[max(huber(V - R̂), huber(clip(V, V_old ± ε) - R̂))]
    V_i^t    = V_φ(s_g^t, h_i^{t-1}, onehot(i))       (Algorithm 2, line 21: V(s^t, h^{t-1}))
    δ_t = r_t + γ (1 - term_t) V(s_{t+1}, h^t) - V(s_t, h^{t-1}),  Â = GAE(γ, λ), R̂ = Â + V

The critic is an MLP on the global state and the encoded S4 latent state (§4.2), features
detached: the critic never trains the actor. A time limit is a truncation: GAE bootstraps
from V(s_final, h^T) with the final state's death mask.

**Schedule.** The actor is frozen for the first `critic_warmup` updates while the critic learns
from the pre-trained actor's data (§4.2), then both train. The S4 state matrix A is frozen: Λ
and P (§5.3, against recurrent instability); Δ is frozen too by default, since the paper trains
"only the input-dependent parameters B and C" (`train_dt` to train it); B, C, D, the encoders,
mixing layers, norms' affine weights and heads train.

**The authors' code differs** (ashmita695/MADS4 `training/online_training.py`): an off-policy
actor-critic with a 70k-transition replay, an OMIGA-style value loss, a QMIX-style mixer, a
critic on local observations (never the S4 latent), every S4 dynamics parameter frozen, and a
return-to-go target max(15, min(base, eval_return + 5)) with jitter. We follow the paper.

**Results.** `marlbench finetune` writes `<env>/<dataset>/<algo>+ft/seed-K/` next to the offline
run (`<algo>` = mads4, ids4 or mads4-dec); `--from-scratch` writes `<algo>+scratch`: the same loop
from a randomly initialised network (the paper's baseline curve) that keeps the offline run's
input normalisers, return scale and initial target, so the two curves differ only in the
pre-trained weights.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
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
from marlbench.nn import (
    TARGET_RETURN_SCALE,
    agent_one_hot,
    mask_logits,
    masked_mean,
    optimizer_step,
    target_return,
)
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
from marlbench.nn.s4 import SSMKernel
from marlbench.vector import make_vector_env

OFFLINE_VARIANTS = ("mads4", "ids4", "mads4-dec")  # offline algorithms this stage continues


@dataclass
class MADS4FinetuneConfig:
    # The offline run this continues (set by `marlbench finetune --from`; provenance only).
    source: str = ""
    # The offline run's MADS4Config as a dict (set by `marlbench finetune`): the actor's
    # architecture, so a fine-tuned checkpoint reloads from its own config.json.
    actor: dict[str, Any] = field(default_factory=dict)
    # The offline run's algorithm (set by `marlbench finetune`), whose class builds the actor
    # from `actor` through the plugin registry, as the host builds it (an algorithm never
    # imports another). mads4, ids4 and mads4-dec share one class: the config tells them apart.
    actor_algo: str = "mads4"
    init: Literal["pretrained", "scratch"] = "pretrained"  # scratch: Fig. 2's baseline
    n_envs: int = 8  # MAPPO train_smac_*.sh --n_rollout_threads 8 (one episode each/update)
    # PPO epochs per update. MAPPO's paper recommends 15 for easy and 5 for super-hard tasks
    # (less data reuse); 5 also limits how far one update moves a pre-trained policy.
    epochs: int = 5
    minibatches: int = 1  # MAPPO train_smac_*.sh --num_mini_batch 1 (here: episodes per split)
    clip: float = 0.2  # MAPPO config.py clip_param
    entropy_coef: float = 0.01  # MAPPO config.py entropy_coef
    value_loss_coef: float = 1.0  # MAPPO config.py value_loss_coef
    huber_delta: float = 10.0  # MAPPO config.py huber_delta
    max_grad_norm: float = 10.0  # MAPPO config.py max_grad_norm
    gamma: float = 0.99  # MAPPO config.py gamma
    gae_lambda: float = 0.95  # MAPPO config.py gae_lambda
    value_norm: bool = True  # MAPPO config.py use_valuenorm
    adam_eps: float = 1e-5  # MAPPO config.py opti_eps
    # The paper gives no fine-tuning rates. MAPPO's 5e-4 is for networks trained from
    # scratch; a pre-trained actor gets 10x less than its offline rate (1e-3), so PPO's clipped
    # steps refine rather than overwrite it. The critic starts from scratch: MAPPO's 5e-4.
    actor_lr: float = field(default=1e-4, metadata={"check": "non-negative"})  # 0: frozen
    critic_lr: float = 5e-4  # MAPPO config.py critic_lr
    critic_hidden: int = 64  # MAPPO config.py hidden_size (the paper: "fully connected + ReLU")
    critic_layers: int = 2  # MAPPO MLPBase: fc1 plus layer_N=1
    # Updates with the actor frozen while the critic fits the pre-trained actor's returns
    # (§4.2: "after sufficient training of the critic"; the paper gives no length). Our
    # choice: 5 updates = 40 episodes (x 5 epochs) of the pre-trained actor's data.
    critic_warmup: int = 5
    train_dt: bool = False  # §5.3: only B and C of the S4 kernel train (Δ, Λ, P frozen)
    # §4.2: return-to-go 10% above the best return seen (the offline rule, 1.1)
    target_scale: float = TARGET_RETURN_SCALE
    steps: int = 40  # updates (CPU budget: ~4k env steps each on RWARE with 8 envs)

    def __post_init__(self):
        validate_config(self)  # every numeric field by its meaning (marlbench.config)
        if self.minibatches > self.n_envs:
            raise ValueError("minibatches split the n_envs episodes: need minibatches <= n_envs")


# ---------------------------------------------------------------------------------------------
# Critic and parameter groups
# ---------------------------------------------------------------------------------------------


class LatentCritic(nn.Module):
    """V_φ(s_g, h_i, onehot(i)) per agent: global state and encoded S4 latent (§4.2), death
    masked like MAPPO's critic (a dead agent's inputs are zeros, its id remains)."""

    def __init__(self, cfg: MADS4FinetuneConfig, env: EnvInfo, d_latent: int):
        super().__init__()
        self.n = env.n_agents
        self.net = LayerNormMLP(env.state_dim + d_latent + env.n_agents, cfg.critic_hidden,
                                cfg.critic_layers, 1, 1.0)

    def forward(self, state: torch.Tensor, latent: torch.Tensor,
                alive: torch.Tensor) -> torch.Tensor:
        """state [..., S], latent [..., n, H], alive [..., n] -> values [..., n] (normalised)."""
        x = state.unsqueeze(-2).expand(*latent.shape[:-1], state.shape[-1])
        x = torch.cat([x, latent], -1) * alive.unsqueeze(-1)
        ids = agent_one_hot(self.n, latent.shape[:-2], latent.device)
        return self.net(torch.cat([x, ids], -1)).squeeze(-1)


def actor_parameter_groups(net: nn.Module, train_dt: bool
                           ) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(trainable, frozen) parameters of the actor: Λ and P of every S4 kernel (the state
    matrix A) are frozen, Δ too unless `train_dt`; B, C and everything else train."""
    frozen: dict[int, nn.Parameter] = {}
    for module in net.modules():
        if isinstance(module, SSMKernel):
            parts = module.state_matrix_parameters()  # A = Λ - P P*
            parts += [] if train_dt else [module.log_dt]
            frozen.update((id(p), p) for p in parts)
    trainable = [p for p in net.parameters() if id(p) not in frozen]
    return trainable, list(frozen.values())


# ---------------------------------------------------------------------------------------------
# Algorithm
# ---------------------------------------------------------------------------------------------


@dataclass
class Rollout:
    """Time-major [T, B, ...]: T the longest episode of the batch, B = n_envs episodes."""

    obs: torch.Tensor  # [T, B, n, O]
    state: torch.Tensor  # [T, B, S]
    avail: torch.Tensor  # [T, B, n, A] bool
    actions: torch.Tensor  # [T, B, n]
    logp: torch.Tensor  # [T, B, n] behaviour log-probabilities (recurrent view)
    rtg: torch.Tensor  # [T, B] return-to-go input (scaled)
    latent: torch.Tensor  # [T, B, n, H] h^{t-1}: the critic's latent input
    values: torch.Tensor  # [T, B, n] normalised critic predictions
    valid: torch.Tensor  # [T, B] bool: the step belongs to the env's episode
    advantages: torch.Tensor  # [T, B, n]
    returns: torch.Tensor  # [T, B, n] (unnormalised)

    @property
    def mask(self) -> torch.Tensor:
        """[T, B, n] float: valid steps of alive agents (what the losses average over)."""
        return (self.valid[..., None] & alive_agents(self.avail)).float()


class MADS4Finetune(Algorithm):
    Config = MADS4FinetuneConfig

    def __init__(self, config: MADS4FinetuneConfig, env: EnvInfo, device: torch.device,
                 seed: int):
        super().__init__(config, env, device, seed)
        from marlbench.plugins import registry

        spec = registry().algorithm(config.actor_algo)
        self.actor = spec.cls(spec.config_cls(**config.actor), env, device, seed)
        self.net = self.actor.modules()["net"]
        self.critic = LatentCritic(config, env, self.actor.config.d_model).to(device)
        self.value_norm = ValueNorm().to(device)
        self.rtg_scale, self.target_return = 1.0, 0.0
        self.env_steps, self.updates, self.adopted = 0, 0, False

    # -- start ---------------------------------------------------------------------------------

    def adopt(self, offline: Algorithm) -> None:
        """Start from an offline MADS4 run: its weights (init=pretrained) or only its input
        normalisers (init=scratch), and its return scale and evaluation target."""
        if self.net.l_max < self.env.episode_limit:
            raise MarlbenchError(
                f"the offline run's context ({self.net.l_max}) is shorter than an episode "
                f"({self.env.episode_limit} steps); fine-tuning recomputes log-probabilities "
                "over whole episodes and needs context >= the episode limit")
        source = offline.modules()["net"]
        if self.config.init == "pretrained":
            self.net.load_state_dict(source.state_dict())
        else:
            self.net.obs_norm.load_state_dict(source.obs_norm.state_dict())
            self.net.state_norm.load_state_dict(source.state_norm.state_dict())
        extra = offline.extra_state()
        self.rtg_scale = float(extra["rtg_scale"])
        self.target_return = float(extra["target_return"])
        self.adopted = True

    def setup(self, data) -> None:
        raise MarlbenchError("MADS4 fine-tuning trains online; start it with "
                             "`marlbench finetune --from RESULTS/<env>/<dataset>/mads4/seed-K`")

    def setup_online(self, env: EnvSpec) -> None:
        if not self.adopted:
            raise MarlbenchError("MADS4 fine-tuning starts from an offline MADS4 run: use "
                                 "`marlbench finetune --from RESULTS/<env>/<dataset>/mads4/"
                                 "seed-K` (add --from-scratch for the baseline)")
        cfg = self.config
        self.envs = make_vector_env(env, cfg.n_envs)
        self.gen = torch.Generator(self.device).manual_seed(self.seed)
        trainable, self.frozen = actor_parameter_groups(self.net, cfg.train_dt)
        for p in self.frozen:
            p.requires_grad_(False)
        self.actor_params = trainable
        self.actor_opt = torch.optim.Adam(trainable, lr=cfg.actor_lr, eps=cfg.adam_eps)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr,
                                           eps=cfg.adam_eps)
        self.net.eval()  # offline BatchNorm statistics, no dropout: see the module docstring

    def _t(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, device=self.device)

    def _denorm(self, v: torch.Tensor) -> torch.Tensor:
        return self.value_norm.denormalize(v) if self.config.value_norm else v

    # -- experience -----------------------------------------------------------------------------

    @torch.no_grad()
    def collect(self) -> tuple[Rollout, dict[str, float]]:
        """One whole episode in each env, acting with the recurrent view (Algorithm 2, 5-17)."""
        cfg, info, B = self.config, self.env, self.config.n_envs
        started = time.perf_counter()
        seed = int(np.random.SeedSequence([self.seed, self.updates]).generate_state(1)[0])
        obs, state, avail = (self._t(x) for x in self.envs.reset(seed=seed))
        carry = self.net.initial_carry(B)
        rtg = torch.full((B,), self.target_return / self.rtg_scale, device=self.device)
        prev = torch.zeros(B, info.n_agents, info.n_actions, device=self.device)
        latent = torch.zeros(B, info.n_agents, self.actor.config.d_model, device=self.device)
        running = torch.ones(B, dtype=torch.bool, device=self.device)
        ep_return = torch.zeros(B, device=self.device)
        cols = collections.defaultdict(list)
        rewards, terminated, ended, final = [], [], [], []

        def choose(agent: int, logits: torch.Tensor) -> torch.Tensor:
            probs = torch.softmax(mask_logits(logits, avail[:, agent]), -1)
            return torch.multinomial(probs, 1, generator=self.gen)[:, 0]

        for _ in range(info.episode_limit):
            logits, actions, carry = self.net.step(rtg, state, obs, prev, carry, choose=choose)
            logp = torch.log_softmax(mask_logits(logits, avail), -1).gather(
                -1, actions[..., None])[..., 0]
            values = self.critic(state, latent, alive_agents(avail).float())
            for k, v in (("obs", obs), ("state", state), ("avail", avail), ("actions", actions),
                         ("logp", logp), ("rtg", rtg), ("latent", latent), ("values", values),
                         ("valid", running.clone())):
                cols[k].append(v)
            out = self.envs.step(actions.cpu().numpy())
            reward = self._t(out.reward).float() * running
            term = self._t(out.terminated) & running
            trunc = self._t(out.truncated) & running & ~term
            v_final = torch.zeros_like(values)
            latent = carry["features"]
            if trunc.any():  # V(s_final, h^t) with the final state's death mask
                final_avail = self._t(out.final_avail) if out.final_avail is not None else avail
                v_final = self.critic(self._t(out.final_state), latent,
                                      alive_agents(final_avail).float())
            rewards.append(reward)
            terminated.append(term)
            ended.append(term | trunc | ~running)
            final.append(v_final)
            ep_return += reward
            running = running & ~(term | trunc)
            rtg = rtg - reward / self.rtg_scale
            prev = F.one_hot(actions, info.n_actions).float()
            obs, state, avail = self._t(out.obs), self._t(out.state), self._t(out.avail)
            if not running.any():
                break
        seconds = time.perf_counter() - started
        batch = {k: torch.stack(v) for k, v in cols.items()}
        v = self._denorm(batch["values"])
        nxt = next_state_values(v, torch.zeros_like(v[0]), torch.stack(ended),
                                self._denorm(torch.stack(final)))
        adv, ret = gae(torch.stack(rewards), v, nxt, torch.stack(terminated),
                       torch.stack(ended), cfg.gamma, cfg.gae_lambda)
        steps = int(batch["valid"].sum())
        self.env_steps += steps
        returns = ep_return.cpu().numpy()
        best = float(returns.max())
        # §4.2: the return-to-go target follows the best return seen, 10% above it.
        self.target_return = max(self.target_return, target_return(best, cfg.target_scale))
        stats = {"train_return": float(returns.mean()), "train_return_max": best,
                 "rollout_env_steps_per_s": steps / max(seconds, 1e-9),
                 "rollout_seconds": seconds}
        return Rollout(**batch, advantages=adv, returns=ret), stats

    # -- learning -------------------------------------------------------------------------------

    def log_probs(self, roll: Rollout, idx: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities [T, b, n] of the stored actions and the policy entropy, recomputed
        by the convolutional view over the whole stored episodes `idx` (batch-major inside)."""
        bm = lambda x: x[:, idx].transpose(0, 1)  # noqa: E731  [T, b, ...] -> [b, T, ...]
        actions = bm(roll.actions)
        prev = F.pad(F.one_hot(actions, self.env.n_actions).float()[:, :-1],
                     (0, 0, 0, 0, 1, 0))
        logits = self.net(bm(roll.rtg), bm(roll.state), bm(roll.obs), prev, bm(roll.valid),
                          None, actions)
        logp_all = torch.log_softmax(mask_logits(logits, bm(roll.avail)), -1)
        logp = logp_all.gather(-1, actions[..., None])[..., 0]
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        return logp.transpose(0, 1), entropy.transpose(0, 1)

    def update(self) -> dict[str, float]:
        cfg = self.config
        self.net.eval()
        t0 = time.perf_counter()
        roll, stats = self.collect()
        mask = roll.mask
        adv = standardise(roll.advantages, mask)
        train_actor = self.updates >= cfg.critic_warmup and cfg.actor_lr > 0
        B = roll.obs.shape[1]
        with torch.no_grad():  # before any gradient step: the ratio must be 1
            logp0, entropy0 = self.log_probs(roll, torch.arange(B, device=self.device))
            ratio_dev = masked_mean((logp0 - roll.logp).exp().sub(1).abs(), mask)
            ratio_max = ((logp0 - roll.logp).exp().sub(1).abs() * mask).max()
        sums = collections.Counter()
        for _ in range(cfg.epochs):
            order = torch.randperm(B, generator=self.gen, device=self.device)
            for idx in order.chunk(cfg.minibatches):
                m = mask[:, idx]
                if train_actor:
                    logp, entropy = self.log_probs(roll, idx)
                    policy_loss, _, clip_frac = clipped_surrogate(
                        logp, roll.logp[:, idx], adv[:, idx], m, cfg.clip)
                    ent = masked_mean(entropy, m)
                    grad = optimizer_step(self.actor_opt, policy_loss - cfg.entropy_coef * ent,
                                          self.actor_params, cfg.max_grad_norm)
                    sums.update({"policy_loss": policy_loss.item(), "entropy": ent.item(),
                                 "clip_fraction": clip_frac.item(),
                                 "actor_grad_norm": grad.item()})
                values = self.critic(roll.state[:, idx], roll.latent[:, idx],
                                     alive_agents(roll.avail[:, idx]).float())
                targets = roll.returns[:, idx]
                if cfg.value_norm:
                    self.value_norm.update(targets, m)
                    targets = self.value_norm.normalize(targets)
                value_loss = clipped_value_loss(values, roll.values[:, idx], targets, m,
                                                cfg.clip, cfg.huber_delta)
                grad = optimizer_step(self.critic_opt, cfg.value_loss_coef * value_loss,
                                      self.critic.parameters(), cfg.max_grad_norm)
                sums.update({"value_loss": value_loss.item(), "critic_grad_norm": grad.item()})
        self.updates += 1
        count = cfg.epochs * cfg.minibatches
        metrics = {k: v / count for k, v in sums.items()}
        metrics.setdefault("policy_loss", 0.0)
        metrics.setdefault("entropy", float(masked_mean(entropy0, mask)))
        metrics["loss"] = (metrics["policy_loss"] + cfg.value_loss_coef * metrics["value_loss"]
                           - cfg.entropy_coef * metrics["entropy"])
        metrics.update(stats, ratio_dev=float(ratio_dev), ratio_dev_max=float(ratio_max),
                       actor_trained=float(train_actor), env_steps=float(self.env_steps),
                       target_return=self.target_return,
                       update_seconds=time.perf_counter() - t0)
        return metrics

    # -- acting and saving ----------------------------------------------------------------------

    def policy(self, greedy: bool = False, seed: int = 0) -> Policy:
        """The offline algorithm's own policy over the fine-tuned network and target."""
        self.actor.rtg_scale, self.actor.target_return = self.rtg_scale, self.target_return
        return self.actor.policy(greedy, seed)

    def modules(self) -> dict[str, nn.Module]:
        return {"net": self.net, "critic": self.critic, "value_norm": self.value_norm}

    def extra_state(self) -> dict[str, float]:
        return {"rtg_scale": self.rtg_scale, "target_return": self.target_return,
                "env_steps": self.env_steps, "updates": self.updates}

    def load_extra_state(self, state) -> None:
        self.rtg_scale, self.target_return = state["rtg_scale"], state["target_return"]
        self.env_steps, self.updates = int(state["env_steps"]), int(state["updates"])
        self.adopted = True


@hookimpl
def marlbench_algorithms() -> list[AlgorithmSpec]:
    paper = "Bhattacharya & Bal, Multi-Agent Decision S4, AAMAS 2026 (§4.2, Algorithm 2)"
    execution = {"mads4": "sequential", "ids4": "decentralised", "mads4-dec": "decentralised"}
    specs = []
    for offline in OFFLINE_VARIANTS:
        for scratch in (False, True):
            specs.append(AlgorithmSpec(
                name=f"{offline}+{'scratch' if scratch else 'ft'}", cls=MADS4Finetune,
                offline=False, continues=offline, from_scratch=scratch,
                paper=paper, execution=execution[offline], uses_global_state=True,
                preset={"init": "scratch" if scratch else "pretrained"},
                description=(f"{offline} trained on-policy from a random init (Fig. 2 baseline)"
                             if scratch else f"{offline} fine-tuned on-policy (MAPPO)")
                + "; start with `marlbench finetune --from`"))
    return specs
