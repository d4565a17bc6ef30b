"""OptiDICE: the ν-loss falls, the correction is finite and normalised, the extracted policies
imitate the data, a checkpoint reloads exactly, and it runs from the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from marlbench.algorithms.optidice import OptiDICE, OptiDICEConfig
from marlbench.cli import main
from marlbench.nn import dice

SMALL = {"hidden": 64, "batch_size": 128, "lr": 3e-3, "nu_lr": 3e-3}


def make(data, seed=0, **overrides):
    torch.manual_seed(seed)
    algo = OptiDICE(OptiDICEConfig(**{**SMALL, **overrides}), data.info, torch.device("cpu"),
                    seed)
    algo.setup(data)
    return algo


def probe_losses(algo, data):
    probe = data.transitions(1024, np.random.default_rng(9))
    init = algo.init_pool[torch.arange(len(algo.init_pool))]
    with torch.no_grad():
        return algo.losses(probe, init)


def test_f_divergence_closed_forms_match_their_definitions():
    # f*(x) = max_{w >= 0} w x - f(w), attained at w(x): checked against a fine grid of w.
    x = torch.linspace(-3, 3, 61)
    grid = torch.linspace(0, 6, 60_001)
    for name in dice.F_DIVERGENCES:
        objective = grid[None, :] * x[:, None] - dice.f_value(name, grid)[None, :]
        best, arg = objective.max(1)
        inside = dice.f_weight(name, x) < 5.9  # the grid ends at 6
        assert inside.sum() > 40
        torch.testing.assert_close(dice.f_conjugate(name, x)[inside], best[inside], atol=1e-3,
                                   rtol=1e-3)
        torch.testing.assert_close(dice.f_weight(name, x)[inside], grid[arg][inside],
                                   atol=2e-3, rtol=1e-3)


@pytest.mark.parametrize("f", ["kl", "softchi"])
def test_nu_loss_falls_weights_normalised_and_policy_matches_data(keyed_dataset, f,
                                                                  greedy_agreement):
    # gamma 0.5: the keyed episodes are 6-14 steps, so a short horizon settles in the budget.
    algo = make(keyed_dataset, f=f, gamma=0.5)
    before = probe_losses(algo, keyed_dataset)["nu_loss"].item()
    for _ in range(600):
        metrics = algo.update()
    after = probe_losses(algo, keyed_dataset)
    assert all(np.isfinite(v) for v in metrics.values()), metrics
    assert after["nu_loss"].item() < before - 0.01, (before, after["nu_loss"].item())
    # The weights are finite, non-negative and average ~1 under the data (KL: by batch
    # normalisation; softchi: through the learned multiplier λ).
    assert torch.isfinite(after["w_max"]) and after["w_max"] >= 0
    assert abs(after["w_mean"].item() - 1.0) < 0.15, after["w_mean"].item()
    assert after["w_ess"].item() > 0.2  # not collapsed onto a few samples
    assert greedy_agreement(algo, keyed_dataset) >= 0.95


def test_time_limit_bootstraps_and_terminal_does_not(keyed_dataset):
    algo = make(keyed_dataset)
    with torch.no_grad():
        for p in algo.nets.nu.parameters():
            p.zero_()
        algo.nets.nu[-1].bias.fill_(1.0)  # ν ≡ 1
    data, gamma = keyed_dataset, algo.config.gamma
    b = data.transitions(2000, np.random.default_rng(0))
    idx = np.random.default_rng(0).integers(0, data.n_steps, 2000)  # the steps sampled above
    last = torch.from_numpy(np.isin(idx, data.start + data.length - 1))
    trunc = last & ~b.terminated
    assert b.terminated.any() and trunc.any()  # both kinds of episode end are sampled
    with torch.no_grad():
        e = algo.advantage(b)
    # True terminals drop γ ν(s') (e = r - 1); time limits and mid-episode steps bootstrap.
    torch.testing.assert_close(e[b.terminated], b.rewards[b.terminated] - 1)
    torch.testing.assert_close(e[trunc], b.rewards[trunc] + gamma - 1)
    torch.testing.assert_close(e[~last], b.rewards[~last] + gamma - 1)


def test_checkpoint_round_trip_gives_identical_actions(keyed_dataset, checkpoint_round_trip):
    algo = make(keyed_dataset, f="chisquare")
    for _ in range(30):
        algo.update()
    fresh = checkpoint_round_trip("optidice", algo, keyed_dataset)
    assert fresh.nets.norm.lam.item() == algo.nets.norm.lam.item()


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="f-divergence"):
        OptiDICEConfig(f="hellinger")
    with pytest.raises(ValueError, match="alpha"):
        OptiDICEConfig(alpha=0.0)


def test_cli_runs_optidice_end_to_end(tmp_path, tiny_expert):
    res = CliRunner().invoke(main, [
        "run", "--algo", "optidice", "--env", "rware-tiny-2ag", "--dataset", str(tiny_expert),
        "--steps", "20", "--eval-episodes", "2", "--eval-parallel", "2", "--threads", "1",
        "--quiet", "--results", str(tmp_path / "r")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    (run_json,) = (tmp_path / "r").rglob("optidice/seed-0/run.json")
    run = json.loads(run_json.read_text())
    assert run["status"] == "complete" and run["eval"]["episodes"] == 2
    assert np.isfinite(run["train"]["final_metrics"]["loss"])
