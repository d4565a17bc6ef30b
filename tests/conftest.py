"""Shared fixtures: tiny real datasets built once per session, isolated result folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from marlbench.api import EnvInfo
from marlbench.catalog import collect_dataset
from marlbench.data import OfflineDataset
from marlbench.plugins import registry

torch.set_num_threads(1)  # tests run many tiny models; threads only add overhead


@pytest.fixture(scope="session")
def reg():
    return registry()


@pytest.fixture(scope="session")
def datasets_root(tmp_path_factory):
    return tmp_path_factory.mktemp("datasets")


@pytest.fixture(scope="session")
def tiny_expert(reg, datasets_root):
    """A 4-episode expert dataset of rware-tiny-2ag, collected for real."""
    spec = reg.environment("rware-tiny-2ag")
    path, card = collect_dataset(reg, spec, "expert", episodes=4, seed=0, root=datasets_root)
    return path


@pytest.fixture(autouse=True)
def isolated_roots(monkeypatch, tmp_path, datasets_root):
    """CLI commands in tests write under tmp folders, never the repo's datasets/ results/."""
    monkeypatch.setenv("MARLBENCH_DATASETS", str(datasets_root))
    monkeypatch.setenv("MARLBENCH_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("COLUMNS", "200")  # rich tables: keep names on one line


@pytest.fixture
def keyed_dataset():
    """A small synthetic dataset whose actions are a function of the observation.

    Each agent's observation one-hot encodes a key in 0..4 (plus noise); the dataset action is
    the key, one other action is unavailable, and the team reward is (key_0 + key_1) / 8.
    Episodes of 6-14 steps end either in a terminal or a time limit. Anything fitting it can
    reach ~100% agreement with the data and a small TD error.
    """
    n, keys, noise, lengths = 2, 5, 3, np.random.default_rng(0).integers(6, 15, 16)
    info = EnvInfo(name="keyed", n_agents=n, obs_dim=keys + noise, state_dim=n * (keys + noise),
                   n_actions=keys, episode_limit=int(lengths.max()))
    rng = np.random.default_rng(1)

    def observe(k):  # keys [..., n] -> obs [..., n, obs_dim]
        return np.concatenate([np.eye(keys)[k], 0.1 * rng.standard_normal((*k.shape, noise))],
                              -1).astype(np.float32)

    def availability(k):  # the action after the key is unavailable
        avail = np.ones((*k.shape, keys), dtype=bool)
        np.put_along_axis(avail, ((k + 1) % keys)[..., None], False, -1)
        return avail

    T = int(lengths.sum())
    k = rng.integers(0, keys, (T, n))
    start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    terminated = np.zeros(T, dtype=bool)
    terminated[(start + lengths - 1)[::2]] = True  # even episodes end in a terminal
    rewards = (k.sum(-1) / 8).astype(np.float32)
    k_final = rng.integers(0, keys, (len(lengths), n))
    arrays = {
        "steps/obs": observe(k), "steps/avail": availability(k),
        "steps/actions": k.astype(np.int32), "steps/rewards": rewards,
        "steps/terminated": terminated, "steps/truncated": ~terminated & np.isin(
            np.arange(T), start + lengths - 1),
        "episodes/start": start, "episodes/length": lengths,
        "episodes/return": np.add.reduceat(rewards, start),
        "episodes/final_obs": observe(k_final), "episodes/final_avail": availability(k_final),
    }
    return OfflineDataset({"state_is_concat_obs": True}, arrays, info)


def _greedy_agreement(algo, data: OfflineDataset) -> float:
    acts = algo.policy(greedy=True).act(data.obs.numpy(), data.state.numpy(),
                                        data.avail.numpy())
    return float((acts == data.actions.numpy()).mean())


@pytest.fixture
def greedy_agreement():
    """`greedy_agreement(algo, data)`: the fraction of the dataset's actions a feed-forward
    policy's greedy actions repeat, on every step of `data` at once."""
    return _greedy_agreement


@pytest.fixture
def checkpoint_round_trip(tmp_path):
    """`checkpoint_round_trip(name, algo, data)`: saves `algo`, loads it into a fresh instance
    (another seed), asserts that both feed-forward policies pick identical, available actions
    on every step of `data`, greedy and sampled; returns the fresh instance."""
    from marlbench import checkpoint

    def round_trip(name: str, algo, data: OfflineDataset):
        checkpoint.save(tmp_path / "m.safetensors", name, algo)
        fresh = type(algo)(algo.config, data.info, torch.device("cpu"), 1)
        checkpoint.load(tmp_path / "m.safetensors", name, fresh)
        obs, state, avail = (x.numpy() for x in (data.obs, data.state, data.avail))
        for greedy in (True, False):
            actions = []
            for source in (algo, fresh):
                policy = source.policy(greedy=greedy, seed=3)
                policy.reset(len(obs))
                actions.append(policy.act(obs, state, avail))
            a, b = actions
            np.testing.assert_array_equal(a, b)
            assert avail[np.arange(len(a))[:, None], np.arange(a.shape[1]), a].all()
        return fresh

    return round_trip
