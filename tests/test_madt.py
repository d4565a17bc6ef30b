"""MADT: the cached GPT equals its full forward, the policy keeps its context right, it learns
what it is shown (forced steps left out), its return conditioning follows the shared rule, and
it runs from the command line."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from marlbench import checkpoint
from marlbench.algorithms.madt import MADT, MADTConfig, agent_sequences, team_sequences
from marlbench.cli import main
from marlbench.data import OfflineDataset
from marlbench.evaluation import evaluate
from marlbench.nn import mask_logits, return_to_go_scale, target_return
from marlbench.nn.gpt import GPT, KVCache
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
    algo = MADT(MADTConfig(**cfg), info, CPU, seed=0)
    algo.setup(data)
    return algo


def _first_steps(data, episodes, length=None):
    """The first `length` steps of dataset episodes, as a padded TrajectoryBatch."""
    b = data.trajectories(len(episodes), None, episodes=np.asarray(episodes))
    for f in dataclasses.fields(b):
        setattr(b, f.name, getattr(b, f.name)[:, :length])
    return b


def _episode_inputs(algo, data, episode=0, length=None):
    """One dataset episode as the per-agent sequences the network reads."""
    b = _first_steps(data, [episode], length)
    n = algo.env.n_agents
    return (team_sequences(b.rtg, n) / algo.return_scale,
            agent_sequences(algo.net.agent_inputs(b.obs)), agent_sequences(b.actions),
            team_sequences(b.timesteps, n), agent_sequences(b.avail))


@pytest.mark.parametrize("span", [200, 7])  # no window sliding / sliding every token
def test_gpt_incremental_cache_matches_full_forward(span):
    torch.manual_seed(0)
    gpt = GPT(dim=16, layers=3, heads=2, span=span, dropout=0.1).eval()
    x = torch.randn(4, 62, 16)
    full = gpt(x)
    cache, outs, i = KVCache(), [], 0
    for size in [2, 3, 1] * 20:  # uneven chunks, as a policy appends 2 then 3 tokens
        if i < x.shape[1]:
            outs.append(gpt.step(x[:, i:i + size], cache))
            i += size
    assert torch.allclose(torch.cat(outs, 1), full, atol=1e-5)
    assert len(cache) == min(span - 1, x.shape[1])


def test_cached_steps_match_the_window_forward(info, data):
    """Within the first K steps the cache is exactly the training (full-window) forward; past
    them it equals the forward over the whole prefix with the sliding window."""
    algo = _algo(info, data, context=6)
    rtg, obs, actions, timesteps, _ = _episode_inputs(algo, data, length=15)
    net = algo.net.eval()
    with torch.no_grad():
        window = net(rtg[:, :6], obs[:, :6], actions[:, :6], timesteps[:, :6])
        prefix = net(rtg, obs, actions, timesteps)
        cache = KVCache()
        stepped = torch.stack([
            net.step(cache, rtg[:, t], obs[:, t], actions[:, t - 1] if t else None, t)
            for t in range(15)], 1)
    assert torch.allclose(stepped[:, :6], window, atol=1e-5)
    assert torch.allclose(stepped, prefix, atol=1e-5)
    # A one-layer model has token-local keys, so its rolling cache is also exactly DT's
    # recompute of the last K steps at every step.
    one = _algo(info, data, context=6, layers=1).net.eval()
    with torch.no_grad():
        cache = KVCache()
        for t in range(15):
            step = one.step(cache, rtg[:, t], obs[:, t], actions[:, t - 1] if t else None, t)
            lo = max(0, t - 5)
            recompute = one(rtg[:, lo:t + 1], obs[:, lo:t + 1], actions[:, lo:t + 1],
                            timesteps[:, lo:t + 1])[:, -1]
            assert torch.allclose(step, recompute, atol=1e-5), t


def test_policy_conditions_on_target_return_minus_rewards(info, data, monkeypatch):
    """The policy's own bookkeeping (return-to-go, timestep, previous action, agent order)
    reproduces the training forward over the window it lived through: the episode so far
    while t < K, then the last K steps."""
    K = 4
    algo = _algo(info, data, context=K)
    assert algo.target_return == pytest.approx(1.1 * data.max_return)
    policy = algo.policy(greedy=True)
    ep = _first_steps(data, [0, 1], 9)
    policy.reset(2)
    seen = []  # the logits the policy acted on
    select = policy.choose
    monkeypatch.setattr(policy, "choose",
                        lambda logits, *a: (seen.append(logits), select(logits, *a))[1])
    chosen = []
    for t in range(9):
        chosen.append(policy.act(ep.obs[:, t].numpy(), ep.state[:, t].numpy(),
                                 ep.avail[:, t].numpy()))
        policy.observe(ep.rewards[:, t].numpy())
    chosen = torch.as_tensor(np.stack(chosen, 1))  # [2 envs, 9, n]
    rewards_before = torch.cumsum(ep.rewards, 1) - ep.rewards
    rtg = (algo.target_return - rewards_before) / algo.return_scale
    n = info.n_agents
    seqs = (team_sequences(rtg, n), agent_sequences(algo.net.agent_inputs(ep.obs)),
            agent_sequences(chosen), team_sequences(ep.timesteps, n))
    with torch.no_grad():
        logits = torch.stack([algo.net(*(x[:, max(0, t - K + 1):t + 1] for x in seqs))[:, -1]
                              for t in range(9)], 1)
    acted = agent_sequences(torch.stack(seen, 1))  # [2 * n, 9, A]
    assert torch.allclose(acted, logits, atol=1e-5)
    greedy = mask_logits(logits, agent_sequences(ep.avail)).argmax(-1)
    assert torch.equal(greedy, agent_sequences(chosen))
    assert torch.allclose(policy.rtg, algo.target_return - ep.rewards.sum(1))


def test_madt_fits_the_expert_actions(info, data):
    algo = _algo(info, data, context=10, lr=3e-3, batch_size=64, weight_decay=0.0)
    for _ in range(600):
        metrics = algo.update()
    assert np.isfinite(metrics["loss"]) and metrics["loss"] < 0.2
    rtg, obs, actions, timesteps, avail = _episode_inputs(algo, data, episode=1)
    with torch.no_grad():  # whole episode = what the cached policy sees (test above)
        logits = algo.net.eval()(rtg, obs, actions, timesteps)
    agree = (mask_logits(logits, avail).argmax(-1) == actions).float().mean().item()
    assert agree >= 0.95, agree


def test_windows_longer_than_the_episodes_are_padded_and_masked(info, data):
    algo = _algo(info, data, context=520, dim=8, heads=1, layers=1, batch_size=2)
    metrics = algo.update()
    assert np.isfinite(metrics["loss"]) and metrics["loss"] > 0


def test_target_return_override_and_checkpoint_round_trip(info, data, tmp_path):
    algo = _algo(info, data, context=5, dim=16, target_return=12.5)
    for _ in range(5):
        algo.update()
    assert algo.target_return == 12.5
    checkpoint.save(tmp_path / "m.safetensors", "madt", algo)
    again = MADT(MADTConfig(context=5, dim=16, target_return=12.5), info, CPU, seed=1)
    checkpoint.load(tmp_path / "m.safetensors", "madt", again)
    assert again.extra_state() == algo.extra_state()
    for a, b in zip(algo.modules()["net"].state_dict().values(),
                    again.modules()["net"].state_dict().values()):
        assert torch.equal(a, b)
    acts = []
    for model in (algo, again):
        policy = model.policy(seed=3)
        policy.reset(4)
        acts.append([policy.act(data.obs[t:t + 4].numpy(), data.state[t:t + 4].numpy(),
                                data.avail[t:t + 4].numpy()) for t in range(30)])
    assert np.array_equal(np.array(acts[0]), np.array(acts[1]))


def _invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_cli_run_and_reload_reproduce_the_evaluation(tmp_path, tiny_expert):
    res = _invoke("run", "--algo", "madt", "--env", "rware-tiny-2ag", "--dataset", "expert-4ep",
                  "--steps", "20", "--eval-episodes", "2", "--eval-parallel", "2", "--quiet",
                  "--set", "dim=16", "--set", "context=8", "--results", str(tmp_path / "r"))
    assert res.exit_code == 0, res.output
    cell = tmp_path / "r/rware-tiny-2ag/expert-4ep/madt/seed-0"
    run = json.loads((cell / "run.json").read_text())
    assert run["algorithm"]["execution"] == "decentralised" and run["parameters"] > 0
    returns = [e["return"] for e in json.loads((cell / "eval.json").read_text())["episodes"]]
    algo, _, spec = load_run(cell)
    again = evaluate(spec, algo.policy(seed=0), 2, seed=0, parallel=2)
    assert [r.ret for r in again] == returns


def test_bad_options_are_one_line_errors():
    res = _invoke("run", "--algo", "madt", "--env", "rware-tiny-2ag", "--set", "heads=3",
                  "--quiet")
    assert res.exit_code == 1 and "dim (32) must be divisible by heads (3)" in res.output
    res = _invoke("run", "--algo", "madt", "--env", "rware-tiny-2ag", "--set", "contex=5")
    assert res.exit_code == 1 and "Did you mean 'context'" in res.output


def test_forced_steps_are_left_out_of_the_loss_and_accuracy(keyed_dataset):
    data = keyed_dataset
    dead = torch.zeros(data.n_steps, dtype=torch.bool)
    dead[::3] = True  # agent 1 "dead" on every third step: only action 0 available, taken
    data.avail[dead, 1] = False
    data.avail[dead, 1, 0] = True
    data.actions[dead, 1] = 0
    algo = MADT(MADTConfig(context=6, dim=16, heads=1, layers=1), data.info, CPU, seed=0)
    algo.setup(data)
    batch = data.trajectories(6, np.random.default_rng(0), length=6)
    loss, accuracy = algo.loss(batch)
    n = data.info.n_agents
    with torch.no_grad():
        logits = algo.net(team_sequences(batch.rtg, n) / algo.return_scale,
                          agent_sequences(algo.net.agent_inputs(batch.obs)),
                          agent_sequences(batch.actions), team_sequences(batch.timesteps, n))
    logits = mask_logits(logits, agent_sequences(batch.avail))
    actions = agent_sequences(batch.actions)
    real = team_sequences(batch.mask, n)
    counted = real & (agent_sequences(batch.avail).sum(-1) > 1)
    assert 0 < counted.sum() < real.sum()  # the batch holds forced steps
    torch.testing.assert_close(loss, F.cross_entropy(logits[counted], actions[counted]))
    torch.testing.assert_close(
        accuracy, (logits[counted].argmax(-1) == actions[counted]).float().mean())
    assert loss > F.cross_entropy(logits[real], actions[real]) * 1.05


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_target_return_and_scale_follow_the_shared_rule(keyed_dataset, sign):
    data = keyed_dataset
    data.returns = sign * np.abs(data.returns) / 10  # returns below 1 in size
    best = float(data.returns.max())
    algo = MADT(MADTConfig(context=4, dim=8, heads=1, layers=1), data.info, CPU, seed=0)
    algo.setup(data)
    assert algo.target_return == pytest.approx(best + 0.1 * abs(best))  # MADS4 §5.2
    assert algo.target_return == pytest.approx(target_return(best))
    assert algo.return_scale == pytest.approx(return_to_go_scale(best)) == 1.0
    algo = MADT(MADTConfig(context=4, dim=8, heads=1, layers=1, target_scale=1.2), data.info,
                CPU, seed=0)
    algo.setup(data)
    assert algo.target_return == pytest.approx(best + 0.2 * abs(best))
