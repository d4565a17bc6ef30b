"""AlberDICE: alternating best-response DICE (Matsunaga et al., NeurIPS 2023).

The agents take turns. On agent i's turn the other agents' policies π_{-i} are held fixed and
agent i solves a single-agent DICE problem over its own stationary distribution d_i(s, a_i),
regularised towards the dataset's *joint* state-action distribution:

    max_{d_i >= 0}  E_{d_i(s, a_i) π_{-i}(a_{-i} | s)}[r]
                    - α D_f(d_i(s, a_i) π_{-i}(a_{-i} | s) || d^D(s, a_i, a_{-i}))
    s.t. Bellman flow constraints for d_i π_{-i}.

With KL, the regulariser splits into D(d_i || d^D(s, a_i)) plus the expected log-ratio of the
other agents' policies to the data policy of their actions given agent i's, so the reward
becomes r - α KL(π_{-i}(. | s) || π^D(. | s, a_i)) and the dataset's a_{-i} are reweighted to
π_{-i} by ρ_i = π_{-i}(a_{-i} | o_{-i}) / π^D(a_{-i} | s, a_i). Following the authors' code
(github.com/dematsunaga/alberdice, pymarl-master/src/learners/alberdice_learner.py), agent i's
turn is, with bars for stop-gradients and `marlbench.nn.dice` for the f-divergence pieces:

    data policy (on agent 0's turn, shared, own obs + id):
        L_D    = -E_D[sum_j log π^D(a_j | o_j, j)]
    data policy of the others given agent i (autoregressive, one network per i):
        L_AR,i = -E_D[sum_{k} log π^D_i(a_{j_k} | s, a_i, a_{j_1}, ..., a_{j_{k-1}})]
    correction (ν_i(s) the Lagrange multiplier, λ_i the normaliser; KL: log-sum-exp form):
        KL_i   = sum_j KL(π_j(. | o_j) || π^D_i(. | s, a_i, a_{<j}))
        ρ_i    = min(ρ_max, prod_j π_j(a_j | o_j) / π^D_i(a_j | s, a_i, a_{<j}))
        e_i    = r - α KL_i + γ (1 - terminated) ν_i(s') - ν_i(s)
        L_ν,i  = (1 - γ) E_{s0}[ν_i(s0)] + E_D[ρ_i α f*((e_i - λ_i) / α)] + λ_i
                 + c_gp E[||∇_s ν_i||^2]
    e-network (ê_i(s, a_i) ~ E_{a_{-i} ~ π_{-i}}[e_i], conservative towards the data policy):
        L_e,i  = E_ρ[(ê_i(s, a_i) - ē_i)^2]
                 + c_cql E_ρ[logsumexp_a ê_i(s, a) - E_{π^D_i}[ê_i(s, .)]]
    policy extraction, I-projection (the authors' code; optimum π_i ∝ π^D_i exp(ê_i / α)):
        L_π,i  = E_ρ[-sum_a π_i(a | o_i) ê_i(s, a) + α KL(π_i(. | o_i) || π^D(. | o_i, i))]
    or weighted BC (`extraction="wbc"`), w_i the correction of ê_i at the data action:
        L_π,i  = -E_ρ[w_i log π_i(a_i | o_i)]

E_ρ averages with the self-normalised weights ρ_i / mean(ρ_i). Each turn touches only agent i's
networks (policy, ν_i, λ_i, ê_i, autoregressive data policy) and their own optimisers; the
shared data policy is trained on agent 0's turn only, as in the authors' code. One `update()` is
one round: every agent's turn in order on the same batch (`num_iter_inner_loop: 1`).

Where this implementation and the authors' code differ from the paper or from each other:

* Paper vs code: the paper's (1 - γ) E_{p0}[ν(s0)] uses initial states; the authors' AlberDICE
  learner evaluates ν_i on every dataset state instead (`init_nu_i = nu(states)`), while their
  OptiDICE learner uses the episodes' first states. Default: the AlberDICE code's choice
  (`init_states="all"`).
* Paper vs code: the paper extracts the policy from the optimal correction; the code fits the
  e-network with an extra conservative (CQL-style) term `cql_coeff` towards the data policy and
  extracts by I-projection. Both are kept; weighted BC is offered as `extraction="wbc"`.
* The code samples 16 joint actions of the other agents to estimate KL_i and resamples the batch
  in proportion to ρ_i for the ν-, e- and policy losses. Here KL_i is exact (sum over each other
  agent's actions, with the autoregressive conditioning on the dataset's actions as in the code)
  and ρ_i weights the samples instead of resampling them: the same expectations, less noise.
* The code's e-network takes (s, one-hot a_i) and returns one value; here it returns one value
  per action of agent i (the usual discrete-action head). The CQL log-sum-exp runs over agent
  i's available actions only (the code uses all actions).
* Episode ends: the code turns every end, time limits included, into an absorbing state. Here a
  truncated step (RWARE's step 500) bootstraps from ν_i of the stored final state and only a
  true terminal drops γ ν_i(s') (`terminated` of the dataset transition).
* Networks: MLPs of two hidden layers everywhere; the authors' RWARE runs use per-agent
  transformers over the episode so far for the policies (`agent=sep_transformer`). Batches are
  single transitions, not the code's 32 whole episodes (a CPU budget).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from marlbench.api import Algorithm, AlgorithmSpec, EnvInfo, Policy, hookimpl, validate_config
from marlbench.data import OfflineDataset, TransitionBatch
from marlbench.nn import FixedNormalizer, agent_one_hot, dice, mask_logits, mlp
from marlbench.policies import FeedForwardPolicy

INIT_STATES = ("episode_start", "all")
EXTRACTIONS = ("iproj", "wbc")


@dataclass
class AlberDICEConfig:
    # AlberDICE repo: modules/critics/optidice.py (ν and e networks: fc1-fc2-fc3 of width
    # rnn_hidden_dim), modules/agents/sep_mlp_agent.py and mlp_agent.py (policies, data
    # policies) have two hidden layers; the README's RWARE command sets rnn_hidden_dim=128.
    hidden: int = 128
    layers: int = 2
    # alberdice_learner.py: ν-loss alpha * logsumexp(e / alpha + log ratio): the KL dual.
    f: str = "kl"
    # README RWARE command: alpha_start=1 alpha_end=1 (alberdice.yaml's default schedule
    # 5 -> 0.001 is overridden there).
    alpha: float = 1.0
    gamma: float = 0.99  # pymarl default.yaml `gamma: 0.99`
    lr: float = 5e-4  # README RWARE command lr=0.0005 (policies and data policies, Adam)
    nu_lr: float = 5e-4  # README RWARE command nu_lr=0.0005 (ν and e networks, Adam)
    # README RWARE command nu_grad_penalty_coeff=0.1
    grad_penalty: float = field(default=0.1, metadata={"check": "non-negative"})
    # default.yaml `cql_coeff: 0.1` (e-network conservative term)
    cql_coeff: float = field(default=0.1, metadata={"check": "non-negative"})
    # alberdice.yaml `other_policy_ratio_max: 100`
    ratio_max: float = field(default=100.0, metadata={"check": "positive"})
    init_states: str = "all"  # alberdice_learner.py: init_nu_i = nu(states) (see docstring)
    # alberdice_learner.py: "i-projection" policy loss. On rware-tiny-2ag expert (seed 0)
    # "wbc" returned 4.53 vs 2.73 for "iproj" (README); the default stays the authors'.
    extraction: str = "iproj"
    # The authors sample 32 episodes (~16k transitions) per update on a GPU; 512 joint
    # transitions per round keeps a round (n turns) within a CPU budget.
    batch_size: int = 512
    # Rounds (every agent's turn once). Default budget, sized for one cell under ~10 min on
    # one core: 5k rounds (~25 passes over a 100k-step dataset) ran at 14.4 rounds/s on a
    # loaded core (347 s, plus 8 s for 30 evaluation episodes) on rware-tiny-2ag; a round
    # costs n turns, so larger teams need `--steps` scaled down to stay in that budget.
    steps: int = 5_000
    normalize_obs: bool = True  # README RWARE command standardize_obs=True

    def __post_init__(self):
        validate_config(self)  # every numeric field by its meaning (marlbench.config)
        dice.validate(self.f, self.alpha)
        if self.gamma >= 1:
            raise ValueError(f"gamma must be < 1 (discounted stationary distributions), got "
                             f"{self.gamma}")
        if self.init_states not in INIT_STATES:
            raise ValueError(f"init_states must be one of {INIT_STATES}, got "
                             f"{self.init_states!r}")
        if self.extraction not in EXTRACTIONS:
            raise ValueError(f"extraction must be one of {EXTRACTIONS}, got "
                             f"{self.extraction!r}")


class AlberDICENets(nn.Module):
    """Per-agent policy, ν, λ, e-network and autoregressive data policy; a shared data policy."""

    def __init__(self, cfg: AlberDICEConfig, env: EnvInfo):
        super().__init__()
        self.cfg, self.n, self.A = cfg, env.n_agents, env.n_actions
        n, A, h, k = env.n_agents, env.n_actions, cfg.hidden, cfg.layers
        self.obs_norm = FixedNormalizer(env.obs_dim)
        self.state_norm = FixedNormalizer(env.state_dim)
        # sep_mlp agents: one network per agent, own observation only.
        self.actors = nn.ModuleList(mlp(env.obs_dim, h, k, A) for _ in range(n))
        # data_mac: one network shared by the agents, observation + one-hot id.
        self.data_actor = mlp(env.obs_dim + n, h, k, A)
        # ar_data_mac: per agent i, [id of j, s, a_i, actions of the others before j] -> a_j.
        ar_in = n + env.state_dim + A + max(n - 2, 0) * A
        self.ar_data = nn.ModuleList(mlp(ar_in, h, k, A) for _ in range(n))
        self.nu = nn.ModuleList(mlp(env.state_dim, h, k, 1) for _ in range(n))
        self.e = nn.ModuleList(mlp(env.state_dim, h, k, A) for _ in range(n))
        self.norms = nn.ModuleList(dice.Normaliser() for _ in range(n))

    def obs_inputs(self, obs: torch.Tensor) -> torch.Tensor:
        return self.obs_norm(obs) if self.cfg.normalize_obs else obs

    def state_inputs(self, state: torch.Tensor) -> torch.Tensor:
        return self.state_norm(state) if self.cfg.normalize_obs else state

    def logits(self, obs: torch.Tensor, _state: torch.Tensor | None = None) -> torch.Tensor:
        """Decentralised policies: obs [..., n, obs_dim] -> [..., n, A]."""
        x = self.obs_inputs(obs)
        return torch.stack([self.actors[i](x[..., i, :]) for i in range(self.n)], -2)

    def data_logits(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.obs_inputs(obs)
        return self.data_actor(torch.cat([x, agent_one_hot(self.n, x.shape[:-2], x.device)], -1))

    def ar_logits(self, i: int, s: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """π^D_i(a_j | s, a_i, a_{others before j}) logits for the others j != i, in order.

        s [B, state_dim] (scaled), actions [B, n] -> [B, n - 1, A].
        """
        n, A = self.n, self.A
        onehot = F.one_hot(actions, A).to(s.dtype)  # [B, n, A]
        others = [j for j in range(n) if j != i]
        ids = torch.eye(n, dtype=s.dtype, device=s.device)
        rows = []
        for k, j in enumerate(others):
            prev = onehot[:, others[:k]].flatten(1)  # actions of the others before j
            pad = s.new_zeros(s.shape[0], max(n - 2, 0) * A - prev.shape[1])
            rows.append(torch.cat([ids[j].expand(s.shape[0], n), s, onehot[:, i], prev, pad],
                                  -1))
        return self.ar_data[i](torch.stack(rows, 1))

    def agent_modules(self, i: int) -> list[nn.Module]:
        """The networks agent i's turn trains (the shared data policy aside)."""
        return [self.actors[i], self.ar_data[i], self.nu[i], self.e[i], self.norms[i]]


