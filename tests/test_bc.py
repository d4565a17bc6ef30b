"""BC learns what it is shown; forced steps stay out of its loss; run.json records its inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from marlbench.algorithms.bc import BC, BCConfig
from marlbench.cli import main
from marlbench.data import OfflineDataset
from marlbench.nn import mask_logits


def test_bc_fits_the_expert_actions(reg, tiny_expert):
    info = reg.environment("rware-tiny-2ag").info
    data = OfflineDataset.load(tiny_expert, info)
    torch.manual_seed(0)
    algo = BC(BCConfig(steps=600, batch_size=512, lr=2e-3), info, torch.device("cpu"), 0)
    algo.setup(data)
    for _ in range(600):
        metrics = algo.update()
    assert np.isfinite(metrics["loss"])
    policy = algo.policy(greedy=True)
    obs, state, avail = data.obs[:2000].numpy(), data.state[:2000].numpy(), data.avail[:2000]
    acts = policy.act(obs, state, avail.numpy())
    agree = (acts == data.actions[:2000].numpy()).mean()
    # The planner uses information outside the agents' views (which shelf is requested far
    # away), so 100% is impossible; 85% is far above the majority action's share.
    majority = np.bincount(data.actions.reshape(-1).numpy()).max() / data.actions.numel()
    assert agree > max(0.85, majority + 0.1), (agree, majority)


def _kill_agent_1(data, every=2):
    """Mark agent 1 dead on every `every`-th step as SMAX does: only `stop` (here action 0)
    available, and taken."""
    dead = torch.zeros(data.n_steps, dtype=torch.bool)
    dead[::every] = True
    data.avail[dead, 1] = False
    data.avail[dead, 1, 0] = True
    data.actions[dead, 1] = 0
    return dead


def test_forced_steps_are_left_out_of_the_loss_and_accuracy(keyed_dataset):
    _kill_agent_1(keyed_dataset)
    algo = BC(BCConfig(hidden=16, batch_size=64), keyed_dataset.info, torch.device("cpu"), 0)
    algo.setup(keyed_dataset)
    batch = keyed_dataset.transitions(64, np.random.default_rng(0))
    loss, accuracy = algo.loss(batch)
    with torch.no_grad():
        logits = mask_logits(algo.net(batch.obs, batch.state), batch.avail)
    chose = batch.avail.sum(-1) > 1
    assert 0 < (~chose).sum() < chose.numel()  # the batch holds both kinds of steps
    expected = F.cross_entropy(logits[chose], batch.actions[chose])
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(
        accuracy, (logits[chose].argmax(-1) == batch.actions[chose]).float().mean())
    # Counting the forced steps (zero loss, always right) would shrink the loss.
    assert loss > F.cross_entropy(logits.flatten(0, 1), batch.actions.flatten()) * 1.05


def test_a_batch_without_choices_has_zero_loss_not_nan(keyed_dataset):
    _kill_agent_1(keyed_dataset, every=1)
    keyed_dataset.avail[:, 0] = False
    keyed_dataset.avail[:, 0, 0] = True
    algo = BC(BCConfig(hidden=16, batch_size=8), keyed_dataset.info, torch.device("cpu"), 0)
    algo.setup(keyed_dataset)
    assert algo.update()["loss"] == 0.0


@pytest.mark.parametrize("use_state", [False, True])
def test_run_json_says_whether_the_run_used_the_global_state(tmp_path, tiny_expert, use_state):
    res = CliRunner().invoke(main, [
        "run", "--algo", "bc", "--env", "rware-tiny-2ag", "--dataset", str(tiny_expert),
        "--steps", "2", "--eval-episodes", "1", "--quiet", "--results", str(tmp_path / "r"),
        "--set", f"use_state={str(use_state).lower()}"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    (run_json,) = (tmp_path / "r").rglob("bc/seed-0/run.json")
    assert json.loads(run_json.read_text())["algorithm"]["uses_global_state"] is use_state
