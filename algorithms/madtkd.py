"""MADTKD: offline MARL with knowledge distillation (Tseng et al., NeurIPS 2022).

A centralised *teacher* decision transformer reads every agent's tokens; decentralised
*student* decision transformers, one per agent, read only their own and learn from the data and
from the teacher. Only the students act, so execution is decentralised.

Teacher. Per timestep t the teacher gets 2n + 1 tokens: the team return-to-go R_t, every
agent's observation o_t^1..o_t^n (with its one-hot id) and every agent's action a_t^1..a_t^n
(plus a learned agent embedding), each plus a timestep embedding; a GPT over the last K steps
(`marlbench.nn.gpt`) with a step mask: a token sees all tokens of earlier steps, and the return
and observation tokens of its own step; only action tokens also see the actions of their step.
The output h_t^i at o_t^i has seen all agents' observations at t and their past, never a_t:

    L_T(φ) = E_D [ mean_{i, valid t} -log softmax(mask(W_T h_t^i, avail_t^i))[a_t^i] ]

Students. Student i is a decision transformer over its own (R_t, o_t^i, a_t^i) tokens (as
MADT, but with its own parameters by default: the paper distils into independent decision
transformers), with logits z_t^i and a relation embedding g_t^i = M(trunk output at o_t^i).
With the trained teacher fixed (no gradient reaches it), the students minimise

    L_S(θ) = CE(z^i_t, a^i_t)
             + α τ² KL( softmax(z_T/τ) || softmax(z_S/τ) )                    (action KD)
             + β mean_{i<j} Huber( cos(g_t^i, g_t^j) - cos(h_t^i, h_t^j) )  (relational KD)

averaged over agents and valid steps, every softmax over the available actions only; an
agent's steps with a single available action (a dead agent's forced no-op) carry no choice and
are left out of the cross-entropies, the action KD and the accuracy (`choice_mask`). The
relational term matches, step by step, how similar agents' features are to one another: the
structure the teacher learned from seeing all agents, which no single student can see.

Schedule (paper: teacher first, then distillation): the first `teacher_steps` updates train the
teacher, the rest the students. At evaluation R_0 is the target return (10% above the best
dataset return, MADS4 §5.2) and R_{t+1} = R_t - r_t; each student reads its last K steps.

Sources. The paper's text fixes the teacher/student split and the two distillation targets
(abstract and project page: "first train a teacher policy ... distill not only the teacher
policy's features but also its structural relations among different agents' features").
The loss forms and weights follow the MADTKD baseline in the CFCQL authors' code
(github.com/thu-rllab/CFCQL, discrete/src/learners/baseline_madtkd_learner.py and
config/algs/baseline_madtkd.yaml; cited as `CFCQL repo`): KL from the teacher's policy to the
student's, Huber loss between teacher and student cosine similarities of every agent pair,
weights α = β = 0.5. No code of the MADTKD authors was found.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from marlbench.api import Algorithm, AlgorithmSpec, EnvInfo, Policy, hookimpl, validate_config
from marlbench.data import OfflineDataset
from marlbench.errors import MarlbenchError
from marlbench.nn import (
    ActionSampler,
    FixedNormalizer,
    agent_inputs,
    choice_mask,
    mask_logits,
    masked_mean,
    optimizer_step,
    target_return,
)
from marlbench.nn.gpt import GPT, step_mask, weight_decay_groups


@dataclass
class MADTKDConfig:
    # Transformer size for teacher and students: the MADT repo's GPTConfig(n_layer=2, n_head=2,
    # n_embd=32) (ReinholdM/Offline-Pre-trained-Multi-Agent-Decision-Transformer,
    # sc2/run_madt_sc2.py), the DT baseline MADTKD builds on, and marlbench's MADT default, so
    # the two differ only by the teacher and the distillation. The paper's size is not known
    # here beyond the ~1.8M parameters MADS4 quotes (MADS4 §5.4); that size is ~50x slower on
    # one CPU thread. The CFCQL repo's baseline uses n_embd 32 with 1 layer and 1 head.
    dim: int = 32
    layers: int = 2
    heads: int = 2
    mlp_ratio: int = 2  # MADT repo / CFCQL repo gpt_model.py Block: Linear(n_embd, 2 * n_embd)
    dropout: float = 0.0  # CFCQL repo baseline_madtkd.yaml: attn/embd/resid_pdrop 0
    # Context K in steps. CFCQL repo's context_length 1 makes every model memoryless; RWARE's
    # 3x3 views make memory useful. 20 is DT's default (kzl/decision-transformer
    # gym/experiment.py `--K 20`) and marlbench's MADT default.
    context: int = 20
    lr: float = 5e-4  # CFCQL repo baseline_madtkd.yaml `lr: 0.0005` (= MADT repo offline_lr)
    betas: tuple[float, float] = (0.9, 0.95)  # CFCQL repo gpt_model.py configure_optimizers
    weight_decay: float = 0.1  # CFCQL repo baseline_madtkd.yaml, linear weights only
    grad_clip: float = 0.5  # MADT repo TrainerConfig grad_norm_clip (CFCQL repo: no clipping)
    # Agent windows per update (128 // n episode windows with every agent in them): CFCQL repo
    # baseline_madtkd.yaml `batch_size: 128` (episodes there), MADT repo mini-batch 128.
    batch_size: int = 128
    # Default budget: total updates, the first `teacher_steps` for the teacher. Chosen so one
    # rware-tiny-2ag cell stays under ~10 min on one CPU thread: measured on a loaded machine,
    # a teacher update takes ~52 ms and a student update (teacher forward, two students,
    # distillation) ~71 ms, against ~39 ms for a MADT update; 3000 + 5000 updates are ~8.5 min
    # of training. MADT's 10k updates sit at 0.96 training accuracy from ~8k on.
    steps: int = 8000
    teacher_steps: int = 3000
    # Distillation weights: CFCQL repo baseline_madtkd.yaml `alpha: 0.5` (action KL) and
    # `beta: 0.5` (relational Huber).
    alpha: float = 0.5
    beta: float = 0.5
    # Softmax temperature of the action KD (Hinton et al. 2015; the τ² factor keeps gradient
    # scale); the CFCQL repo compares plain probabilities, i.e. τ = 1.
    temperature: float = 1.0
    # One student per agent (paper/project page: the teacher is distilled into independent
    # decision transformers); True shares one student with the agent id, as MADT and the
    # CFCQL repo's baseline do.
    shared_student: bool = False
    # Return-to-go the students condition on at evaluation; None = the best dataset return
    # plus 10% (MADS4 §5.2).
    target_return: float | None = None
    normalize_obs: bool = True  # RWARE coordinates reach 20 while other features are 0/1

    def __post_init__(self):
        self.betas = tuple(self.betas)  # a list when read back from config.json
        validate_config(self)  # every numeric field by its meaning (marlbench.config)
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.teacher_steps >= self.steps:
            raise ValueError(f"teacher_steps must be below steps so the students train, got "
                             f"{self.teacher_steps} with steps={self.steps}")
        if len(self.betas) != 2:
            raise ValueError(f"betas must be two numbers, got {self.betas}")


class _Tokens(nn.Module):
    """Return, observation and action encoders (MADT repo: Linear/Embedding + tanh) and a
    timestep embedding that starts at zero (MADT repo `global_pos_emb`)."""

    def __init__(self, d: int, in_dim: int, n_actions: int, episode_limit: int):
        super().__init__()
        self.episode_limit = episode_limit
        self.ret = nn.Sequential(nn.Linear(1, d), nn.Tanh())
        self.obs = nn.Sequential(nn.Linear(in_dim, d), nn.Tanh())
        self.act = nn.Sequential(nn.Embedding(n_actions, d), nn.Tanh())
        nn.init.normal_(self.act[0].weight, 0.0, 0.02)
        self.time = nn.Embedding(episode_limit, d)
        nn.init.zeros_(self.time.weight)

    def timestep(self, t: torch.Tensor) -> torch.Tensor:
        return self.time(t.clamp(0, self.episode_limit - 1))


class Student(nn.Module):
    """A decision transformer over one agent's (R_t, o_t, a_t) tokens."""

    def __init__(self, cfg: MADTKDConfig, env: EnvInfo):
        super().__init__()
        d = cfg.dim
        self.embed = _Tokens(d, env.obs_dim + env.n_agents, env.n_actions, env.episode_limit)
        # A window of K steps ends at o_t: 3K - 1 tokens.
        self.gpt = GPT(d, cfg.layers, cfg.heads, span=3 * cfg.context - 1,
                       mlp_ratio=cfg.mlp_ratio, dropout=cfg.dropout)
        self.head = nn.Linear(d, env.n_actions, bias=False)
        # Relation embedding g = M(h) (CFCQL repo gpt_model.py `mapping_net`: d -> 2d -> d).
        self.relate = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, rtg: torch.Tensor, obs: torch.Tensor, actions: torch.Tensor,
                timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """rtg [S, T] (scaled), obs [S, T, obs_dim + n], actions [S, T], timesteps [S, T] ->
        (logits [S, T, A], relation embeddings [S, T, d])."""
        e = self.embed
        time = e.timestep(timesteps)
        tokens = torch.stack([e.ret(rtg.unsqueeze(-1)) + time, e.obs(obs) + time,
                              e.act(actions) + time], 2)
        S, T = rtg.shape
        h = self.gpt(tokens.reshape(S, 3 * T, -1)[:, :-1])[:, 1::3]  # at the obs tokens
        return self.head(h), self.relate(h)


