"""MADS4 family: both views of the whole model, gradient/information flow between agents,
the cooperation claim in miniature, and bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from marlbench import checkpoint
from marlbench.algorithms.mads4 import MADS4, MADS4Config, MADS4Net, previous_actions
from marlbench.api import EnvInfo
from marlbench.config import build_config
from marlbench.data import OfflineDataset
from marlbench.data.schema import DatasetWriter
from marlbench.errors import CheckpointError, ConfigError

SMALL = dict(d_model=16, d_state=16, embed_dim=16, message_dim=8, dropout=0.0)


def _episode_tensors(data, episode: int):
    b = data.trajectories(1, np.random.default_rng(0), episodes=np.array([episode]))
    return b, previous_actions(b.actions, data.info.n_actions)


@pytest.mark.parametrize("variant", [{}, {"decentralised": True}, {"share": "both"},
                                     {"share": "logits", "norm": "layer"}, {"kernel": "s4d"},
                                     {"share_action": True, "decentralised": True}])
def test_whole_model_convolution_matches_recurrence_on_a_real_episode(reg, tiny_expert,
                                                                      variant):
    info = reg.environment("rware-tiny-2ag").info
    data = OfflineDataset.load(tiny_expert, info)
    torch.manual_seed(0)
    algo = MADS4(MADS4Config(**SMALL, **variant), info, torch.device("cpu"), 0)
    algo.setup(data)
    for _ in range(3):  # move BatchNorm statistics and weights off their initial values
        algo.update()
    assert _max_view_error(algo, data) <= 1e-4
    with torch.no_grad():  # the recurrent view's cached step matrices and fused encoder
        for p in algo.net.parameters():  # must follow in-place changes (optimiser, loading)
            p.add_(0.05 * torch.randn_like(p))
        algo.net.obs_norm.mean.add_(0.5)
    assert _max_view_error(algo, data) <= 1e-4


def _max_view_error(algo: MADS4, data: OfflineDataset) -> float:
    net = algo.net.eval()
    b, prev = _episode_tensors(data, 1)
    rtg = b.rtg / algo.rtg_scale
    with torch.no_grad():
        conv = net(rtg, b.state, b.obs, prev, actions=b.actions)[0]  # [500, n, A]
        carry, rec = net.initial_carry(1), []
        for t in range(500):
            logits, _, carry = net.step(rtg[:, t], b.state[:, t], b.obs[:, t], prev[:, t], carry,
                                        actions=b.actions[:, t])
            rec.append(logits[0])
    return (torch.stack(rec) - conv).abs().max().item()


def _grad_of_agent1_wrt_agent0_obs(cfg: MADS4Config, t_out: int, t_in: int) -> float:
    torch.manual_seed(0)
    env = EnvInfo("toy", 2, 5, 3, 4, 16)
    net = MADS4Net(cfg, env).eval()
    obs = torch.randn(2, 16, 2, 5, requires_grad=True)
    state, rtg = torch.randn(2, 16, 3), torch.randn(2, 16)
    prev = previous_actions(torch.randint(0, 4, (2, 16, 2)), 4)
    logits = net(rtg, state, obs, prev)
    logits[:, t_out, 1].sum().backward()
    return obs.grad[:, t_in, 0].abs().max().item()


def test_gradient_flows_from_agent_i_plus_1_into_agent_i_only_when_sharing_memory():
    t = 7
    assert _grad_of_agent1_wrt_agent0_obs(MADS4Config(**SMALL), t, t) > 1e-6
    assert _grad_of_agent1_wrt_agent0_obs(MADS4Config(**SMALL, share="none"), t, t) == 0.0
    # the global state is an input of every agent; without sharing no path exists through
    # agent 0's own observation, at any earlier time either
    assert _grad_of_agent1_wrt_agent0_obs(MADS4Config(**SMALL, share="none"), t + 3, t) == 0.0


def test_decentralised_variant_has_no_intra_timestep_dependency():
    cfg = MADS4Config(**SMALL, decentralised=True)
    t = 7
    later = _grad_of_agent1_wrt_agent0_obs(cfg, t + 1, t)
    assert later > 1e-6
    # FFT convolution is causal up to float round-off (~1e-11 here), not bit-exactly
    assert _grad_of_agent1_wrt_agent0_obs(cfg, t, t) < 1e-6 * later
    # and the same by perturbation, in the recurrent view
    torch.manual_seed(0)
    env = EnvInfo("toy", 2, 5, 3, 4, 16)
    net = MADS4Net(cfg, env).eval()
    obs, state = torch.randn(1, 3, 2, 5), torch.randn(1, 3, 3)
    prev = torch.zeros(1, 3, 2, 4)

    def run(o):
        carry, out = net.initial_carry(1), []
        with torch.no_grad():
            for s in range(3):
                out.append(net.step(torch.ones(1), state[:, s], o[:, s], prev[:, s], carry)[0])
        return out

    bumped = obs.clone()
    bumped[0, 1, 0] += 1.0
    a, b = run(obs), run(bumped)
    assert torch.equal(a[1][0, 1], b[1][0, 1])  # agent 1 at t=1 unaffected
    assert not torch.equal(a[2][0, 1], b[2][0, 1])  # ... but affected at t=2


def _cooperation_dataset(path, episodes: int, seed: int, visible: bool = True) -> EnvInfo:
    """Both agents must play a fresh symbol k every step. Agent 0 sees k (`visible`), or sees
    noise and draws k at random; agent 1 always sees noise."""
    info = EnvInfo("coop-toy", 2, 4, 2, 4, 20)
    rng = np.random.default_rng(seed)
    w = DatasetWriter(path, info, state_is_concat_obs=False, has_win_flag=False)
    for _ in range(episodes):
        k = rng.integers(0, 4, 20)
        obs = np.zeros((20, 2, 4), np.float32)
        obs[:, 1] = rng.normal(size=(20, 4))
        if visible:
            obs[np.arange(20), 0, k] = 1.0
        else:
            obs[:, 0] = rng.normal(size=(20, 4))
        actions = np.stack([k, k], 1).astype(np.int32)
        steps = {"obs": obs, "state": np.zeros((20, 2), np.float32),
                 "avail": np.ones((20, 2, 4), bool), "actions": actions,
                 "rewards": np.ones(20, np.float32), "terminated": np.eye(20, dtype=bool)[-1],
                 "truncated": np.zeros(20, bool)}
        final = {"obs": obs[-1], "state": np.zeros(2, np.float32), "avail": np.ones((2, 4), bool)}
        w.add_episode(steps, final)
    w.commit({"quality": "toy"})
    return info


def _agent1_accuracy(algo: MADS4, data: OfflineDataset) -> float:
    b = data.trajectories(data.n_episodes, np.random.default_rng(0),
                          episodes=np.arange(data.n_episodes))
    with torch.no_grad():
        logits = algo.net.eval()(b.rtg / algo.rtg_scale, b.state, b.obs,
                                 previous_actions(b.actions, 4), actions=b.actions)
    return (logits[:, :, 1].argmax(-1) == b.actions[:, :, 1]).float().mean().item()


def _trained_agent1_accuracy(tmp_path, visible: bool, **cfg) -> float:
    info = _cooperation_dataset(tmp_path / f"train-{visible}.h5", 64, seed=0, visible=visible)
    _cooperation_dataset(tmp_path / f"test-{visible}.h5", 16, seed=1, visible=visible)
    train = OfflineDataset.load(tmp_path / f"train-{visible}.h5", info)
    test = OfflineDataset.load(tmp_path / f"test-{visible}.h5", info)
    torch.manual_seed(0)
    algo = MADS4(MADS4Config(**SMALL, batch_size=16, lr=3e-3, warmup_steps=10, **cfg), info,
                 torch.device("cpu"), 0)
    algo.setup(train)
    for _ in range(250):
        algo.update()
    return _agent1_accuracy(algo, test)


def test_mads4_learns_what_only_its_predecessor_sees_and_ids4_cannot(tmp_path):
    """The paper's Fig. 3 claim in miniature (chance is 0.25)."""
    acc = {share: _trained_agent1_accuracy(tmp_path, True, share=share)
           for share in ("memory", "none")}
    assert acc["memory"] > 0.9, acc
    assert acc["none"] < 0.4, acc


