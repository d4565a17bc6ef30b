"""OMIGA: offline MARL with implicit global-to-local value regularisation (Wang et al., 2023).

Discrete-action form, as in the authors' SMAC code (github.com/ZhengYinan-AIR/OMIGA:
run_omiga_sc2.py, framework/trainer_omiga.py, models/omiga_model.py).

Every agent i has a local Q_i(o_i, a_i), a local V_i(o_i) and a policy pi_i(a_i | o_i), one
network of each shared by all agents (input: own observation and a one-hot agent id). A linear
mixer with state-conditioned weights w_i(s) >= 0 and bias b(s) (`marlbench.nn.mixer`) ties
them to the global values Q_tot = sum_i w_i Q_i + b and V_tot = sum_i w_i V_i + b. The global
problem is behaviour-regularised RL; through the linear mixer its implicit solution splits into
local updates that only ever evaluate dataset actions (bars: Polyak-averaged target networks):

    critic:  L_Q  = E_D[(sum_i w_i(s) Q_i(o_i, a_i) + b(s)
                         - r - gamma (1 - d) (sum_i wbar_i(s') Vbar_i(o'_i) + bbar(s')))^2]
    value:   z_i  = wbar_i(s) (Qbar_i(o_i, a_i) - V_i(o_i)) / alpha
             L_V  = E_D[sum_i exp(z_i) + wbar_i(s) V_i(o_i) / alpha]
    policy:  L_pi = -E_D[sum_i exp(z_i) log pi_i(a_i | o_i)]

L_V is minimised by a soft in-sample maximum of Q (the dual of the global regulariser) and
L_pi is the exponentially advantage-weighted behaviour cloning that solves the regularised
problem; both are local yet consistent with the global objective. Only the own observation is
needed to act (decentralised execution); the state feeds the mixer during training.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from marlbench.api import Algorithm, AlgorithmSpec, EnvInfo, Policy, hookimpl, validate_config
from marlbench.data import OfflineDataset, TransitionBatch
from marlbench.nn import FixedNormalizer, agent_inputs, mask_logits, mlp, optimizer_step
from marlbench.nn.mixer import LinearMixer
from marlbench.policies import FeedForwardPolicy, soft_update


@dataclass
class OMIGAConfig:
    hidden: int = 256  # models/omiga_model.py: Q, V and actor are MLPs of 256-256
    layers: int = 2  # models/omiga_model.py: two hidden layers
    mixer_hidden: int = 64  # run_omiga_sc2.py --hyper_hidden_dim 64
    # trainer_omiga.py `self.alpha = 10.0`, tuned for SMAC's reward scale. On RWARE (team
    # reward ~0.06 per step) Q-value gaps between actions are ~0.4, so z = w(Q - V)/alpha
    # spreads by ~0.003 and the policy weights exp(z) stay within 0.95-1.03: OMIGA is then
    # close to behaviour cloning. z scales as 1/alpha (alpha = 0.1: spreads of ~0.3); kept at
    # the authors' value. A divisor, so > 0.
    alpha: float = field(default=10.0, metadata={"check": "positive"})
    z_clip: float = 10.0  # trainer_omiga.py clamps z to [-10, 10] before exponentiating
    gamma: float = 0.99  # trainer_omiga.py TrainerConfig.gamma
    tau: float = 0.005  # TrainerConfig.tau: Polyak rate of every target network, per update
    lr: float = 5e-4  # run_omiga_sc2.py --offline_lr; one Adam each for Q+mixer, V, actor
    grad_clip: float = 1.0  # TrainerConfig.grad_norm_clip
    batch_size: int = 128  # run_omiga_sc2.py --offline_batch_size (single transitions)
    # The repo makes 55 passes over its data (--offline_epochs 55). 20k updates of 128 are ~25
    # passes over a 200-episode RWARE dataset (100k steps), a CPU budget; the actor's loss has
    # flattened by then (0.148 at 20k, 0.141 at 40k on rware-tiny-2ag expert).
    steps: int = 20_000
    normalize_obs: bool = True  # RWARE coordinates reach 20 while other features are 0/1

    def __post_init__(self):
        validate_config(self)  # every numeric field by its meaning (marlbench.config)


class OMIGANets(nn.Module):
    """Local Q, V and policy networks shared by the agents, the mixer, and input scaling."""

    def __init__(self, cfg: OMIGAConfig, env: EnvInfo):
        super().__init__()
        self.cfg, self.n = cfg, env.n_agents
        in_dim = env.obs_dim + env.n_agents
        self.obs_norm = FixedNormalizer(env.obs_dim)
        self.state_norm = FixedNormalizer(env.state_dim)
        self.q = mlp(in_dim, cfg.hidden, cfg.layers, env.n_actions)
        self.v = mlp(in_dim, cfg.hidden, cfg.layers, 1)
        self.actor = mlp(in_dim, cfg.hidden, cfg.layers, env.n_actions)
        self.mixer = LinearMixer(env.state_dim, env.n_agents, cfg.mixer_hidden)

    def agent_inputs(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [..., n, obs_dim] -> [..., n, obs_dim + n] (scaled obs, one-hot id)."""
        return agent_inputs(obs, self.obs_norm if self.cfg.normalize_obs else None)

    def state_inputs(self, state: torch.Tensor) -> torch.Tensor:
        return self.state_norm(state) if self.cfg.normalize_obs else state