class Teacher(nn.Module):
    """A decision transformer over all agents' tokens, 2n + 1 per step (see module doc)."""

    def __init__(self, cfg: MADTKDConfig, env: EnvInfo):
        super().__init__()
        d, n = cfg.dim, env.n_agents
        self.n = n
        self.embed = _Tokens(d, env.obs_dim + n, env.n_actions, env.episode_limit)
        self.agent = nn.Embedding(n, d)  # which agent an action token belongs to
        nn.init.normal_(self.agent.weight, 0.0, 0.02)
        self.gpt = GPT(d, cfg.layers, cfg.heads, span=(2 * n + 1) * cfg.context,
                       mlp_ratio=cfg.mlp_ratio, dropout=cfg.dropout)
        self.head = nn.Linear(d, env.n_actions, bias=False)
        self._masks: dict[tuple[int, str], torch.Tensor] = {}

    def mask(self, T: int, device: torch.device) -> torch.Tensor:
        """Step mask over T steps of [R, o^1..o^n, a^1..a^n] minus the last step's actions."""
        key = (T, str(device))
        if key not in self._masks:
            n = self.n
            kind = torch.tensor([0] + [1] * n + [2] * n, device=device).repeat(T)
            step = torch.arange(T, device=device).repeat_interleave(2 * n + 1)
            kind, step = kind[:-n], step[:-n]
            is_act = kind == 2
            sees = ~is_act[None, :] | is_act[:, None]  # actions of a step: seen by actions only
            self._masks[key] = step_mask(step, sees)
        return self._masks[key]

    def forward(self, rtg: torch.Tensor, obs: torch.Tensor, actions: torch.Tensor,
                timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """rtg [B, T] (scaled), obs [B, T, n, obs_dim + n], actions [B, T, n], timesteps
        [B, T] -> (logits [B, T, n, A], features h [B, T, n, d])."""
        e, n = self.embed, self.n
        B, T = rtg.shape
        time = e.timestep(timesteps).unsqueeze(2)  # [B, T, 1, d]
        tokens = torch.cat([e.ret(rtg.unsqueeze(-1)).unsqueeze(2) + time, e.obs(obs) + time,
                            e.act(actions) + self.agent.weight + time], 2)  # [B, T, 2n+1, d]
        x = tokens.reshape(B, T * (2 * n + 1), -1)[:, :-n]  # last actions are only targets
        y = self.gpt(x, self.mask(T, x.device))
        y = torch.cat([y, y.new_zeros(B, n, y.shape[-1])], 1).reshape(B, T, 2 * n + 1, -1)
        h = y[:, :, 1:1 + n]  # at the observation tokens
        return self.head(h), h


class MADTKDNet(nn.Module):
    """Input normaliser, the teacher and the students (one, if shared)."""

    def __init__(self, cfg: MADTKDConfig, env: EnvInfo):
        super().__init__()
        self.cfg, self.n = cfg, env.n_agents
        self.norm = FixedNormalizer(env.obs_dim)
        self.teacher = Teacher(cfg, env)
        self.students = nn.ModuleList(
            Student(cfg, env) for _ in range(1 if cfg.shared_student else env.n_agents))

    def agent_inputs(self, obs: torch.Tensor) -> torch.Tensor:
        """obs [..., n, obs_dim] -> normalised obs with the agent's one-hot id appended."""
        return agent_inputs(obs, self.norm if self.cfg.normalize_obs else None)

    def student_forward(self, rtg: torch.Tensor, obs: torch.Tensor, actions: torch.Tensor,
                        timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every agent's student on its own sequence: rtg [B, T], obs [B, T, n, obs_dim + n]
        (from `agent_inputs`), actions [B, T, n], timesteps [B, T] -> (logits [B, T, n, A],
        relation embeddings [B, T, n, d])."""
        B, T, n = actions.shape
        if len(self.students) == 1:  # shared: all agents as one batch of sequences
            def per_agent(x):  # [B, T, n, ...] -> [B * n, T, ...]
                return x.transpose(1, 2).reshape(B * n, T, *x.shape[3:])
            z, g = self.students[0](per_agent(rtg.unsqueeze(2).expand(B, T, n)),
                                    per_agent(obs), per_agent(actions),
                                    per_agent(timesteps.unsqueeze(2).expand(B, T, n)))
            return (z.reshape(B, n, T, -1).transpose(1, 2),
                    g.reshape(B, n, T, -1).transpose(1, 2))
        outs = [s(rtg, obs[:, :, i], actions[:, :, i], timesteps)
                for i, s in enumerate(self.students)]
        return torch.stack([o[0] for o in outs], 2), torch.stack([o[1] for o in outs], 2)


def pair_cosines(x: torch.Tensor) -> torch.Tensor:
    """[..., n, d] -> cosine similarity of every agent pair i < j, [..., n (n - 1) / 2]."""
    n = x.shape[-2]
    i, j = torch.triu_indices(n, n, 1, device=x.device)
    return F.cosine_similarity(x[..., i, :], x[..., j, :], dim=-1)


def distillation_losses(z_s: torch.Tensor, g_s: torch.Tensor, z_t: torch.Tensor,
                        h_t: torch.Tensor, avail: torch.Tensor, valid: torch.Tensor,
                        temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Action KD τ² KL(p_T || p_S) over available actions, averaged over the agent steps
    with a choice, and relational KD (Huber between pair cosines), averaged over valid steps:
    z [B, T, n, A], g/h [B, T, n, d], avail [B, T, n, A], valid [B, T]."""
    log_p_s = F.log_softmax(mask_logits(z_s, avail) / temperature, -1)
    log_p_t = F.log_softmax(mask_logits(z_t, avail) / temperature, -1)
    kl = F.kl_div(log_p_s, log_p_t, log_target=True, reduction="none").sum(-1)  # [B, T, n]
    kd = temperature ** 2 * masked_mean(kl, valid[..., None] & choice_mask(avail))
    if g_s.shape[-2] < 2:  # one agent has no relations
        return kd, z_s.new_zeros(())
    rel = F.huber_loss(pair_cosines(g_s), pair_cosines(h_t), reduction="none")  # [B, T, P]
    return kd, rel[valid].mean()


def _choice_ce(logits: torch.Tensor, actions: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits [B, T, n, A] (masked) on actions [B, T, n], averaged over the
    agent steps in `choice` [B, T, n]."""
    ce = F.cross_entropy(logits.flatten(0, -2), actions.flatten(), reduction="none")
    return masked_mean(ce, choice.flatten())


class MADTKD(Algorithm):
    Config = MADTKDConfig

    def __init__(self, config: MADTKDConfig, env: EnvInfo, device: torch.device, seed: int):
        super().__init__(config, env, device, seed)
        self.net = MADTKDNet(config, env).to(device)
        self.target_return, self.return_scale = 0.0, 1.0
        self.updates = 0  # teacher updates first, then student updates

    def setup(self, data: OfflineDataset) -> None:
        self.data, self.rng = data, np.random.default_rng(self.seed)
        self.net.norm.fit(data.obs)
        best = data.max_return
        self.target_return = (self.config.target_return if self.config.target_return is not None
                              else target_return(best))  # MADS4 §5.2: 10% above the best
        # Returns-to-go enter divided by the largest |return| in the data (O(1) on any task).
        self.return_scale = float(np.abs(data.returns).max()) or 1.0
        # Episodes drawn in proportion to their length, windows uniformly within (DT's rule).
        self.episode_p = data.length / data.length.sum()
        self.episodes_per_batch = max(1, self.config.batch_size // self.env.n_agents)
        cfg = self.config
        self.teacher_opt = torch.optim.AdamW(
            weight_decay_groups(self.net.teacher, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
        self.student_opt = torch.optim.AdamW(
            weight_decay_groups(self.net.students, cfg.weight_decay), lr=cfg.lr,
            betas=cfg.betas)

    def _batch(self):
        episodes = self.rng.choice(len(self.episode_p), self.episodes_per_batch, p=self.episode_p)
        b = self.data.trajectories(len(episodes), self.rng, length=self.config.context,
                                   episodes=episodes, device=self.device)
        return (b.rtg / self.return_scale, self.net.agent_inputs(b.obs), b.actions,
                b.timesteps, b.avail, b.mask)

    def update(self) -> dict[str, float]:
        rtg, obs, actions, timesteps, avail, valid = self._batch()
        cfg = self.config
        zero = torch.zeros((), device=self.device)
        teacher_phase = self.updates < cfg.teacher_steps
        choice = valid[..., None] & choice_mask(avail)  # [B, T, n]: decisions, not no-ops
        if teacher_phase:
            self.net.teacher.train()
            logits, _ = self.net.teacher(rtg, obs, actions, timesteps)
            logits = mask_logits(logits, avail)
            ce = _choice_ce(logits, actions, choice)
            loss, kd, rel, opt, params = ce, zero, zero, self.teacher_opt, self.net.teacher
        else:
            self.net.teacher.eval()
            with torch.no_grad():  # the trained teacher stays fixed
                z_t, h_t = self.net.teacher(rtg, obs, actions, timesteps)
            self.net.students.train()
            z_s, g_s = self.net.student_forward(rtg, obs, actions, timesteps)
            logits = mask_logits(z_s, avail)
            ce = _choice_ce(logits, actions, choice)
            kd, rel = distillation_losses(z_s, g_s, z_t, h_t, avail, valid, cfg.temperature)
            loss = ce + cfg.alpha * kd + cfg.beta * rel
            opt, params = self.student_opt, self.net.students
        grad = optimizer_step(opt, loss, params.parameters(), cfg.grad_clip)
        opt.zero_grad(set_to_none=True)  # the fixed teacher keeps no stale gradients
        self.updates += 1
        acc = masked_mean((logits.argmax(-1) == actions).float(), choice)
        return {"loss": loss.item(), "accuracy": acc.item(), "ce": ce.item(),
                "kd": kd.item(), "relation": rel.item(), "grad_norm": grad.item(),
                "student_phase": float(not teacher_phase)}

    def policy(self, greedy: bool = False, seed: int = 0) -> Policy:
        if self.updates <= self.config.teacher_steps:
            raise MarlbenchError(
                f"madtkd's students have not trained: {self.updates} updates so far, the first "
                f"teacher_steps={self.config.teacher_steps} train the teacher; run more steps "
                f"than teacher_steps (e.g. --set teacher_steps=N with N below --steps)")
        return MADTKDPolicy(self.net, self.env, self.target_return, self.return_scale,
                            self.device, greedy, seed)

    def modules(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def extra_state(self) -> dict[str, float]:
        return {"target_return": self.target_return, "return_scale": self.return_scale,
                "updates": self.updates}

    def load_extra_state(self, state) -> None:
        self.target_return = float(state["target_return"])
        self.return_scale = float(state["return_scale"])
        self.updates = int(state["updates"])


class MADTKDPolicy(Policy):
    """The students act, each on the team return-to-go still to collect and its own last K
    steps, recomputed as one training window every step (the DT/MADT evaluation)."""

    def __init__(self, net: MADTKDNet, env: EnvInfo, target_return: float, return_scale: float,
                 device: torch.device, greedy: bool, seed: int):
        self.net, self.env, self.device = net.eval(), env, device
        self.target_return, self.return_scale = target_return, return_scale
        self.K = net.cfg.context
        self.choose = ActionSampler(greedy, seed, device)

    def reset(self, n_envs: int) -> None:
        self.choose.reset(n_envs)
        self.t = 0
        self.rtg = torch.full((n_envs,), self.target_return, device=self.device)
        # The last K steps' (scaled return-to-go [B], agent inputs [B, n, in]) and the actions
        # taken at the K - 1 steps before the current one.
        self.window: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=self.K)
        self.taken: deque[torch.Tensor] = deque(maxlen=self.K - 1)

    @torch.inference_mode()
    def act(self, obs: np.ndarray, state: np.ndarray, avail: np.ndarray) -> np.ndarray:
        B, n = obs.shape[:2]
        x = self.net.agent_inputs(torch.as_tensor(obs, device=self.device))
        self.window.append((self.rtg / self.return_scale, x))
        rtgs, xs = (torch.stack(v, 1) for v in zip(*self.window))  # [B, L], [B, L, n, in]
        L = rtgs.shape[1]
        # The current step's action is only ever a target: any value stands in for it.
        acts = torch.stack([*self.taken, torch.zeros(B, n, dtype=torch.long,
                                                     device=self.device)], 1)
        steps = torch.arange(self.t - L + 1, self.t + 1, device=self.device).expand(B, -1)
        logits, _ = self.net.student_forward(rtgs, xs, acts, steps)
        actions = self.choose(logits[:, -1], torch.as_tensor(avail, device=self.device))
        self.taken.append(actions)
        self.t += 1
        return actions.cpu().numpy()

    def observe(self, rewards: np.ndarray) -> None:
        self.rtg -= torch.as_tensor(rewards, dtype=torch.float32, device=self.device)


@hookimpl
def marlbench_algorithms() -> list[AlgorithmSpec]:
    return [AlgorithmSpec(
        name="madtkd", cls=MADTKD,
        description="centralised teacher decision transformer over all agents' tokens, "
                    "distilled (action KL + relational) into per-agent student decision "
                    "transformers that act alone",
        paper="Tseng et al. 2022, Offline Multi-Agent Reinforcement Learning with Knowledge "
              "Distillation (NeurIPS 2022)",
        execution="decentralised", uses_global_state=False)]
