"""Multi-Agent Decision S4 (MADS4), IDS4 and MADS4-dec (Bhattacharya & Bal, AAMAS 2026).

Each agent is a Decision-S4 policy over its own trajectory of tokens (§4.1, Eq. 7, Fig. 1b)

    u_i^t = ReLU(W [e(R^t); e(s_g^t); e(o_i^t); e(a_i^{t-1}); e(m_{i-1}^t); e(i)] + b),
    e(x) = ReLU(W_x x + b_x)   (one Linear+ReLU encoder per part, inputs normalised)

then stacked S4 blocks [norm -> S4 -> Linear+GELU -> dropout] with residuals, and heads for the
action logits and the outgoing message. One network is shared by all agents (parameter
sharing). The projection W is applied part by part (`MADS4Net.agent_tokens`, `token`):
W_R e(R) + W_s e(s_g) + b is the same for every agent at a timestep and is computed once per
timestep, W_o e(o_i) + W_a e(a_i) + W_id e(i) once for all agents together, and only
W_m e(m_{i-1}) waits for the predecessor; the same function as the concatenated form, in
both views, with a sixth of the state encoder's work on six agents.

Agents act one after another within a timestep (the sequentially expanded MDP, §3.2): agent i
receives m_{i-1}^t, a projection of its predecessor's S4 state at the same timestep (§3.5).
The message is read out of the last block's SSM state through a second learned C row per
channel (exact in the convolutional and the recurrent view; see marlbench.nn.s4), so in
training, where each agent is one convolutional pass over whole trajectories, gradients of
agent i+1's loss flow back into agent i (Eq. 6).

    loss = - Σ_{valid t} Σ_{i: |avail_i^t| > 1} log softmax(mask(logits_i^t, avail_i^t))[a_i^t]
           / #{(t, i) counted}                                            (Algorithm 1)

Steps where an agent had a single available action (a dead SMAX/SMAC agent's forced no-op; the
data marks death no other way) carry no choice and are left out of the loss and the accuracy.

Variants: `share` = memory (the paper's MADS4) | logits | both | none (IDS4: no information
sharing, parameters still shared); `decentralised` (MADS4-dec, §5.4: the predecessor's message
from t-1, so agents act in parallel); `order` = fixed | random (Fig. 4a). Evaluation runs the
recurrent view at constant cost per step (O(N) per S4 channel) with the return-to-go target
1.1 x the best dataset return (§5.2), decremented by the team reward after every step, and
acts in the order 0..n-1 also after training with `order=random`: training draws one uniform
permutation per update, so 0..n-1 is one of the orders trained on, the BatchNorm statistics
are kept per position (shared by every permutation), and a fixed order keeps an episode's
result independent of how many episodes are evaluated together.

Extension, not in the paper: `share_action` (`ActionSharingMADS4Net`) also passes on the
action agent i just took; the paper's message (Eq. 5) is computed before the action is drawn.

Normalisation: the paper's BatchNorm, with causal training statistics (marlbench.nn.norm):
pooled over all timesteps, BatchNorm lets logits at t depend on inputs after t in training
(measured d logits[3] / d obs[10] = 2e-2), a look-ahead the recurrent view cannot have.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

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
    choice_mask,
    mask_logits,
    masked_mean,
    optimizer_step,
    return_to_go_scale,
    select_actions,
    target_return,
)
from marlbench.nn.fused import CompiledStep
from marlbench.nn.s4 import S4Block

ShareMode = Literal["memory", "logits", "both", "none"]


@dataclass
class MADS4Config:
    d_model: int = 96  # H, S4 input/output channels (paper §4.1)
    d_state: int = 96  # N, S4 state size (paper §4.1)
    n_layers: int = 3  # S4 blocks (authors' repo, experiment_warehouse.py `s4_layers=3`)
    embed_dim: int = 128  # width of each input encoder (authors' repo `embed_dim=128`)
    # The paper gives no S4 dropout; the authors' S4 blocks default to 0 (`s4dropoutval`;
    # their `dropout=0.1` feeds the DT baseline). 0.1 is our choice: 200-episode datasets
    # are small and the model has ~200k parameters.
    dropout: float = 0.1
    kernel: Literal["nplr", "s4d"] = "nplr"  # paper §4.1: HiPPO NPLR kernel
    n_ssm: int = 1  # independent (Λ, P, B) sets per layer (authors' repo `s4_n_ssm=1`)
    # Paper §4.1: BatchNorm. Training statistics are causal (token t uses the batch's valid
    # tokens at steps <= t, marlbench.nn.norm: pooled over all steps, logits at t would see
    # inputs after t). Running statistics are kept per position in the agent order: later
    # agents' inputs carry messages, so one set shared by all passes mismatches every agent at
    # evaluation (measured: the cooperation toy test drops from 100% to chance in eval mode
    # with shared statistics). Causality costs return at a short budget (README, MADS4:
    # 200 updates, 2 seeds, pooled 7.63 / 6.17 vs causal 4.97 / 3.10 vs LayerNorm 5.07 / 3.43).
    norm: Literal["batch", "layer"] = "batch"
    share: ShareMode = "memory"  # paper §3.5: the predecessor's S4 memory
    # Extension (ActionSharingMADS4Net): also pass on the action agent i just took (one-hot;
    # the dataset's in training). Not in the paper, whose message (Eq. 5) is computed before
    # the action is drawn, so with sampled actions agent i+1 cannot react to agent i's draw at
    # the same step; the authors' code passes earlier agents' action logits. Off (paper).
    share_action: bool = False
    decentralised: bool = False  # MADS4-dec (paper §5.4)
    # Agent order in training (paper Fig. 4a): random = one uniform permutation per update.
    # Evaluation acts in the order 0..n-1 either way (module docstring).
    order: Literal["fixed", "random"] = "fixed"
    use_state: bool = True  # Eq. 7 includes the global state s_g
    message_dim: int = 96  # size of m_i: a projection of the H-dim state readout, no bottleneck
    # Context: None = the env's episode limit, i.e. full trajectories (paper §4.1, §5.4).
    context: int | None = None
    target_return: float | None = None  # None: best dataset return raised by target_scale
    # Paper §5.2: "10% higher than the highest returns" (the authors' warehouse script
    # uses 1.2).
    target_scale: float = TARGET_RETURN_SCALE  # 1.1
    lr: float = 1e-3  # authors' repo `learning_rate=1e-3`
    ssm_lr: float = 1e-3  # S4 recipe: Δ, Λ, P, B at lr 1e-3 without weight decay
    # Authors' repo `weight_decay=1e-4` (their AdamW decays every parameter; the S4 recipe
    # exempts the SSM parameters, as here).
    weight_decay: float = 1e-4
    # Linear warm-up. The authors warm up for 10,000 of 15,000 steps; with the smaller CPU
    # budget below we keep warm-up at 10% of the default budget.
    warmup_steps: int = 150
    grad_clip: float = 0.25  # Decision Transformer trainer (the authors' code base): 0.25
    # Trajectories per update. The authors use 64 (`batch_size=64`); 16 keeps an update
    # under a second on two CPU cores at L=500 (see bench/s4_speed.py).
    batch_size: int = 16
    steps: int = 1500  # default budget (CPU); the authors train 15 x 1000 steps on a GPU
    # Acting only: one compiled graph per timestep (marlbench.nn.fused). Off by default: it
    # costs ~10-20 s of compilation per process and batch size, more than a default
    # evaluation's whole recurrent compute; worth it for long rollouts (bench/mads4_vs_madt.py).
    compile_step: bool = False

    def __post_init__(self):
        validate_config(self)  # every numeric field by its meaning (marlbench.config)
        if self.d_state % 2:
            raise ValueError(f"d_state (N) must be even: the S4 state is kept as N/2 conjugate "
                             f"pairs; got {self.d_state}")
        if self.decentralised and self.share == "none" and not self.share_action:
            raise ValueError("decentralised needs a message to delay (share != none)")


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


class MADS4Net(nn.Module):
    """The shared per-agent network, runnable as a convolution (training) or a recurrence."""

    sends_action = False  # ActionSharingMADS4Net: the message also carries the action taken
    _compiled: CompiledStep | None = None  # compile_step()

    def __init__(self, cfg: MADS4Config, env: EnvInfo):
        super().__init__()
        if cfg.share_action and not self.sends_action:
            raise ValueError("share_action is the ActionSharingMADS4Net extension: build the "
                             "network with build_net(cfg, env)")
        self.cfg, self.n, self.n_actions = cfg, env.n_agents, env.n_actions
        E, H = cfg.embed_dim, cfg.d_model
        self.l_max = cfg.context or env.episode_limit
        self.uses_memory = cfg.share in ("memory", "both")
        self.sends_logits = cfg.share in ("logits", "both")
        self.msg_in = self.message_size(cfg, env)

        def enc(d: int) -> nn.Module:
            return nn.Sequential(nn.Linear(d, E), nn.ReLU())

        self.obs_norm = FixedNormalizer(env.obs_dim)
        self.state_norm = FixedNormalizer(env.state_dim)
        self.enc_rtg, self.enc_obs = enc(1), enc(env.obs_dim)
        self.enc_act, self.enc_id = enc(env.n_actions), enc(env.n_agents)
        self.enc_state = enc(env.state_dim) if cfg.use_state else None
        self.enc_msg = enc(self.msg_in) if self.msg_in else None
        # Columns of the projection W per token part (the order of the concatenation).
        parts = ["rtg", "obs", "act", "id"] + ["state"] * cfg.use_state + ["msg"] * bool(
            self.msg_in)
        self.columns = {name: slice(i * E, (i + 1) * E) for i, name in enumerate(parts)}
        self.proj = nn.Sequential(nn.Linear(len(parts) * E, H), nn.ReLU())
        self.blocks = nn.ModuleList(
            S4Block(H, cfg.d_state, self.l_max,
                    channels=2 if (self.uses_memory and i == cfg.n_layers - 1) else 1,
                    mode=cfg.kernel, norm=cfg.norm, dropout=cfg.dropout, n_ssm=cfg.n_ssm,
                    slots=env.n_agents)
            for i in range(cfg.n_layers))
        self.action_head = nn.Sequential(nn.Linear(H, H), nn.ReLU(), nn.Linear(H, env.n_actions))
        self.message_head = nn.Linear(H, cfg.message_dim) if self.uses_memory else None
        self.register_buffer("agent_ids", torch.eye(env.n_agents), persistent=False)
        self.register_buffer("action_inputs", torch.cat([torch.eye(env.n_actions),
                                                         torch.zeros(1, env.n_actions)]),
                             persistent=False)

    @staticmethod
    def message_size(cfg: MADS4Config, env: EnvInfo) -> int:
        return {"memory": cfg.message_dim, "logits": env.n_actions,
                "both": cfg.message_dim + env.n_actions, "none": 0}[cfg.share]

    def ssm_parameters(self) -> list[nn.Parameter]:
        """Δ, Λ, P, B of every S4 kernel (names in marlbench.nn.s4's docstring)."""
        return [p for blk in self.blocks for p in blk.s4.kernel.ssm_parameters()]

    # -- the token (Fig. 1b), one path for both views ----------------------------------------------

    def _project(self, e: torch.Tensor, part: str) -> torch.Tensor:
        return F.linear(e, self.proj[0].weight[:, self.columns[part]])

    def agent_tokens(self, rtg: torch.Tensor, state: torch.Tensor, obs: torch.Tensor,
                     prev_action: torch.Tensor) -> torch.Tensor:
        """Every agent's token before its message, pre-activation: rtg [...], state [..., sd],
        obs [..., n, od], prev_action [..., n, A] (one-hot) -> [..., n, H].

        W_R e(R) + W_s e(s_g) + b once per timestep (shared by the agents), plus
        W_o e(o_i) + W_a e(a_i) + W_id e(i) for all agents in one batch."""
        shared = F.linear(self.enc_rtg(rtg[..., None]), self.proj[0].weight[:, self.columns["rtg"]],
                          self.proj[0].bias)
        if self.enc_state is not None:
            shared = shared + self._project(self.enc_state(self.state_norm(state)), "state")
        own = self._project(self.enc_obs(self.obs_norm(obs)), "obs") + self._action_rows(
            prev_action)
        return own + (self._project(self.enc_id(self.agent_ids), "id") + shared[..., None, :])

    def _action_rows(self, prev_action: torch.Tensor) -> torch.Tensor:
        """W_a e(a) for one-hot actions [..., A] (all zeros: no previous action, t = 0) ->
        [..., H]. There are only A + 1 such inputs: encode and project those rows once and
        look them up, instead of encoding every token (the same values; on rware-small-6ag
        training this drops an [B, L, n, E] activation and a sixth of the update's matmuls)."""
        table = self._project(self.enc_act(self.action_inputs), "act")  # [A + 1, H]
        idx = torch.where(prev_action.sum(-1) > 0, prev_action.argmax(-1), self.n_actions)
        return table[idx]

    def token(self, pre: torch.Tensor, message: torch.Tensor | None) -> torch.Tensor:
        """u_i = ReLU(pre_i + W_m e(m_{i-1})): pre [..., H] from `agent_tokens`, message
        [..., msg_in] -> [..., H]."""
        if self.enc_msg is not None:
            pre = pre + self._project(self.enc_msg(message), "msg")
        return F.relu(pre)

    def outgoing(self, logits: torch.Tensor | None, readout: torch.Tensor | None,
                 action: torch.Tensor | None) -> torch.Tensor | None:
        """The message agent i passes on: its memory projection and/or its logits."""
        parts = []
        if self.uses_memory:
            parts.append(self.message_head(readout))
        if self.sends_logits:
            parts.append(logits)
        return torch.cat(parts, -1) if len(parts) > 1 else (parts[0] if parts else None)

    # -- convolutional view (training) -----------------------------------------------------------

    def forward(self, rtg: torch.Tensor, state: torch.Tensor, obs: torch.Tensor,
                prev_action: torch.Tensor, mask: torch.Tensor | None = None,
                order: list[int] | None = None, actions: torch.Tensor | None = None,
                return_features: bool = False):
        """Whole trajectories: rtg [B, L], state [B, L, sd], obs [B, L, n, od], prev_action
        [B, L, n, A], mask [B, L], actions [B, L, n] (the actions taken, needed when the
        message carries them) -> logits [B, L, n, A]. One pass per agent, in `order`.
        `return_features`: (logits, features [B, L, n, H]), the last block's output per agent."""
        B, L = rtg.shape
        kfs = [blk.s4.kernel_fft(L) for blk in self.blocks]  # once, shared by every agent
        # unbind, not pre[:, :, i]: the backward of n slices would zero-fill n full tensors
        pre = self.agent_tokens(rtg, state, obs, prev_action).unbind(2)  # n x [B, L, H]
        message = obs.new_zeros(B, L, self.msg_in) if self.msg_in else None
        feats, logits = [None] * self.n, [None] * self.n
        for pos, agent in enumerate(order or range(self.n)):
            x, readout = self.token(pre[agent], message), None
            for blk, kf in zip(self.blocks, kfs):
                x, extra = blk(x, mask, slot=pos, kf=kf)
                readout = extra[0] if extra.shape[0] else None
            feats[agent] = x
            if self.sends_logits:
                logits[agent] = self.action_head(x)
            if self.msg_in:
                taken = actions[:, :, agent] if actions is not None else None
                message = self.outgoing(logits[agent], readout, taken)
                if self.cfg.decentralised:  # the predecessor's message of t-1
                    message = F.pad(message[:, :-1], (0, 0, 1, 0))
        features = torch.stack(feats, 2)
        out = torch.stack(logits, 2) if self.sends_logits else self.action_head(features)
        return (out, features) if return_features else out

    # -- recurrent view (acting) -----------------------------------------------------------------

    def initial_carry(self, batch: int) -> dict:
        dev = self.proj[0].weight.device
        return {"ssm": [[blk.s4.initial_state(batch) for blk in self.blocks]
                        for _ in range(self.n)],
                "messages": torch.zeros(batch, self.n, self.msg_in, device=dev),
                "features": torch.zeros(batch, self.n, self.cfg.d_model, device=dev)}

    def compile_step(self, enabled: bool = True) -> None:
        """Run `step` as one compiled graph per timestep (marlbench.nn.fused: pays for long
        rollouts; compiling costs seconds per input shape). Not for the `share_action`
        extension, whose successors wait on each agent's draw."""
        if not enabled or self.sends_action:
            self._compiled = None
        elif self._compiled is None:  # one per network: its graphs are reused by each policy
            self._compiled = CompiledStep(self.timestep, "MADS4 step")

    def step(self, rtg: torch.Tensor, state: torch.Tensor, obs: torch.Tensor,
             prev_action: torch.Tensor, carry: dict, order: list[int] | None = None,
             choose=None, actions: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
        """One timestep for all agents in turn: rtg [B], state [B, sd], obs [B, n, od],
        prev_action [B, n, A] -> (logits [B, n, A], actions [B, n] or None, carry).

        `choose(agent, logits [B, A]) -> actions [B]` picks each agent's action, called in
        `order` (before the successor runs when the message carries the action); without it
        only the logits are computed, with `actions` [B, n] as the actions taken (teacher
        forcing in tests). Updates `carry` in place: "ssm" (per agent, per block), "messages"
        [B, n, msg] (the messages sent, read at t+1 by the decentralised variant) and
        "features" [B, n, H] (the last block's output per agent: what the action head reads).
        """
        order = tuple(order or range(self.n))
        params = [blk.step_params() for blk in self.blocks]
        args = (rtg, state, obs, prev_action, carry["messages"], carry["ssm"], params, order)
        if self.sends_action:
            logits, chosen, carry["features"], carry["messages"], carry["ssm"] = self.timestep(
                *args, choose=choose, actions=actions)
            acts = torch.stack(chosen, 1) if choose is not None else None
            return logits, acts, carry
        # Compiled below batch 4, where dispatch dominates; batched steps are compute-bound
        # and faster eagerly (in-place state updates; measured in bench/mads4_vs_madt.py).
        if self._compiled and rtg.shape[0] < 4:
            # Standard strides, whatever the caller's arrays were views of: the graph is
            # specialised to its inputs' strides and would recompile for another layout.
            fresh = [x.clone(memory_format=torch.contiguous_format) for x in args[:4]]
            outs = self._compiled(*fresh, *args[4:])
        else:
            outs = self.timestep(*args)
        logits, _, carry["features"], carry["messages"], carry["ssm"] = outs
        acts = None
        if choose is not None:  # no message depends on a draw: choose after all agents ran
            chosen = {agent: choose(agent, logits[:, agent]) for agent in order}
            acts = torch.stack([chosen[agent] for agent in range(self.n)], 1)
        return logits, acts, carry

    def timestep(self, rtg, state, obs, prev_action, messages, ssm, params, order,
                 choose=None, actions=None):
        """`step`'s arithmetic as a pure function of tensors (what `compile_step` compiles):
        -> (logits [B, n, A], chosen actions per agent or None, features [B, n, H],
        messages sent [B, n, msg], new SSM states). `params[layer]` is
        `S4Block.step_params()`; `choose` and `actions` only with `sends_action`."""
        B = rtg.shape[0]
        pre = self.agent_tokens(rtg, state, obs, prev_action)  # [B, n, H]
        message = pre.new_zeros(B, self.msg_in) if self.msg_in else None
        sent = list(messages.unbind(1))
        new_ssm, feats = list(ssm), [None] * self.n
        logits, chosen = [None] * self.n, [None] * self.n
        for pos, agent in enumerate(order):
            if self.cfg.decentralised:  # the predecessor's message of t-1
                message = messages[:, order[pos - 1]] if pos else torch.zeros_like(sent[0])
            x, states, readout = self.token(pre[:, agent], message), [], None
            for blk, st, p in zip(self.blocks, ssm[agent], params):
                x, extra, st = blk.step(x, st, pos, p)
                states.append(st)
                readout = extra[0] if extra.shape[0] else None
            new_ssm[agent], feats[agent] = states, x
            if self.sends_logits or self.sends_action:
                logits[agent] = self.action_head(x)
            if self.sends_action and choose is not None:
                chosen[agent] = choose(agent, logits[agent])
            if self.msg_in:
                taken = chosen[agent] if choose is not None else (
                    actions[:, agent] if actions is not None else None)
                message = self.outgoing(logits[agent], readout, taken)
                if self.cfg.decentralised:
                    sent[agent] = message
        features = torch.stack(feats, 1)
        out = torch.stack(logits, 1) if logits[0] is not None else self.action_head(features)
        sent_out = torch.stack(sent, 1) if self.cfg.decentralised else messages
        return out, (chosen if choose is not None else None), features, sent_out, new_ssm


class ActionSharingMADS4Net(MADS4Net):
    """Extension (`share_action`, not in the paper): the message of agent i also carries the
    one-hot action it just took (the dataset's in training, its draw when acting), so its
    successor can react to a sampled action at the same step. The paper's message (Eq. 5) is
    computed before the draw; the authors' code passes earlier agents' action logits."""

    sends_action = True

    @staticmethod
    def message_size(cfg: MADS4Config, env: EnvInfo) -> int:
        return MADS4Net.message_size(cfg, env) + env.n_actions

    def outgoing(self, logits, readout, action):
        parts = [super().outgoing(logits, readout, action),
                 F.one_hot(action, self.n_actions).to(self.proj[0].weight.dtype)]
        return torch.cat([p for p in parts if p is not None], -1)


def build_net(cfg: MADS4Config, env: EnvInfo) -> MADS4Net:
    """The network of a config: the paper's, or the `share_action` extension."""
    return (ActionSharingMADS4Net if cfg.share_action else MADS4Net)(cfg, env)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def previous_actions(actions: torch.Tensor, n_actions: int) -> torch.Tensor:
    """[B, L, n] actions -> one-hot of each agent's previous action, zeros at t = 0."""
    one_hot = F.one_hot(actions, n_actions).float()
    return F.pad(one_hot[:, :-1], (0, 0, 0, 0, 1, 0))


class MADS4(Algorithm):
    Config = MADS4Config

    def __init__(self, config: MADS4Config, env: EnvInfo, device: torch.device, seed: int):
        super().__init__(config, env, device, seed)
        self.net = build_net(config, env).to(device)
        self.rtg_scale, self.target_return = 1.0, config.target_return or 0.0

    def setup(self, data: OfflineDataset) -> None:
        cfg = self.config
        self.data, self.rng = data, np.random.default_rng(self.seed)
        if data.max_length > self.net.l_max:
            warnings.warn(
                f"context {self.net.l_max} is shorter than the dataset's longest episode "
                f"({data.max_length} steps): training sees windows, not whole trajectories, "
                "which changes results (MADS4 paper, Fig. 5)", stacklevel=2)
        self.length = min(data.max_length, self.net.l_max)
        self.net.obs_norm.fit(data.obs)
        self.net.state_norm.fit(data.state)
        # Returns-to-go enter the network divided by the largest |return| (at least 1), so the
        # conditioning input is O(1) on any task; the authors use 1 (RWARE returns are O(10)).
        # The ratio of target to dataset returns, which is what conditions, is unchanged.
        self.rtg_scale = return_to_go_scale(data.max_return)
        self.target_return = cfg.target_return if cfg.target_return is not None else (
            target_return(data.max_return, cfg.target_scale))  # raised, also when negative
        ssm = {id(p) for p in self.net.ssm_parameters()}
        decay, no_decay = [], []
        for name, p in self.net.named_parameters():
            if id(p) not in ssm:
                (decay if p.dim() >= 2 and "kernel.C" not in name else no_decay).append(p)
        self.opt = torch.optim.AdamW([
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
            {"params": self.net.ssm_parameters(), "weight_decay": 0.0, "lr": cfg.ssm_lr},
        ], lr=cfg.lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: min((s + 1) / max(cfg.warmup_steps, 1), 1.0))

    def loss(self, b: TrajectoryBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked cross-entropy over valid steps of agents with a choice; also accuracy."""
        order = None
        if self.config.order == "random":
            order = [int(i) for i in self.rng.permutation(self.env.n_agents)]
        logits = self.net(b.rtg / self.rtg_scale, b.state, b.obs,
                          previous_actions(b.actions, self.env.n_actions), b.mask, order,
                          b.actions)
        logits = mask_logits(logits, b.avail)
        ce = F.cross_entropy(logits.flatten(0, -2), b.actions.flatten(), reduction="none")
        # Forced steps (a single available action: a dead agent's no-op) are no decisions.
        valid = (b.mask[..., None] & choice_mask(b.avail)).flatten()
        acc = masked_mean((logits.argmax(-1) == b.actions).float().flatten(), valid)
        return masked_mean(ce, valid), acc

    def update(self) -> dict[str, float]:
        self.net.train()
        b = self.data.trajectories(self.config.batch_size, self.rng, self.length,
                                   device=self.device)
        loss, acc = self.loss(b)
        grad = optimizer_step(self.opt, loss, self.net.parameters(), self.config.grad_clip)
        self.sched.step()
        return {"loss": loss.item(), "accuracy": acc.item(), "grad_norm": grad.item()}

    def policy(self, greedy: bool = False, seed: int = 0) -> Policy:
        self.net.compile_step(self.config.compile_step)
        return MADS4Policy(self.net, self.target_return / self.rtg_scale, self.rtg_scale,
                           greedy, seed)

    def modules(self) -> dict[str, nn.Module]:
        return {"net": self.net}

    def extra_state(self) -> dict[str, float]:
        return {"rtg_scale": self.rtg_scale, "target_return": self.target_return}

    def load_extra_state(self, state) -> None:
        self.rtg_scale, self.target_return = state["rtg_scale"], state["target_return"]


class MADS4Policy(Policy):
    """Recurrent view: constant cost per step, agents in the fixed order 0..n-1, every
    parallel episode advanced by one batched step."""

    def __init__(self, net: MADS4Net, target: float, rtg_scale: float, greedy: bool, seed: int):
        self.net, self.target, self.scale = net.eval(), target, rtg_scale
        self.device = next(net.parameters()).device
        self.choose = ActionSampler(greedy, seed, self.device)

    def reset(self, n_envs: int) -> None:
        self.choose.reset(n_envs)
        self.carry = self.net.initial_carry(n_envs)
        self.rtg = torch.full((n_envs,), self.target, device=self.device)
        self.prev = torch.zeros(n_envs, self.net.n, self.net.n_actions, device=self.device)

    @torch.inference_mode()
    def act(self, obs: np.ndarray, state: np.ndarray, avail: np.ndarray) -> np.ndarray:
        t = lambda x: torch.as_tensor(x, device=self.device)  # noqa: E731
        avail_t = t(avail)
        if self.net.sends_action:  # each draw goes into the successor's message
            noise = self.choose.noise(tuple(avail.shape[1:]))

            def choose(agent: int, logits: torch.Tensor) -> torch.Tensor:
                return select_actions(logits, avail_t[:, agent],
                                      None if noise is None else noise[:, agent])

            _, actions, self.carry = self.net.step(self.rtg, t(state), t(obs), self.prev,
                                                   self.carry, choose=choose)
        else:  # no message depends on a draw: all agents' actions in one call
            logits, _, self.carry = self.net.step(self.rtg, t(state), t(obs), self.prev,
                                                  self.carry)
            actions = self.choose(logits, avail_t)
        self.prev = F.one_hot(actions, self.net.n_actions).float()
        return actions.cpu().numpy()

    def observe(self, rewards: np.ndarray) -> None:
        self.rtg -= torch.as_tensor(rewards, device=self.device) / self.scale


@hookimpl
def marlbench_algorithms() -> list[AlgorithmSpec]:
    paper = "Bhattacharya & Bal, Multi-Agent Decision S4, AAMAS 2026"
    return [
        AlgorithmSpec(name="mads4", cls=MADS4, paper=paper, execution="sequential",
                      uses_global_state=True,
                      description="S4 agents acting in sequence, sharing S4 memory"),
        AlgorithmSpec(name="ids4", cls=MADS4, paper=paper + " (IDS4 ablation, Fig. 3)",
                      execution="decentralised", uses_global_state=True,
                      preset={"share": "none"},
                      description="independent Decision-S4 agents (no information sharing)"),
        AlgorithmSpec(name="mads4-dec", cls=MADS4, paper=paper + " (§5.4)",
                      execution="decentralised", uses_global_state=True,
                      preset={"decentralised": True},
                      description="MADS4 with the predecessor's memory from t-1 (parallel)"),
    ]
