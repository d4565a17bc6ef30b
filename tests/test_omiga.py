"""OMIGA fits its critic, imitates in-sample, reloads exactly, and runs from the CLI."""

from __future__ import annotations

import json

import numpy as np
import torch
from click.testing import CliRunner

from marlbench.algorithms.omiga import OMIGA, OMIGAConfig
from marlbench.cli import main

SMALL = {"hidden": 64, "mixer_hidden": 16, "batch_size": 64, "lr": 3e-3}


def make(data, seed=0, **overrides):
    torch.manual_seed(seed)
    algo = OMIGA(OMIGAConfig(**{**SMALL, **overrides}), data.info, torch.device("cpu"), seed)
    algo.setup(data)
    return algo


def test_td_error_falls_and_policy_matches_the_data(keyed_dataset, greedy_agreement):
    # A short horizon so the values settle within the test's budget; tau high for the same
    # reason (the targets follow the online networks quickly).
    algo = make(keyed_dataset, gamma=0.5, tau=0.05)
    probe = keyed_dataset.transitions(512, np.random.default_rng(9))
    with torch.no_grad():
        before = algo.losses(probe)["q_loss"].item()
    for _ in range(800):
        metrics = algo.update()
    with torch.no_grad():
        after = algo.losses(probe)["q_loss"].item()
    assert all(np.isfinite(v) for v in metrics.values()), metrics
    assert after < 0.1 * before, (before, after)
    assert greedy_agreement(algo, keyed_dataset) >= 0.95


def test_checkpoint_round_trip_gives_identical_actions(keyed_dataset, checkpoint_round_trip):
    algo = make(keyed_dataset)
    for _ in range(30):
        algo.update()
    checkpoint_round_trip("omiga", algo, keyed_dataset)


def test_cli_runs_omiga_end_to_end(tmp_path, tiny_expert):
    res = CliRunner().invoke(main, [
        "run", "--algo", "omiga", "--env", "rware-tiny-2ag", "--dataset", str(tiny_expert),
        "--steps", "20", "--eval-episodes", "2", "--eval-parallel", "2", "--quiet",
        "--results", str(tmp_path / "r")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    (run_json,) = (tmp_path / "r").rglob("omiga/seed-0/run.json")
    run = json.loads(run_json.read_text())
    assert run["status"] == "complete" and run["eval"]["episodes"] == 2
    assert np.isfinite(run["train"]["final_metrics"]["loss"])
