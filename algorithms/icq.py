"""ICQ (MAICQ): implicit constraint Q-learning for offline MARL (Yang et al., NeurIPS 2021).

Offline value learning goes wrong when its targets query actions the data never took. ICQ
keeps every target *in sample*: the critic bootstraps only from the dataset's next actions, and
both updates are importance-weighted by the closed-form solution of the behaviour-constrained
problem, pi*(a | s) proportional to mu(a | s) exp(Q(s, a) / beta), with the normaliser
estimated on the mini-batch. Multi-agent: a mixer with state-conditioned non-negative weights
k_i(s) (summing to one) decomposes the joint value, so the joint policy update splits into
per-agent ones. Details follow the authors' code (github.com/YiqinYang/ICQ, ICQ-MA/src:
learners/offpg_learner.py, modules/critics/offpg.py, modules/mixers/qmix.py).

Critic (per-agent Q_i(s, o_i, .), mixed to Q_tot = sum_i k_i(s) Q_i(s, o_i, a_i); bars are
target networks; w_beta(x)_{b,t} = B_t softmax_b(x_{b,t} / beta) is the importance weight,
a softmax over the B_t episodes of the batch still running at step t, separately for every
step t (and agent i), scaled so that its mean over them is one):

    G_t      = w_{beta_Q}(Qbar_tot(s, a))_t Qbar_tot(s_t, a_t)
    y_t      = r_t + gamma (1 - d_t) ((1 - lambda) G_{t+1} + lambda y_{t+1})    (TD(lambda))
    L_Q      = E_D[(Q_tot(s_t, a_t) - y_t)^2]

Actor (recurrent, per agent, parameters shared):

    A_i      = Q_i(s, o_i, a_i) - sum_a pi_i(a | tau_i) Q_i(s, o_i, a)
    L_pi     = -E_D[k_i(s) w_beta(A_i)_t log pi_i(a_i | tau_i)]

The batch mean at step t estimates the closed form's normaliser E_mu[exp(Q / beta)], as in
the authors' learner (softmax over the episode axis, times the batch size), so no entry
weighs more than B_t.

Departures from the authors' code, each for a stated reason:

* The critic's sequential steps run over slices of `critic_slice` time steps (theirs: one
  step per time slice); with 4 episodes per batch, a slice of 8 holds the same 32 transitions
  as theirs and a 500-step episode costs 63 critic steps per update instead of 500.
* The importance weights' softmax leaves padding out and scales by the number of episodes
  still running at that step (theirs includes padded entries and scales by the batch size).
  The two agree whenever every episode of the batch is still running, as on RWARE, whose
  episodes all end at the time limit.
* RWARE episodes end by a time limit. The step after the last one has no dataset action, so its
  bootstrap value is the expectation under the current actor, on the stored final observation.
* The mixer's weights come from a one-hidden-layer hypernetwork on the state (theirs multiplies
  two linear hypernetworks, the collapsed QMIX mixer); both are normalised to sum to one and
  have no bias. The critic's head is one linear layer (theirs adds a separate value output to
  the advantage outputs without centring them, which is the same function class).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from marlbench.api import Algorithm, AlgorithmSpec, EnvInfo, Policy, hookimpl, validate_config
from marlbench.data import OfflineDataset, TrajectoryBatch
from marlbench.nn import (
    ActionSampler,
    FixedNormalizer,
    agent_inputs,
    mask_logits,
    mlp,
    optimizer_step,
)
from marlbench.nn.mixer import LinearMixer


@dataclass
class ICQConfig:
    rnn_hidden: int = 64  # ICQ-MA config/default.yaml rnn_hidden_dim: 64 (pymarl RNN agent)
    last_action: bool = True  # default.yaml obs_last_action: the actor sees its last action
    critic_hidden: int = 256  # modules/critics/offpg.py: two 256-unit layers
    mixer_hidden: int = 32  # config/algs/offpg_smac.yaml mixing_embed_dim: 32
    gamma: float = 0.99  # config/default.yaml gamma
    td_lambda: float = 0.75  # utils/rl_utils.py sets td_lambda = 0.75 (overriding the yaml)
    # learners/offpg_learner.py train(): beta = 0.1 (actor temperature; a divisor, so > 0)
    beta: float = field(default=0.1, metadata={"check": "positive"})
    beta_q: float = 1000.0  # offpg_learner.py train_critic(): beta = 1000 (critic temperature)
    actor_lr: float = 5e-4  # offpg_smac.yaml lr
    critic_lr: float = 1e-4  # offpg_smac.yaml critic_lr (critic and mixer)
    rms_alpha: float = 0.99  # default.yaml optim_alpha (RMSprop)
    rms_eps: float = 1e-5  # default.yaml optim_eps
    grad_clip: float = 20.0  # default.yaml grad_norm_clip
    target_update_interval: int = 600  # offpg_smac.yaml: critic steps between target copies
    # The critic takes one gradient step per time slice of the batch (offpg_learner.py
    # train_critic, critic_train_mode: seq). Their slice is 1 step of 32 episodes; 8 steps of 4
    # episodes is the same 32 transitions per critic step.
    critic_slice: int = 8
    # Whole episodes per update. The authors sample 32 SMAC episodes (tens of steps each, about
    # 2k steps); 4 RWARE episodes of 500 steps are as many steps.
    batch_size: int = 4
    # The authors run 40k iterations (t_env to 4M in steps of 100), beyond a CPU budget: one
    # update here (a 500-step GRU pass and 63 critic steps) takes 0.2-0.6 s on one core. 2k
    # updates are 40 passes over a 200-episode dataset.
    steps: int = 2_000
    normalize_obs: bool = True  # RWARE coordinates reach 20 while other features are 0/1

    def __post_init__(self):
        validate_config(self)  # every numeric field by its meaning (marlbench.config)


class RecurrentActor(nn.Module):
    """pymarl's RNN agent: [obs, last action, id] (one-hots) -> Linear+ReLU -> GRU -> logits."""

    def __init__(self, cfg: ICQConfig, env: EnvInfo):
        super().__init__()
        self.n, self.n_actions, self.last_action = env.n_agents, env.n_actions, cfg.last_action
        in_dim = env.obs_dim + env.n_agents + (env.n_actions if cfg.last_action else 0)
        self.inp = nn.Sequential(nn.Linear(in_dim, cfg.rnn_hidden), nn.ReLU())
        self.gru = nn.GRU(cfg.rnn_hidden, cfg.rnn_hidden, batch_first=True)
        self.out = nn.Linear(cfg.rnn_hidden, env.n_actions)

    def forward(self, obs: torch.Tensor, last_actions: torch.Tensor,
                hidden: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """obs [B, T, n, obs_dim] (scaled), last_actions [B, T, n] (-1 = none).

        Returns logits [B, T, n, A] and the final hidden state [1, B * n, H].
        """
        B, T = obs.shape[:2]
        parts = [agent_inputs(obs)]
        if self.last_action:
            last = F.one_hot(last_actions.clamp_min(0), self.n_actions).float()
            parts.append(last * (last_actions >= 0).unsqueeze(-1))
        x = self.inp(torch.cat(parts, -1))  # [B, T, n, H]
        x = x.transpose(1, 2).reshape(B * self.n, T, -1)
        h, hidden = self.gru(x, hidden)
        logits = self.out(h).reshape(B, self.n, T, -1).transpose(1, 2)
        return logits, hidden


class ICQNets(nn.Module):
    """Actor, critic, mixer and input scaling (what a checkpoint holds)."""

    def __init__(self, cfg: ICQConfig, env: EnvInfo):
        super().__init__()
        self.cfg, self.n = cfg, env.n_agents
        self.obs_norm = FixedNormalizer(env.obs_dim)
        self.state_norm = FixedNormalizer(env.state_dim)
        self.actor = RecurrentActor(cfg, env)
        self.critic = mlp(env.state_dim + env.obs_dim + env.n_agents, cfg.critic_hidden, 2,
                          env.n_actions)
        self.mixer = LinearMixer(env.state_dim, env.n_agents, cfg.mixer_hidden,
                                 normalize=True, bias=False)

    def scale_obs(self, obs: torch.Tensor) -> torch.Tensor:
        return self.obs_norm(obs) if self.cfg.normalize_obs else obs

    def scale_state(self, state: torch.Tensor) -> torch.Tensor:
        return self.state_norm(state) if self.cfg.normalize_obs else state

    def agent_q(self, obs: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Scaled obs [..., n, obs_dim], state [..., state_dim] -> Q_i [..., n, A]."""
        s = state.unsqueeze(-2).expand(*obs.shape[:-1], state.shape[-1])
        return self.critic(torch.cat([s, agent_inputs(obs)], -1))


def _with_final_step(data: OfflineDataset, tb: TrajectoryBatch,
                     episodes: np.ndarray) -> torch.Tensor:
    """Write each episode's stored final observation into the slot after its last step.

    Returns a bool [B, L] marking that slot. Batches must be padded past the longest episode.
    """
    lengths = torch.from_numpy(data.length[episodes])
    ep = torch.from_numpy(episodes)
    rows = torch.arange(len(episodes))
    tb.obs[rows, lengths] = data.final_obs[ep]
    tb.state[rows, lengths] = data.final_state[ep]
    tb.avail[rows, lengths] = data.final_avail[ep]
    final = torch.zeros_like(tb.mask)
    final[rows, lengths] = True
    return final


def lambda_returns(rewards: torch.Tensor, terminated: torch.Tensor, real: torch.Tensor,
                   values: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """TD(lambda) targets y_t on real steps; `values` [B, L] bootstrap the step after each.

    y_t = r_t + gamma (1 - d_t) ((1 - lam) v_{t+1} + lam y_{t+1}), with y = v where not real.
    """
    y = values.clone()
    for t in range(rewards.shape[1] - 2, -1, -1):
        nxt = (1 - lam) * values[:, t + 1] + lam * y[:, t + 1]
        step = rewards[:, t] + gamma * (1.0 - terminated[:, t].float()) * nxt
        y[:, t] = torch.where(real[:, t], step, values[:, t])
    return y


def importance_weights(x: torch.Tensor, valid: torch.Tensor, beta: float) -> torch.Tensor:
    """B_t softmax(x / beta) over the batch axis (dim 0), separately at every other index.

    x, valid [B, ...]: at each index (time step, agent) the softmax runs over the valid
    entries of the B episodes and is scaled by their count B_t, so the weights there average
    one and none exceeds B_t; invalid entries get 0 (a column with none stays all 0).
    """
    logits = (x / beta).masked_fill(~valid, float("-inf"))
    count = valid.sum(0, keepdim=True)
    weights = torch.softmax(logits, 0).nan_to_num(0.0)  # an all-invalid column: 0, not NaN
    return weights * count


class ICQ(Algorithm):
    Config = ICQConfig

    def __init__(self, config: ICQConfig, env: EnvInfo, device: torch.device, seed: int):
        super().__init__(config, env, device, seed)
        self.nets = ICQNets(config, env).to(device)

    def setup(self, data: OfflineDataset) -> None:
        cfg = self.config
        self.data, self.rng = data, np.random.default_rng(self.seed)
        self.nets.obs_norm.fit(data.obs)
        self.nets.state_norm.fit(data.state)
        self.target = copy.deepcopy(self.nets).requires_grad_(False)
        rms = {"alpha": cfg.rms_alpha, "eps": cfg.rms_eps}
        self.actor_opt = torch.optim.RMSprop(self.nets.actor.parameters(), lr=cfg.actor_lr, **rms)
        self.critic_params = [*self.nets.critic.parameters(), *self.nets.mixer.parameters()]
        self.critic_opt = torch.optim.RMSprop(self.critic_params, lr=cfg.critic_lr, **rms)
        self.critic_steps = self.last_target_copy = 0

    def sample(self) -> tuple[TrajectoryBatch, torch.Tensor]:
        """Whole episodes with their final observations spliced in after the last step."""
        episodes = self.rng.integers(0, self.data.n_episodes, self.config.batch_size)
        tb = self.data.trajectories(len(episodes), self.rng, length=self.data.max_length + 1,
                                    episodes=episodes)
        final = _with_final_step(self.data, tb, episodes)
        for name in ("obs", "state", "avail", "actions", "rewards", "terminated", "mask"):
            setattr(tb, name, getattr(tb, name).to(self.device))
        return tb, final.to(self.device)

    def update(self) -> dict[str, float]:
        cfg, nets = self.config, self.nets
        nets.train()
        tb, final = self.sample()
        real = tb.mask  # [B, L]: dataset steps; `final` marks the slot after each episode
        obs, state = nets.scale_obs(tb.obs), nets.scale_state(tb.state)
        a = tb.actions.unsqueeze(-1)

        last_actions = torch.cat([torch.full_like(tb.actions[:, :1], -1), tb.actions[:, :-1]], 1)
        logits, _ = nets.actor(obs, last_actions)
        logp = F.log_softmax(mask_logits(logits, tb.avail), -1)  # [B, L, n, A]
        probs = logp.detach().exp()

        # Critic: in-sample TD(lambda) targets on the mixed value, importance-weighted.
        with torch.no_grad():
            q_bar = self.target.agent_q(obs, state)
            taken = q_bar.gather(-1, a).squeeze(-1)
            expected = (probs * q_bar).sum(-1)  # the actor's value where no action is stored
            v_bar = self.target.mixer(torch.where(final.unsqueeze(-1), expected, taken), state)
            bootstrap = (real | final) & (torch.arange(real.shape[1], device=real.device) > 0)
            q_weight = importance_weights(v_bar, bootstrap, cfg.beta_q)
            g = q_weight * v_bar
            y = lambda_returns(tb.rewards, tb.terminated, real, g, cfg.gamma, cfg.td_lambda)
        critic = self.train_critic(obs, state, a, y, real)
        critic["q_weight_max"] = q_weight.max().item()

        # Actor: advantage-weighted, mixer-weighted behaviour cloning on the dataset actions,
        # with the critic as it is after its steps on this batch.
        with torch.no_grad():
            q = nets.agent_q(obs, state)
            adv = q.gather(-1, a).squeeze(-1) - (probs * q).sum(-1)  # [B, L, n]
            valid = real.unsqueeze(-1).expand_as(adv)
            weight = importance_weights(adv, valid, cfg.beta)
            k, _ = nets.mixer.weights_and_bias(state)  # [B, L, n]
        logp_taken = logp.gather(-1, a).squeeze(-1)
        actor_loss = -(k * weight * logp_taken)[valid].mean()
        optimizer_step(self.actor_opt, actor_loss, nets.actor.parameters(), cfg.grad_clip)

        greedy = logp.detach().argmax(-1)
        return {"loss": critic["critic_loss"] + actor_loss.item(), **critic,
                "actor_loss": actor_loss.item(), "weight_max": weight.max().item(),
                "accuracy": (greedy == tb.actions)[valid].float().mean().item()}

    def train_critic(self, obs: torch.Tensor, state: torch.Tensor, a: torch.Tensor,
                     y: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
        """Sequential gradient steps over consecutive time slices of the batch, then a target
        copy once `target_update_interval` steps have accumulated (the authors' schedule)."""
        cfg, nets = self.config, self.nets
        losses, td_abs, q_tot_sum = [], 0.0, 0.0
        for t0 in range(0, int(real.any(0).nonzero().max()) + 1, cfg.critic_slice):
            sl = slice(t0, t0 + cfg.critic_slice)
            q = nets.agent_q(obs[:, sl], state[:, sl])
            q_tot = nets.mixer(q.gather(-1, a[:, sl]).squeeze(-1), state[:, sl])
            td = (q_tot - y[:, sl])[real[:, sl]]
            loss = td.pow(2).mean()
            optimizer_step(self.critic_opt, loss, self.critic_params, cfg.grad_clip)
            self.critic_steps += 1
            losses.append(loss.item())
            td_abs += td.detach().abs().sum().item()
            q_tot_sum += q_tot.detach()[real[:, sl]].sum().item()
        if self.critic_steps - self.last_target_copy >= cfg.target_update_interval:
            self.target.load_state_dict(nets.state_dict())
            self.last_target_copy = self.critic_steps
        n = real.sum().item()
        return {"critic_loss": float(np.mean(losses)), "td_abs": td_abs / n,
                "q_tot": q_tot_sum / n}

    def policy(self, greedy: bool = False, seed: int = 0) -> Policy:
        return ICQPolicy(self.nets, self.device, greedy, seed)

    def modules(self) -> dict[str, nn.Module]:
        return {"nets": self.nets}


class ICQPolicy(Policy):
    """Decentralised and recurrent: each agent's GRU state and last action live here."""

    def __init__(self, nets: ICQNets, device: torch.device, greedy: bool, seed: int):
        self.nets, self.device = nets.eval(), device
        self.choose = ActionSampler(greedy, seed, device)
        self.hidden: torch.Tensor | None = None
        self.last: torch.Tensor | None = None

    def reset(self, n_envs: int) -> None:
        self.choose.reset(n_envs)
        self.hidden = None  # the GRU starts from zeros
        self.last = torch.full((n_envs, 1, self.nets.n), -1, device=self.device)

    @torch.inference_mode()
    def act(self, obs: np.ndarray, state: np.ndarray, avail: np.ndarray) -> np.ndarray:
        obs_t = self.nets.scale_obs(torch.as_tensor(obs, device=self.device)).unsqueeze(1)
        logits, self.hidden = self.nets.actor(obs_t, self.last, self.hidden)
        avail_t = torch.as_tensor(avail, device=self.device)
        actions = self.choose(logits[:, 0], avail_t)
        self.last = actions.unsqueeze(1)
        return actions.cpu().numpy()


@hookimpl
def marlbench_algorithms() -> list[AlgorithmSpec]:
    return [AlgorithmSpec(
        name="icq", cls=ICQ,
        description="implicit constraint Q-learning with a linear mixer, recurrent actor",
        paper="Yang et al. 2021, Believe What You See: Implicit Constraint Approach for "
              "Offline Multi-Agent Reinforcement Learning (NeurIPS)",
        execution="decentralised", uses_global_state=True)]