class OMIGA(Algorithm):
    Config = OMIGAConfig

    def __init__(self, config: OMIGAConfig, env: EnvInfo, device: torch.device, seed: int):
        super().__init__(config, env, device, seed)
        self.nets = OMIGANets(config, env).to(device)

    def setup(self, data: OfflineDataset) -> None:
        self.data, self.rng = data, np.random.default_rng(self.seed)
        self.nets.obs_norm.fit(data.obs)
        self.nets.state_norm.fit(data.state)
        self.target = copy.deepcopy(self.nets).requires_grad_(False)
        lr = self.config.lr
        self.q_params = [*self.nets.q.parameters(), *self.nets.mixer.parameters()]
        self.q_opt = torch.optim.Adam(self.q_params, lr=lr)
        self.v_opt = torch.optim.Adam(self.nets.v.parameters(), lr=lr)
        self.actor_opt = torch.optim.Adam(self.nets.actor.parameters(), lr=lr)

    def losses(self, batch: TransitionBatch) -> dict[str, torch.Tensor]:
        """The three OMIGA losses on a batch of joint transitions (see the module docstring)."""
        cfg, nets, target = self.config, self.nets, self.target
        x, x_next = nets.agent_inputs(batch.obs), nets.agent_inputs(batch.next_obs)
        s, s_next = nets.state_inputs(batch.state), nets.state_inputs(batch.next_state)
        a = batch.actions.unsqueeze(-1)

        # Critic: global TD target through the target mixer and the target local values.
        q_taken = nets.q(x).gather(-1, a).squeeze(-1)  # [B, n]
        with torch.no_grad():
            w_next, bias_next = target.mixer.weights_and_bias(s_next)
            v_next_tot = (w_next * target.v(x_next).squeeze(-1)).sum(-1) + bias_next
            y = batch.rewards + cfg.gamma * (1.0 - batch.terminated.float()) * v_next_tot
        q_loss = F.mse_loss(nets.mixer(q_taken, s), y)

        # Value: the global regulariser's dual, split over agents by the target mixer weights.
        with torch.no_grad():
            w, _ = target.mixer.weights_and_bias(s)
            wq = w * target.q(x).gather(-1, a).squeeze(-1)
        wv = w * nets.v(x).squeeze(-1)
        z = ((wq - wv) / cfg.alpha).clamp(-cfg.z_clip, cfg.z_clip)
        # Shifting by max(z) (floored at -1) keeps exp() finite; it rescales the loss by a
        # positive constant, so the minimiser is unchanged (as in the authors' trainer).
        shift = z.max().detach().clamp_min(-1.0)
        v_loss = (torch.exp(z - shift) + torch.exp(-shift) * wv / cfg.alpha).mean()

        # Policy: behaviour cloning weighted by exp(z_i).
        logp = F.log_softmax(mask_logits(nets.actor(x), batch.avail), -1).gather(-1, a).squeeze(-1)
        weight = torch.exp(z).detach()
        actor_loss = -(weight * logp).mean()
        return {"q_loss": q_loss, "v_loss": v_loss, "actor_loss": actor_loss,
                "weight_mean": weight.mean(), "td_target": y.mean()}

    def update(self) -> dict[str, float]:
        cfg = self.config
        self.nets.train()
        out = self.losses(self.data.transitions(cfg.batch_size, self.rng, self.device))
        # Separate optimisers, as in the authors' trainer: the losses share no parameters.
        steps = ((self.actor_opt, out["actor_loss"], self.nets.actor.parameters()),
                 (self.q_opt, out["q_loss"], self.q_params),
                 (self.v_opt, out["v_loss"], self.nets.v.parameters()))
        for opt, loss, params in steps:
            optimizer_step(opt, loss, params, cfg.grad_clip)
        soft_update(self.target, self.nets, self.config.tau)
        metrics = {k: v.item() for k, v in out.items()}
        metrics["loss"] = metrics["q_loss"] + metrics["v_loss"] + metrics["actor_loss"]
        return metrics

    def policy(self, greedy: bool = False, seed: int = 0) -> Policy:
        nets = self.nets
        return FeedForwardPolicy(nets, lambda obs, _state: nets.actor(nets.agent_inputs(obs)),
                                 self.device, greedy, seed)

    def modules(self) -> dict[str, nn.Module]:
        return {"nets": self.nets}


@hookimpl
def marlbench_algorithms() -> list[AlgorithmSpec]:
    return [AlgorithmSpec(
        name="omiga", cls=OMIGA,
        description="implicit global-to-local value regularisation, linear mixer, weighted BC",
        paper="Wang et al. 2023, Offline Multi-Agent RL with Implicit Global-to-Local Value "
              "Regularization (NeurIPS)",
        execution="decentralised", uses_global_state=True)]