class AlberDICE(Algorithm):
    Config = AlberDICEConfig

    def __init__(self, config: AlberDICEConfig, env: EnvInfo, device: torch.device, seed: int):
        super().__init__(config, env, device, seed)
        self.nets = AlberDICENets(config, env).to(device)

    def setup(self, data: OfflineDataset) -> None:
        cfg, nets = self.config, self.nets
        self.data, self.rng = data, np.random.default_rng(self.seed)
        self.gen = torch.Generator(self.device).manual_seed(self.seed)
        nets.obs_norm.fit(data.obs)
        nets.state_norm.fit(data.state)
        starts = torch.from_numpy(data.start) if cfg.init_states == "episode_start" else None
        self.init_pool = data.state if starts is None else data.state[starts]
        adam = torch.optim.Adam
        self.data_opt = adam(nets.data_actor.parameters(), lr=cfg.lr)
        # One optimiser per agent and network: a turn never moves another agent's parameters
        # (not even through Adam momentum), as with the authors' per-agent optimisers.
        self.actor_opts = [adam(m.parameters(), lr=cfg.lr) for m in nets.actors]
        self.ar_opts = [adam(m.parameters(), lr=cfg.lr) for m in nets.ar_data]
        self.nu_opts = [adam([*nets.nu[i].parameters(), *nets.norms[i].parameters()],
                             lr=cfg.nu_lr) for i in range(nets.n)]
        self.e_opts = [adam(m.parameters(), lr=cfg.nu_lr) for m in nets.e]

    def sample_init(self, size: int) -> torch.Tensor:
        idx = torch.from_numpy(self.rng.integers(0, len(self.init_pool), size))
        return self.init_pool[idx].to(self.device)

    @staticmethod
    def _step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.no_grad()
    def others(self, i: int, b: TransitionBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(KL_i [B], ρ_i [B]): the other agents' current policies against the data policy of
        their actions given agent i's (see the module docstring)."""
        nets = self.nets
        others = [j for j in range(nets.n) if j != i]
        avail = b.avail[:, others]
        logp_pi = F.log_softmax(mask_logits(nets.logits(b.obs)[:, others], avail), -1)
        ar = nets.ar_logits(i, nets.state_inputs(b.state), b.actions)
        logp_d = F.log_softmax(mask_logits(ar, avail), -1)
        kl = (logp_pi.exp() * (logp_pi - logp_d)).masked_fill(~avail, 0.0).sum((-1, -2))
        a = b.actions[:, others].unsqueeze(-1)
        log_ratio = (logp_pi.gather(-1, a) - logp_d.gather(-1, a)).squeeze(-1).sum(-1)
        rho = torch.exp(log_ratio.clamp(max=float(np.log(self.config.ratio_max))))
        return kl, rho

    def nu_objective(self, i: int, b: TransitionBatch, init_state: torch.Tensor,
                     kl: torch.Tensor, rho: torch.Tensor, nu: nn.Module | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(L_ν,i, e_i [B], gradient penalty) for agent i given the others' KL_i and ρ_i;
        `nu` evaluates another ν-network on the same objective (default: agent i's)."""
        cfg, nets = self.config, self.nets
        nu = nets.nu[i] if nu is None else nu
        s = nets.state_inputs(b.state)
        v = nu(s).squeeze(-1)
        v_next = nu(nets.state_inputs(b.next_state)).squeeze(-1)
        v_init = nu(nets.state_inputs(init_state)).squeeze(-1)
        # A time-limit end is not `terminated`: it bootstraps from the stored final state.
        e = b.rewards - cfg.alpha * kl + cfg.gamma * (1.0 - b.terminated.float()) * v_next - v
        loss = dice.nu_loss(cfg.f, e, v_init, cfg.alpha, cfg.gamma, nets.norms[i].lam, rho)
        gp = (dice.gradient_penalty(nu, s, self.gen) if cfg.grad_penalty > 0
              else torch.zeros((), device=s.device))
        return loss, e, gp

    def turn(self, i: int, b: TransitionBatch, init_state: torch.Tensor) -> dict[str, float]:
        """Agent i's best-response step with the other agents' policies fixed."""
        cfg, nets = self.config, self.nets
        metrics: dict[str, float] = {}
        s = nets.state_inputs(b.state)
        a_i = b.actions[:, i]

        if i == 0:  # the shared data policy: behaviour cloning of every agent
            logits = mask_logits(nets.data_logits(b.obs), b.avail)
            data_loss = F.cross_entropy(logits.flatten(0, 1), b.actions.flatten())
            self._step(self.data_opt, data_loss)
            metrics["data_loss"] = data_loss.item()

        if nets.n > 1:  # the others' data policy given agent i's action
            others = [j for j in range(nets.n) if j != i]
            ar = mask_logits(nets.ar_logits(i, s, b.actions), b.avail[:, others])
            ar_loss = F.cross_entropy(ar.flatten(0, 1), b.actions[:, others].flatten()) * \
                len(others)
            self._step(self.ar_opts[i], ar_loss)
            metrics["ar_loss"] = ar_loss.item()
            kl, rho = self.others(i, b)
        else:  # a single agent: plain OptiDICE-style DICE
            kl, rho = torch.zeros_like(b.rewards), torch.ones_like(b.rewards)
        rho_n = rho / rho.mean()  # self-normalised importance weights (E_ρ)
        with torch.no_grad():
            logp_data_i = F.log_softmax(
                mask_logits(nets.data_logits(b.obs)[:, i], b.avail[:, i]), -1)

        # ν_i: the DICE Lagrangian on the reweighted joint transitions.
        lam = nets.norms[i].lam
        nu_loss, e, gp = self.nu_objective(i, b, init_state, kl, rho)
        self._step(self.nu_opts[i], nu_loss + cfg.grad_penalty * gp)
        w = dice.correction_weights(cfg.f, e.detach(), cfg.alpha, lam.detach(), rho)

        # ê_i(s, a_i): regression onto e_i under π_{-i}, conservative towards π^D_i.
        e_all = nets.e[i](s)  # [B, A]
        e_taken = e_all.gather(-1, a_i.unsqueeze(-1)).squeeze(-1)
        lse = torch.logsumexp(mask_logits(e_all, b.avail[:, i]), -1)
        cql = lse - (logp_data_i.exp() * e_all).sum(-1)
        e_loss = (rho_n * ((e_taken - e.detach()) ** 2 + cfg.cql_coeff * cql)).mean()
        self._step(self.e_opts[i], e_loss)

        # Policy extraction for agent i.
        logp = F.log_softmax(mask_logits(nets.actors[i](nets.obs_inputs(b.obs[:, i])),
                                         b.avail[:, i]), -1)
        e_hat = e_all.detach()
        if cfg.extraction == "iproj":
            p = logp.exp()
            per = -(p * e_hat).sum(-1) + cfg.alpha * (p * (logp - logp_data_i)).sum(-1)
        else:
            w_pi = dice.correction_weights(cfg.f, e_taken.detach(), cfg.alpha, lam.detach(),
                                           rho_n)
            per = -w_pi * logp.gather(-1, a_i.unsqueeze(-1)).squeeze(-1)
        actor_loss = (rho_n * per).mean()
        self._step(self.actor_opts[i], actor_loss)

        ess = (rho_n * w).sum() ** 2 / ((rho_n * w).pow(2).sum() * w.numel()).clamp_min(1e-30)
        metrics.update({
            "nu_loss": nu_loss.item(), "e_loss": e_loss.item(), "actor_loss": actor_loss.item(),
            "grad_penalty": gp.item(), "kl_others": kl.mean().item(),
            "ratio_mean": rho.mean().item(), "w_mean": (rho_n * w).mean().item(),
            "w_max": w.max().item(), "w_ess": ess.item(), "e_mean": e.mean().item(),
            "lam": lam.item(),
            "accuracy": (logp.argmax(-1) == a_i).float().mean().item()})
        return metrics

    def update(self) -> dict[str, float]:
        cfg = self.config
        self.nets.train()
        b = self.data.transitions(cfg.batch_size, self.rng, self.device)
        init = self.sample_init(cfg.batch_size)
        per_agent = [self.turn(i, b, init) for i in range(self.nets.n)]
        metrics = {k: float(np.mean([m[k] for m in per_agent if k in m]))
                   for k in per_agent[-1]}
        metrics.update({k: v for k, v in per_agent[0].items() if k == "data_loss"})
        metrics["loss"] = metrics["nu_loss"] + metrics["e_loss"] + metrics["actor_loss"]
        return metrics

    def policy(self, greedy: bool = False, seed: int = 0) -> Policy:
        return FeedForwardPolicy(self.nets, self.nets.logits, self.device, greedy, seed)

    def modules(self) -> dict[str, nn.Module]:
        return {"nets": self.nets}


@hookimpl
def marlbench_algorithms() -> list[AlgorithmSpec]:
    return [AlgorithmSpec(
        name="alberdice", cls=AlberDICE,
        description="alternating best-response DICE: per-agent correction against the joint "
                    "data distribution, I-projection policy extraction",
        paper="Matsunaga et al. 2023, AlberDICE: Addressing Out-Of-Distribution Joint Actions "
              "in Offline Multi-Agent RL via Alternating Stationary Distribution Correction "
              "Estimation (NeurIPS)",
        execution="decentralised", uses_global_state=True)]