def test_sharing_the_action_lets_the_successor_follow_a_random_draw(tmp_path):
    """Agent 0 observes nothing that explains its action (a random draw) and agent 1 must
    match it: the paper's message is computed before the draw and cannot carry it, the
    action shared with `share_action` can."""
    acc = {flag: _trained_agent1_accuracy(tmp_path, False, share_action=flag)
           for flag in (False, True)}
    assert acc[False] < 0.4, acc
    assert acc[True] > 0.9, acc


def test_bad_configs_and_checkpoints(reg, tiny_expert, tmp_path):
    with pytest.raises(ConfigError, match="even"):
        build_config(MADS4Config, {"d_state": "95"})
    with pytest.raises(ConfigError, match="d_model must be > 0"):
        build_config(MADS4Config, {"d_model": "0"})
    info = reg.environment("rware-tiny-2ag").info
    a = MADS4(MADS4Config(**SMALL), info, torch.device("cpu"), 0)
    checkpoint.save(tmp_path / "a.safetensors", "mads4", a)
    b = MADS4(MADS4Config(**{**SMALL, "d_model": 8}), info, torch.device("cpu"), 0)
    with pytest.raises(CheckpointError, match="another config.*d_model"):
        checkpoint.load(tmp_path / "a.safetensors", "mads4", b)
    with pytest.raises(CheckpointError, match="for algorithm 'mads4', not 'ids4'"):
        checkpoint.load(tmp_path / "a.safetensors", "ids4", a)


