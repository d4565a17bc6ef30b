"""AlberDICE: a turn moves only its own agent, the ν-losses fall with finite normalised
weights, the extracted policies imitate the data, a checkpoint reloads exactly, and it runs
from the CLI."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from marlbench.algorithms.alberdice import AlberDICE, AlberDICEConfig
from marlbench.cli import main

SMALL = {"hidden": 64, "batch_size": 128, "lr": 3e-3, "nu_lr": 3e-3}


def make(data, seed=0, **overrides):
    torch.manual_seed(seed)
    algo = AlberDICE(AlberDICEConfig(**{**SMALL, **overrides}), data.info,
                     torch.device("cpu"), seed)
    algo.setup(data)
    return algo


def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(a, p) for a, p in zip(before, module.parameters(), strict=True))


def test_a_turn_changes_only_the_agent_whose_turn_it_is(keyed_dataset):
    algo = make(keyed_dataset)
    for _ in range(3):  # every agent's optimisers hold momentum from earlier turns
        algo.update()
    nets, data = algo.nets, keyed_dataset
    b = data.transitions(128, np.random.default_rng(5))
    init = algo.sample_init(128)
    obs, state, avail = data.obs.numpy(), data.state.numpy(), data.avail.numpy()
    for i in range(nets.n):
        mine = [snapshot(m) for m in nets.agent_modules(i)]
        theirs = [snapshot(m) for j in range(nets.n) if j != i for m in nets.agent_modules(j)]
        shared = snapshot(nets.data_actor)
        acts_before = algo.policy(greedy=True).act(obs, state, avail)
        logits_before = nets.logits(data.obs).detach()
        algo.turn(i, b, init)
        # Policy, autoregressive data policy, ν_i and ê_i all learn (λ_i is unused by KL).
        moved = [changed(s, m) for s, m in zip(mine, nets.agent_modules(i), strict=True)]
        assert moved == [True, True, True, True, False], moved
        others = [m for j in range(nets.n) if j != i for m in nets.agent_modules(j)]
        assert not any(changed(s, m) for s, m in zip(theirs, others, strict=True))
        # The shared data policy learns on agent 0's turn only (as in the authors' code).
        assert changed(shared, nets.data_actor) == (i == 0)
        # The other agent acts exactly as before; agent i's logits moved.
        logits_after = nets.logits(data.obs).detach()
        other = [j for j in range(nets.n) if j != i]
        torch.testing.assert_close(logits_after[:, other], logits_before[:, other],
                                   rtol=0, atol=0)
        assert not torch.equal(logits_after[:, i], logits_before[:, i])
        acts_after = algo.policy(greedy=True).act(obs, state, avail)
        np.testing.assert_array_equal(acts_after[:, other], acts_before[:, other])


def test_best_response_sees_the_other_agents_current_policy(keyed_dataset):
    algo = make(keyed_dataset)
    b = keyed_dataset.transitions(256, np.random.default_rng(2))
    kl, rho = algo.others(1, b)
    with torch.no_grad():
        algo.nets.actors[0][-1].bias += torch.tensor([3.0, 0, 0, 0, 0])
    kl2, rho2 = algo.others(1, b)
    assert kl2.mean() > kl.mean() + 0.1  # agent 0 now strays from the data policy
    assert not torch.allclose(rho, rho2)
    assert torch.isfinite(rho2).all() and (rho2 <= algo.config.ratio_max + 1e-4).all()


@pytest.mark.parametrize("overrides", [{}, {"f": "softchi", "extraction": "wbc"}])
def test_nu_losses_fall_weights_normalised_and_policies_match_data(keyed_dataset, overrides,
                                                                   greedy_agreement):
    algo = make(keyed_dataset, gamma=0.5, **overrides)
    untrained_nu = [copy.deepcopy(m) for m in algo.nets.nu]
    first = [algo.update() for _ in range(20)]
    for _ in range(400):
        metrics = algo.update()
    last = [algo.update() for _ in range(20)]
    mean = lambda ms, k: float(np.mean([m[k] for m in ms]))  # noqa: E731
    assert all(np.isfinite(v) for v in metrics.values()), metrics
    # Each agent's objective moves with the other agents' policies, so the ν-losses are
    # compared on the final objective: the trained ν_i against the untrained one.
    b = keyed_dataset.transitions(1024, np.random.default_rng(9))
    init = algo.sample_init(1024)
    for i in range(algo.nets.n):
        kl, rho = algo.others(i, b)
        with torch.no_grad():
            trained = algo.nu_objective(i, b, init, kl, rho)[0].item()
            untrained = algo.nu_objective(i, b, init, kl, rho, nu=untrained_nu[i])[0].item()
        assert trained < untrained - 0.05, (i, trained, untrained)
    assert mean(last, "e_loss") < mean(first, "e_loss")
    assert mean(last, "ar_loss") < 0.5 * mean(first, "ar_loss")
    # Weights: finite, and E_D[ρ w] ~ 1 (KL: batch-normalised; softchi: learned λ).
    assert np.isfinite(mean(last, "w_max"))
    assert abs(mean(last, "w_mean") - 1.0) < 0.15, mean(last, "w_mean")
    assert mean(last, "w_ess") > 0.2
    assert greedy_agreement(algo, keyed_dataset) >= 0.95


def test_checkpoint_round_trip_gives_identical_actions(keyed_dataset, checkpoint_round_trip):
    algo = make(keyed_dataset)
    for _ in range(20):
        algo.update()
    checkpoint_round_trip("alberdice", algo, keyed_dataset)


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="extraction"):
        AlberDICEConfig(extraction="awr")
    with pytest.raises(ValueError, match="f-divergence"):
        AlberDICEConfig(f="tv")


def test_cli_runs_alberdice_end_to_end(tmp_path, tiny_expert):
    res = CliRunner().invoke(main, [
        "run", "--algo", "alberdice", "--env", "rware-tiny-2ag", "--dataset", str(tiny_expert),
        "--steps", "20", "--eval-episodes", "2", "--eval-parallel", "2", "--threads", "1",
        "--quiet", "--results", str(tmp_path / "r")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    (run_json,) = (tmp_path / "r").rglob("alberdice/seed-0/run.json")
    run = json.loads(run_json.read_text())
    assert run["status"] == "complete" and run["eval"]["episodes"] == 2
    assert np.isfinite(run["train"]["final_metrics"]["loss"])
