"""MADTKD: the teacher sees every agent and the students only themselves, distillation trains
the students and leaves the fixed teacher alone, the students fit what they are shown, the
policy acts on the trained students, and it runs from the command line."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import marlbench.algorithms.madtkd as madtkd_module
from marlbench import checkpoint
from marlbench.algorithms.madtkd import MADTKD, MADTKDConfig, distillation_losses
from marlbench.cli import main
from marlbench.data import OfflineDataset
from marlbench.errors import MarlbenchError
from marlbench.evaluation import evaluate
from marlbench.nn import mask_logits
from marlbench.nn.gpt import GPT, sliding_causal_mask
from marlbench.runner import load_run

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def info(reg):
    return reg.environment("rware-tiny-2ag").info


@pytest.fixture(scope="module")
def data(tiny_expert, info):
    return OfflineDataset.load(tiny_expert, info)


def _algo(info, data, **cfg):
    torch.manual_seed(0)
    cfg = {"dim": 16, "context": 5, "steps": 10, "teacher_steps": 5, **cfg}
    algo = MADTKD(MADTKDConfig(**cfg), info, CPU, seed=0)
    algo.setup(data)
    return algo


def _steps(data, episodes, length=None):
    """The first `length` steps of dataset episodes, as the inputs the networks read."""
    b = data.trajectories(len(episodes), None, episodes=np.asarray(episodes))
    for f in dataclasses.fields(b):
        setattr(b, f.name, getattr(b, f.name)[:, :length])
    return b


def _inputs(algo, b):
    return (b.rtg / algo.return_scale, algo.net.agent_inputs(b.obs), b.actions.clone(),
            b.timesteps)


def test_explicit_mask_reproduces_the_default_causal_window():
    torch.manual_seed(0)
    gpt = GPT(dim=8, layers=2, heads=2, span=5).eval()
    x = torch.randn(3, 12, 8)
    assert torch.allclose(gpt(x, sliding_causal_mask(12, 12, 5)), gpt(x), atol=1e-6)
    with pytest.raises(ValueError, match="mask must be bool"):
        gpt(x, torch.ones(12, 12))


def test_teacher_sees_all_agents_and_students_only_their_own(info, data):
    algo = _algo(info, data, shared_student=True)  # shared: the same weights read both agents
    net = algo.net.eval()
    b = _steps(data, [0, 1], 5)
    rtg, obs, actions, t = _inputs(algo, b)
    with torch.no_grad():
        z_t, h_t = net.teacher(rtg, obs, actions, t)
        z_s, _ = net.student_forward(rtg, obs, actions, t)
        other = obs.clone()
        other[:, 3, 1, :-2] += 1.5  # agent 1's observation at step 3
        z_t2, _ = net.teacher(rtg, other, actions, t)
        z_s2, _ = net.student_forward(rtg, other, actions, t)
        acted = actions.clone()
        acted[:, 3, 1] = (acted[:, 3, 1] + 1) % info.n_actions  # agent 1's action at step 3
        z_t3, _ = net.teacher(rtg, obs, acted, t)
    # The teacher's logits for agent 0 at step 3 depend on agent 1's observation at step 3 ...
    assert (z_t2[:, 3, 0] - z_t[:, 3, 0]).abs().max() > 1e-4
    assert torch.equal(z_t2[:, :3], z_t[:, :3])  # ... but nothing earlier sees step 3
    # Actions of step 3 are hidden at step 3 (they are its targets) and seen from step 4 on.
    assert torch.allclose(z_t3[:, :4], z_t[:, :4], atol=1e-6)
    assert (z_t3[:, 4] - z_t[:, 4]).abs().max() > 1e-4
    # Agent 0's student never sees agent 1's observation; agent 1's own student does.
    assert torch.equal(z_s2[:, :, 0], z_s[:, :, 0])
    assert (z_s2[:, 3, 1] - z_s[:, 3, 1]).abs().max() > 1e-4
    assert z_t.shape == z_s.shape == (2, 5, info.n_agents, info.n_actions)
    assert h_t.shape == (2, 5, info.n_agents, 16)


def test_distillation_trains_the_students_and_leaves_the_fixed_teacher(info, data):
    algo = _algo(info, data, steps=8, teacher_steps=4)
    teacher_before = {k: v.clone() for k, v in algo.net.teacher.state_dict().items()}
    for _ in range(4):
        m = algo.update()
        assert m["student_phase"] == 0 and m["kd"] == 0 == m["relation"]
    assert any(not torch.equal(teacher_before[k], v)
               for k, v in algo.net.teacher.state_dict().items())  # the teacher trained first
    teacher_trained = {k: v.clone() for k, v in algo.net.teacher.state_dict().items()}
    students_before = {k: v.clone() for k, v in algo.net.students.state_dict().items()}
    for _ in range(4):
        m = algo.update()
        assert m["student_phase"] == 1 and all(np.isfinite(v) for v in m.values())
        assert m["kd"] > 0 and m["relation"] > 0
    for k, v in algo.net.teacher.state_dict().items():
        assert torch.equal(teacher_trained[k], v), k
    assert all(p.grad is None for p in algo.net.teacher.parameters())
    assert all(not torch.equal(students_before[k], v)
               for k, v in algo.net.students.state_dict().items() if k.endswith("head.weight"))
    # Each distillation term on its own sends gradient into every student, none to the teacher.
    b = _steps(data, [0, 1], 5)
    rtg, obs, actions, t = _inputs(algo, b)
    for term in (0, 1):
        algo.net.zero_grad(set_to_none=True)
        with torch.no_grad():
            z_t, h_t = algo.net.teacher(rtg, obs, actions, t)
        z_s, g_s = algo.net.student_forward(rtg, obs, actions, t)
        losses = distillation_losses(z_s, g_s, z_t, h_t, b.avail, b.mask, temperature=2.0)
        losses[term].backward()
        for s in algo.net.students:
            grad = sum(p.grad.abs().sum() for p in s.parameters() if p.grad is not None)
            assert grad > 0, term
        assert all(p.grad is None for p in algo.net.teacher.parameters())


def test_distillation_losses_vanish_when_the_student_matches_the_teacher():
    torch.manual_seed(0)
    z, h = torch.randn(2, 3, 3, 5), torch.randn(2, 3, 3, 4)
    avail, valid = torch.rand(2, 3, 3, 5) > 0.3, torch.ones(2, 3, dtype=torch.bool)
    avail[..., 0] = True
    kd, rel = distillation_losses(z, 2 * h, z, h, avail, valid, temperature=3.0)
    assert kd.abs() < 1e-6 and rel.abs() < 1e-6  # cosines are scale-free
    kd, rel = distillation_losses(z.flip(-1), -h.flip(-2), z, h, avail, valid, 1.0)
    assert kd > 0.01 and rel > 0.01


def _window_logits(algo, b):
    """Each step's student logits from the window the policy reads there: the last K steps
    (the first K steps: the window from step 0). b holds one episode."""
    K = algo.config.context
    rtg, obs, actions, t = _inputs(algo, b)
    L = rtg.shape[1]
    starts = torch.arange(L - K + 1)
    idx = starts[:, None] + torch.arange(K)[None, :]  # [W, K]
    with torch.no_grad():
        z, _ = algo.net.eval().student_forward(rtg[0, idx], obs[0, idx], actions[0, idx],
                                               t[0, idx])
    return torch.cat([z[0, :K - 1], z[:, -1]], 0)  # [L, n, A]


def test_students_fit_the_expert_actions(info, data):
    algo = _algo(info, data, dim=32, context=8, lr=3e-3, batch_size=32, weight_decay=0.0,
                 steps=500, teacher_steps=150)
    for step in range(500):
        m = algo.update()
        if step == 149:
            assert m["accuracy"] > 0.85, m  # the teacher fits first
    assert np.isfinite(m["loss"]) and m["ce"] < 0.2, m
    b = _steps(data, [1])
    logits = _window_logits(algo, b)
    agree = (mask_logits(logits, b.avail[0]).argmax(-1) == b.actions[0]).float().mean().item()
    assert agree >= 0.95, agree


def test_policy_acts_on_the_students_window_forward(info, data, monkeypatch):
    """Step by step, the policy's logits are the students' forward over the last K steps of
    (target return minus rewards so far, observations, the actions it took)."""
    K = 4
    algo = _algo(info, data, context=K)
    for _ in range(10):
        algo.update()
    assert algo.target_return == pytest.approx(1.1 * data.max_return)
    seen = []
    policy = algo.policy(greedy=True)
    ep = _steps(data, [0, 1], 9)
    policy.reset(2)
    select = policy.choose
    monkeypatch.setattr(policy, "choose",
                        lambda logits, *a: (seen.append(logits), select(logits, *a))[1])
    chosen = []
    for t in range(9):
        chosen.append(policy.act(ep.obs[:, t].numpy(), ep.state[:, t].numpy(),
                                 ep.avail[:, t].numpy()))
        policy.observe(ep.rewards[:, t].numpy())
    chosen = torch.as_tensor(np.stack(chosen, 1))  # [2, 9, n]
    rtg = (algo.target_return - (torch.cumsum(ep.rewards, 1) - ep.rewards)) / algo.return_scale
    obs = algo.net.agent_inputs(ep.obs)
    with torch.no_grad():
        ref = torch.stack([algo.net.student_forward(
            *(x[:, max(0, t - K + 1):t + 1] for x in (rtg, obs, chosen, ep.timesteps)))[0][:, -1]
            for t in range(9)], 1)
    assert torch.allclose(torch.stack(seen, 1), ref, atol=1e-5)
    assert torch.equal(mask_logits(ref, ep.avail).argmax(-1), chosen)


def test_checkpoint_round_trip_gives_identical_actions(info, data, tmp_path):
    algo = _algo(info, data, target_return=12.5)
    for _ in range(10):
        algo.update()
    checkpoint.save(tmp_path / "m.safetensors", "madtkd", algo)
    again = MADTKD(MADTKDConfig(dim=16, context=5, steps=10, teacher_steps=5,
                                target_return=12.5), info, CPU, seed=1)
    checkpoint.load(tmp_path / "m.safetensors", "madtkd", again)
    assert again.extra_state() == algo.extra_state()
    acts = []
    for model in (algo, again):
        policy = model.policy(seed=3)
        policy.reset(4)
        acts.append([policy.act(data.obs[t:t + 4].numpy(), data.state[t:t + 4].numpy(),
                                data.avail[t:t + 4].numpy()) for t in range(30)])
    assert np.array_equal(np.array(acts[0]), np.array(acts[1]))


def test_untrained_students_refuse_to_act(info, data):
    algo = _algo(info, data)
    for _ in range(5):  # teacher phase only
        algo.update()
    with pytest.raises(MarlbenchError, match="students have not trained"):
        algo.policy()


def _invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_cli_run_and_reload_reproduce_the_evaluation(tmp_path, tiny_expert):
    res = _invoke("run", "--algo", "madtkd", "--env", "rware-tiny-2ag", "--dataset",
                  "expert-4ep", "--steps", "20", "--eval-episodes", "2", "--eval-parallel", "2",
                  "--threads", "1", "--quiet", "--set", "dim=16", "--set", "context=6",
                  "--set", "teacher_steps=10", "--results", str(tmp_path / "r"))
    assert res.exit_code == 0, res.output
    cell = tmp_path / "r/rware-tiny-2ag/expert-4ep/madtkd/seed-0"
    run = json.loads((cell / "run.json").read_text())
    assert run["algorithm"]["execution"] == "decentralised" and run["parameters"] > 0
    returns = [e["return"] for e in json.loads((cell / "eval.json").read_text())["episodes"]]
    algo, _, spec = load_run(cell)
    again = evaluate(spec, algo.policy(seed=0), 2, seed=0, parallel=2)
    assert [r.ret for r in again] == returns


def test_bad_options_are_one_line_errors():
    res = _invoke("run", "--algo", "madtkd", "--env", "rware-tiny-2ag", "--set",
                  "teacher_steps=10000", "--quiet")
    assert res.exit_code == 1 and "teacher_steps must be below steps" in res.output
    assert "Traceback" not in res.output


def test_forced_steps_do_not_enter_the_cross_entropy_or_the_action_kd():
    """A dead agent's forced no-op (one available action) is no decision: its zero losses
    would only dilute the means."""
    torch.manual_seed(0)
    B, T, n, A, d = 2, 4, 2, 5, 3
    z_s, z_t = torch.randn(B, T, n, A), torch.randn(B, T, n, A)
    g, h = torch.randn(B, T, n, d), torch.randn(B, T, n, d)
    avail = torch.ones(B, T, n, A, dtype=torch.bool)
    avail[:, 2:, 1] = False
    avail[:, 2:, 1, 0] = True  # agent 1 is dead from t = 2: only the no-op is left
    actions = torch.randint(0, A, (B, T, n))
    actions[:, 2:, 1] = 0
    valid = torch.ones(B, T, dtype=torch.bool)
    live = ~(torch.arange(T)[None, :, None] >= 2) | (torch.arange(n) == 0)
    live = live.expand(B, T, n)
    logits = mask_logits(z_s, avail)
    expected = torch.nn.functional.cross_entropy(logits[live], actions[live])
    assert madtkd_module._choice_ce(logits, actions, valid[..., None] & live) == pytest.approx(
        expected.item())
    with_forced = torch.nn.functional.cross_entropy(logits[valid].flatten(0, -2),
                                                    actions[valid].flatten())
    assert expected > with_forced  # the forced zeros would have shrunk it
    kd, _ = distillation_losses(z_s, g, z_t, h, avail, valid, 2.0)
    log_s = torch.log_softmax(mask_logits(z_s, avail) / 2.0, -1)
    log_t = torch.log_softmax(mask_logits(z_t, avail) / 2.0, -1)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1)
    assert kd.item() == pytest.approx(4.0 * kl[live].mean().item(), rel=1e-5)