def test_short_context_warns(reg, tiny_expert):
    info = reg.environment("rware-tiny-2ag").info
    algo = MADS4(MADS4Config(**SMALL, context=100), info, torch.device("cpu"), 0)
    with pytest.warns(UserWarning, match="shorter than the dataset's longest episode"):
        algo.setup(OfflineDataset.load(tiny_expert, info))
    assert algo.data.trajectories(2, algo.rng, algo.length).obs.shape[1] == 100


def test_features_are_the_last_block_output_in_both_views():
    """Interface for fine-tuning: `forward(..., return_features=True)` and `carry["features"]`
    are the same per-agent [.., n, H] vectors, and the action head of them gives the logits."""
    torch.manual_seed(0)
    env = EnvInfo("toy", 3, 5, 4, 4, 12)
    net = MADS4Net(MADS4Config(**SMALL), env).eval()
    obs, state, rtg = torch.randn(2, 12, 3, 5), torch.randn(2, 12, 4), torch.randn(2, 12)
    prev = previous_actions(torch.randint(0, 4, (2, 12, 3)), 4)
    with torch.no_grad():
        logits, feats = net(rtg, state, obs, prev, return_features=True)
        assert feats.shape == (2, 12, 3, 16)
        assert torch.allclose(net.action_head(feats), logits)
        carry = net.initial_carry(2)
        for t in range(12):
            _, _, carry = net.step(rtg[:, t], state[:, t], obs[:, t], prev[:, t], carry)
            assert (carry["features"] - feats[:, t]).abs().max() <= 1e-4


