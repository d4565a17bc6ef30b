"""The example plugin, written only against marlbench.api, trains and acts."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from marlbench.errors import ConfigError

EXAMPLE = (Path(__file__).resolve().parent.parent / "examples" / "marlbench-example-plugin"
           / "marlbench_example_plugin.py")


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("marlbench_example_plugin", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_example_plugin_learns_the_keyed_actions(example, keyed_dataset):
    torch.manual_seed(0)
    algo = example.LinearBC(example.LinearBCConfig(lr=0.05, batch_size=64),
                            keyed_dataset.info, torch.device("cpu"), 0)
    algo.setup(keyed_dataset)
    losses = [algo.update()["loss"] for _ in range(300)]
    assert losses[-1] < 0.2 * losses[0]
    policy = algo.policy(greedy=True)
    policy.reset(keyed_dataset.n_steps)
    acts = policy.act(keyed_dataset.obs.numpy(), keyed_dataset.state.numpy(),
                      keyed_dataset.avail.numpy())
    assert acts.shape == tuple(keyed_dataset.actions.shape)
    assert (acts == keyed_dataset.actions.numpy()).mean() > 0.95
    # Sampling is seeded: the same seed, the same actions.
    a, b = (algo.policy(seed=7) for _ in range(2))
    a.reset(50)
    b.reset(50)
    args = (keyed_dataset.obs[:50].numpy(), keyed_dataset.state[:50].numpy(),
            keyed_dataset.avail[:50].numpy())
    np.testing.assert_array_equal(a.act(*args), b.act(*args))


def test_example_plugin_config_is_checked(example):
    with pytest.raises(ConfigError, match="lr"):
        example.LinearBCConfig(lr=-1.0)
