"""ICQ: TD(lambda) targets, importance weights, the spliced final step, fitting, recurrent
acting, reload, CLI."""

from __future__ import annotations

import json

import numpy as np
import torch
from click.testing import CliRunner

from marlbench import checkpoint
from marlbench.algorithms.icq import ICQ, ICQConfig, importance_weights, lambda_returns
from marlbench.cli import main

# Tiny networks, short horizon (values settle within the test), frequent target copies.
SMALL = {"critic_hidden": 64, "mixer_hidden": 16, "batch_size": 8, "gamma": 0.5,
         "target_update_interval": 20, "actor_lr": 3e-3, "critic_lr": 1e-3}


def make(data, seed=0, **overrides):
    torch.manual_seed(seed)
    algo = ICQ(ICQConfig(**{**SMALL, **overrides}), data.info, torch.device("cpu"), seed)
    algo.setup(data)
    return algo


def rollout_actions(policy, data) -> np.ndarray:
    """Act along every dataset episode (the recurrent state carried step to step)."""
    out = np.zeros_like(data.actions.numpy())
    for s, n in zip(data.start, data.length, strict=True):
        policy.reset(1)
        for t in range(s, s + n):
            out[t] = policy.act(data.obs[t:t + 1].numpy(), data.state[t:t + 1].numpy(),
                                data.avail[t:t + 1].numpy())[0]
    return out


def test_lambda_returns_match_hand_computation():
    r = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    v = torch.tensor([[9.0, 10.0, 20.0, 30.0]])  # v[3] bootstraps the last real step
    real = torch.tensor([[True, True, True, False]])
    term = torch.zeros(1, 4, dtype=torch.bool)
    g, lam = 0.5, 0.5
    y2 = 3 + g * 30
    y1 = 2 + g * ((1 - lam) * 20 + lam * y2)
    y0 = 1 + g * ((1 - lam) * 10 + lam * y1)
    got = lambda_returns(r, term, real, v, g, lam)
    torch.testing.assert_close(got, torch.tensor([[y0, y1, y2, 30.0]]))
    # A terminal step does not bootstrap; lambda = 1 is the discounted return.
    term[0, 2] = True
    got = lambda_returns(r, term, real, v, g, 1.0)
    torch.testing.assert_close(got[0, :3], torch.tensor([1 + g * (2 + g * 3), 2 + g * 3, 3.0]))


def test_importance_weights_normalise_per_step_and_agent_across_the_batch():
    gen = torch.Generator().manual_seed(0)
    B, T, n, beta = 4, 6, 2, 0.5
    x = torch.randn(B, T, n, generator=gen)
    x[0, 2, 1] = 50.0  # one dominant entry moves only its own (step, agent) column
    valid = torch.ones(B, T, n, dtype=torch.bool)
    valid[1:, 4:] = False  # only episode 0 runs past step 3
    valid[:, 5, 0] = False  # a column with no valid entry
    w = importance_weights(x, valid, beta)
    for t in range(T):
        for i in range(n):
            v = valid[:, t, i]
            if not v.any():
                assert (w[:, t, i] == 0).all()
                continue
            e = torch.exp((x[v, t, i] - x[v, t, i].max()) / beta)
            torch.testing.assert_close(w[v, t, i], e / e.mean())  # mean weight one
            assert (w[~v, t, i] == 0).all()
    assert w.max() <= B + 1e-5
    torch.testing.assert_close(w[0, 2, 1], torch.tensor(float(B)))
    torch.testing.assert_close(w[:, 4:, 1][valid[:, 4:, 1]], torch.ones(2))  # B_t = 1


def test_no_actor_weight_exceeds_the_batch_size(keyed_dataset):
    # A small temperature makes the weights as peaked as they get: a softmax over the whole
    # batch would put up to B * L * n on one entry; per step and agent, at most B.
    algo = make(keyed_dataset, beta=1e-3, beta_q=1e-3)
    history = [algo.update() for _ in range(20)]
    assert max(m["weight_max"] for m in history) <= SMALL["batch_size"] + 1e-4
    assert max(m["q_weight_max"] for m in history) <= SMALL["batch_size"] + 1e-4
    assert max(m["weight_max"] for m in history) > 2.0  # the weights are far from uniform


def test_batches_hold_the_final_observation_after_each_episode(keyed_dataset):
    algo = make(keyed_dataset)
    tb, final = algo.sample()
    lengths = tb.mask.sum(1)
    assert (final.sum(1) == 1).all() and (final.float().argmax(1) == lengths).all()
    finals = keyed_dataset.final_obs.numpy()
    for row in range(len(lengths)):
        slot = tb.obs[row, lengths[row]].numpy()
        assert any(np.array_equal(slot, f) for f in finals)


def test_td_error_falls_and_policy_matches_the_data(keyed_dataset):
    algo = make(keyed_dataset)
    history = [algo.update() for _ in range(400)]
    assert all(np.isfinite(v) for m in history for v in m.values())
    early = np.mean([m["td_abs"] for m in history[:10]])
    late = np.mean([m["td_abs"] for m in history[-10:]])
    assert late < 0.2 * early, (early, late)
    acts = rollout_actions(algo.policy(greedy=True), keyed_dataset)
    assert (acts == keyed_dataset.actions.numpy()).mean() >= 0.95


def test_stepping_the_policy_matches_the_training_forward_pass(keyed_dataset):
    algo = make(keyed_dataset)
    for _ in range(5):
        algo.update()
    tb, _ = algo.sample()
    nets = algo.nets.eval()
    last = torch.cat([torch.full_like(tb.actions[:, :1], -1), tb.actions[:, :-1]], 1)
    with torch.no_grad():
        logits, _ = nets.actor(nets.scale_obs(tb.obs), last)
        hidden, stepped = None, []
        for t in range(tb.obs.shape[1]):
            out, hidden = nets.actor(nets.scale_obs(tb.obs[:, t:t + 1]), last[:, t:t + 1],
                                     hidden)
            stepped.append(out)
    torch.testing.assert_close(torch.cat(stepped, 1), logits, atol=1e-5, rtol=1e-5)


def test_checkpoint_round_trip_gives_identical_actions(tmp_path, keyed_dataset):
    algo = make(keyed_dataset)
    for _ in range(10):
        algo.update()
    checkpoint.save(tmp_path / "m.safetensors", "icq", algo)
    fresh = ICQ(algo.config, keyed_dataset.info, torch.device("cpu"), 1)
    checkpoint.load(tmp_path / "m.safetensors", "icq", fresh)
    for greedy in (True, False):
        a = rollout_actions(algo.policy(greedy=greedy, seed=3), keyed_dataset)
        b = rollout_actions(fresh.policy(greedy=greedy, seed=3), keyed_dataset)
        np.testing.assert_array_equal(a, b)


def test_cli_runs_icq_end_to_end(tmp_path, tiny_expert):
    res = CliRunner().invoke(main, [
        "run", "--algo", "icq", "--env", "rware-tiny-2ag", "--dataset", str(tiny_expert),
        "--steps", "4", "--eval-episodes", "2", "--eval-parallel", "2", "--quiet",
        "--results", str(tmp_path / "r")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    (run_json,) = (tmp_path / "r").rglob("icq/seed-0/run.json")
    run = json.loads(run_json.read_text())
    assert run["status"] == "complete" and run["eval"]["episodes"] == 2
    assert np.isfinite(run["train"]["final_metrics"]["loss"])