def test_batchnorm_is_causal_in_training():
    """Training with norm=batch: logits at t do not depend on inputs after t (pooled batch
    statistics gave d logits[3] / d obs[10] = 2e-2), in value and in gradient."""
    torch.manual_seed(0)
    env = EnvInfo("toy", 2, 5, 3, 4, 16)
    net = MADS4Net(MADS4Config(**SMALL, norm="batch"), env).train()
    obs = torch.randn(4, 16, 2, 5, requires_grad=True)
    state, rtg = torch.randn(4, 16, 3), torch.randn(4, 16)
    prev = previous_actions(torch.randint(0, 4, (4, 16, 2)), 4)
    logits = net(rtg, state, obs, prev)
    logits[:, 3].sum().backward()
    past, future = obs.grad[:, :4].abs().max().item(), obs.grad[:, 4:].abs().max().item()
    assert past > 1e-3
    assert future < 1e-8 * past  # FFT round-off only
    # and in value: changing the future leaves the past's logits unchanged
    net.eval()  # (training mode would also move the running statistics between calls)
    with torch.no_grad():
        bumped = obs.detach().clone()
        bumped[:, 10:] += 1.0
        a, b = net(rtg, state, obs.detach(), prev), net(rtg, state, bumped, prev)
    assert (a[:, :10] - b[:, :10]).abs().max() < 1e-5
    assert (a[:, 10:] - b[:, 10:]).abs().max() > 1e-3


def test_token_is_the_concatenated_projection_of_fig_1b():
    """The split projection (shared parts once per timestep) is the paper's token:
    ReLU(W [e(R); e(o_i); e(a_i); e(i); e(s_g); e(m)] + b) (concatenation order of W's columns)."""
    torch.manual_seed(0)
    env = EnvInfo("toy", 3, 5, 4, 4, 12)
    net = MADS4Net(MADS4Config(**SMALL), env)
    net.obs_norm.mean.normal_()
    net.state_norm.std.uniform_(0.5, 2.0)
    rtg, state, obs = torch.randn(2, 7), torch.randn(2, 7, 4), torch.randn(2, 7, 3, 5)
    # one-hot previous actions, all zeros at t = 0 (looked up from a table of A + 1 rows)
    prev = previous_actions(torch.randint(0, 4, (2, 7, 3)), 4)
    msg = torch.randn(2, 7, net.msg_in)
    pre = net.agent_tokens(rtg, state, obs, prev)
    for i in range(3):
        parts = [net.enc_rtg(rtg[..., None]), net.enc_obs(net.obs_norm(obs[:, :, i])),
                 net.enc_act(prev[:, :, i]), net.enc_id(net.agent_ids[i].expand(2, 7, 3)),
                 net.enc_state(net.state_norm(state)), net.enc_msg(msg)]
        assert torch.allclose(net.token(pre[:, :, i], msg), net.proj(torch.cat(parts, -1)),
                              atol=1e-5)


def test_forced_steps_do_not_enter_the_loss(reg, tiny_expert):
    """An agent with a single available action (a dead agent's no-op) makes no decision:
    its steps leave the mean cross-entropy and the accuracy."""
    info = reg.environment("rware-tiny-2ag").info
    data = OfflineDataset.load(tiny_expert, info)
    torch.manual_seed(0)
    algo = MADS4(MADS4Config(**SMALL), info, torch.device("cpu"), 0)
    algo.setup(data)
    algo.net.eval()  # the same function in both calls
    b = data.trajectories(2, np.random.default_rng(0), 40)
    b.avail[:, 20:, 1] = False  # agent 1 "dies" at t = 20: only its recorded action remains
    b.avail[:, 20:, 1].scatter_(-1, b.actions[:, 20:, 1, None], True)
    loss, acc = algo.loss(b)
    with torch.no_grad():
        logits = algo.net(b.rtg / algo.rtg_scale, b.state, b.obs,
                          previous_actions(b.actions, info.n_actions), b.mask)
    logits = logits.masked_fill(~b.avail, -1e9)
    ce = torch.nn.functional.cross_entropy(logits.flatten(0, -2), b.actions.flatten(),
                                           reduction="none").view(b.actions.shape)
    keep = torch.ones_like(ce, dtype=torch.bool)
    keep[:, 20:, 1] = False
    assert torch.allclose(loss, ce[keep].mean(), atol=1e-6)
    assert loss > ce.mean()  # the forced steps' zero losses would have diluted it
    right = (logits.argmax(-1) == b.actions)[keep].float().mean()
    assert torch.allclose(acc, right)


