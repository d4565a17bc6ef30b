"""OMAR: the sampling search, a conservative critic, rectified imitation, reload, CLI."""

from __future__ import annotations

import json

import numpy as np
import torch
from click.testing import CliRunner

from marlbench.algorithms.omar import OMAR, OMARConfig, search_action
from marlbench.cli import main

SMALL = {"hidden": 64, "batch_size": 64, "lr": 3e-3}


def make(data, seed=0, **overrides):
    torch.manual_seed(seed)
    algo = OMAR(OMARConfig(**{**SMALL, **overrides}), data.info, torch.device("cpu"), seed)
    algo.setup(data)
    return algo


def test_search_finds_the_best_available_action():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2000, 5, generator=gen)
    avail = torch.rand(2000, 5, generator=gen) > 0.3
    avail[:, 0] = True
    best = q.masked_fill(~avail, -1e9).argmax(-1)
    cfg = OMARConfig()
    actions, values = search_action(q, avail, cfg, gen)
    assert avail.gather(-1, actions.unsqueeze(-1)).all()
    torch.testing.assert_close(values, q.gather(-1, actions.unsqueeze(-1)).squeeze(-1))
    assert (actions == best).float().mean() > 0.9
    # A single draw (no search) finds it far less often.
    blind, _ = search_action(q, avail, OMARConfig(omar_iters=1, omar_num_samples=1), gen)
    assert (blind == best).float().mean() < 0.5


def test_td_error_falls_and_policy_matches_the_data(keyed_dataset):
    algo = make(keyed_dataset, gamma=0.5, tau=0.05)
    probe = keyed_dataset.transitions(512, np.random.default_rng(9))
    with torch.no_grad():
        before = algo.critic_loss(probe)["td_loss"].item()
    for _ in range(600):
        metrics = algo.update()
    with torch.no_grad():
        after = algo.critic_loss(probe)
    assert all(np.isfinite(v) for v in metrics.values()), metrics
    assert after["td_loss"].item() < 0.25 * before, (before, after)
    # The conservative critic ranks the dataset action first (a positive CQL gap only shrinks).
    q = algo.nets.critic1(algo.nets.agent_inputs(keyed_dataset.obs))
    ranked = q.masked_fill(~keyed_dataset.avail, -1e9).argmax(-1)
    assert (ranked == keyed_dataset.actions).float().mean() >= 0.95
    acts = algo.policy(greedy=True).act(keyed_dataset.obs.numpy(), keyed_dataset.state.numpy(),
                                        keyed_dataset.avail.numpy())
    assert (acts == keyed_dataset.actions.numpy()).mean() >= 0.95


def test_checkpoint_round_trip_gives_identical_actions(keyed_dataset, checkpoint_round_trip):
    algo = make(keyed_dataset)
    for _ in range(30):
        algo.update()
    checkpoint_round_trip("omar", algo, keyed_dataset)


def test_cli_runs_omar_end_to_end(tmp_path, tiny_expert):
    res = CliRunner().invoke(main, [
        "run", "--algo", "omar", "--env", "rware-tiny-2ag", "--dataset", str(tiny_expert),
        "--steps", "20", "--eval-episodes", "2", "--eval-parallel", "2", "--quiet",
        "--results", str(tmp_path / "r")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    (run_json,) = (tmp_path / "r").rglob("omar/seed-0/run.json")
    run = json.loads(run_json.read_text())
    assert run["status"] == "complete" and run["eval"]["episodes"] == 2
    assert np.isfinite(run["train"]["final_metrics"]["loss"])