def test_random_order_training_evaluates_in_order_0_to_n_minus_1(reg, tiny_expert):
    """order=random trains on a uniform permutation per update; the policy acts 0, 1, ...:
    agent 1 hears agent 0 at the same step, agent 0 does not hear agent 1."""
    info = reg.environment("rware-tiny-2ag").info
    torch.manual_seed(0)
    algo = MADS4(MADS4Config(**SMALL, order="random"), info, torch.device("cpu"), 0)
    algo.setup(OfflineDataset.load(tiny_expert, info))
    for _ in range(2):
        algo.update()
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(1, 2, info.obs_dim)).astype(np.float32)
    state = rng.normal(size=(1, info.state_dim)).astype(np.float32)
    avail = np.ones((1, 2, info.n_actions), bool)

    def features(o):
        policy = algo.policy(greedy=True)
        policy.reset(1)
        policy.act(o, state, avail)
        return policy.carry["features"][0]

    base = features(obs)
    for agent, other in ((0, 1), (1, 0)):
        bumped = obs.copy()
        bumped[0, agent] += 1.0
        f = features(bumped)
        heard = not torch.allclose(f[other], base[other])
        assert heard == (agent == 0), (agent, other)


def test_both_views_agree_on_any_device_without_host_syncs_per_step():
    """Runs on the accelerator when one is present (else the CPU): the recurrent step after
    its one-time setup makes no host synchronisation (checked by CUDA's sync debug mode) and
    matches the convolutional view there."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    env = EnvInfo("toy", 3, 5, 4, 4, 10)
    net = MADS4Net(MADS4Config(**SMALL), env).to(device).eval()
    obs, state = torch.randn(2, 10, 3, 5, device=device), torch.randn(2, 10, 4, device=device)
    rtg = torch.randn(2, 10, device=device)
    prev = previous_actions(torch.randint(0, 4, (2, 10, 3), device=device), 4)
    with torch.no_grad():
        conv = net(rtg, state, obs, prev)
        carry = net.initial_carry(2)
        first, _, carry = net.step(rtg[:, 0], state[:, 0], obs[:, 0], prev[:, 0], carry)  # setup
        rec = [first]
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("error")
        try:
            for t in range(1, 10):
                rec.append(net.step(rtg[:, t], state[:, t], obs[:, t], prev[:, t], carry)[0])
        finally:
            if device.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
    assert all(r.device.type == device.type for r in rec)
    assert (torch.stack(rec, 1) - conv).abs().max().item() <= 1e-4


@pytest.mark.parametrize("variant", [{}, {"decentralised": True, "norm": "layer"}])
def test_compiled_step_equals_the_eager_step(variant):
    """`compile_step`: one compiled graph per timestep (marlbench.nn.fused), the same
    function; compilation must succeed here (a failure would fall back with a warning)."""
    torch.manual_seed(0)
    env = EnvInfo("toy", 2, 5, 3, 4, 16)
    cfg = MADS4Config(**SMALL, n_layers=2, **variant)
    eager, compiled = MADS4Net(cfg, env).eval(), MADS4Net(cfg, env).eval()
    compiled.load_state_dict(eager.state_dict())
    compiled.compile_step()
    obs, state, rtg = torch.randn(16, 1, 2, 5), torch.randn(16, 1, 3), torch.randn(16, 1)
    prev = previous_actions(torch.randint(0, 4, (1, 16, 2)), 4)[0].unsqueeze(1)
    carries = [eager.initial_carry(1), compiled.initial_carry(1)]
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for t in range(16):
            outs = [net.step(rtg[t], state[t], obs[t], prev[t], carry)[0]
                    for net, carry in zip((eager, compiled), carries)]
            torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(carries[1]["ssm"][1][1], carries[0]["ssm"][1][1])
    assert compiled._compiled._compiled is not None  # compiled, not fallen back to eager
