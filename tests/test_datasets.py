"""Dataset format, determinism, loading views, and every way a file can be bad."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from marlbench.catalog import collect_dataset
from marlbench.data import OfflineDataset
from marlbench.data.schema import read_arrays, read_card
from marlbench.errors import DatasetError


def test_same_seed_same_bytes_other_seed_differs(reg, tmp_path):
    spec = reg.environment("rware-tiny-2ag")
    p1, c1 = collect_dataset(reg, spec, "medium", episodes=2, seed=5, out=tmp_path / "a.h5")
    p2, c2 = collect_dataset(reg, spec, "medium", episodes=2, seed=5, out=tmp_path / "b.h5")
    p3, c3 = collect_dataset(reg, spec, "medium", episodes=2, seed=6, out=tmp_path / "c.h5")
    assert c1["sha256"] == c2["sha256"] != c3["sha256"]
    a1, a2 = read_arrays(p1)[1], read_arrays(p2)[1]
    assert all(np.array_equal(a1[k], a2[k]) for k in a1)


def test_card_holds_statistics_and_references(tiny_expert):
    card = read_card(tiny_expert)
    _, arrays = read_arrays(tiny_expert)
    returns = arrays["episodes/return"]
    assert card["episodes"] == 4 and card["steps"] == 2000
    assert card["return_mean"] == pytest.approx(returns.mean())
    assert card["return_max"] == pytest.approx(returns.max())
    assert card["reference_returns"]["expert"] > card["reference_returns"]["random"]
    assert "steps/state" not in arrays  # RWARE's state is the concatenated obs
    assert np.all(arrays["steps/truncated"][arrays["episodes/start"] + 499])


def test_trajectory_view_pads_masks_and_derives_return_to_go(reg, tiny_expert):
    data = OfflineDataset.load(tiny_expert, reg.environment("rware-tiny-2ag").info)
    rng = np.random.default_rng(0)
    full = data.trajectories(3, rng, episodes=np.array([0, 1, 3]))
    assert full.obs.shape == (3, 500, 2, 71) and full.mask.all()
    rewards = full.rewards[0].numpy()
    assert np.allclose(full.rtg[0].numpy(), np.cumsum(rewards[::-1])[::-1], atol=1e-4)
    assert np.allclose(full.state[1].numpy(), full.obs[1].reshape(500, -1).numpy())
    padded = data.trajectories(2, rng, length=600)
    assert padded.mask.sum(1).tolist() == [500, 500]
    assert padded.obs[:, 500:].abs().sum() == 0 and padded.avail[:, 500:].all()
    eps = np.array([0, 2])
    window = data.trajectories(2, rng, length=50, episodes=eps)
    assert window.mask.all() and window.obs.shape[1] == 50
    t0 = window.timesteps[:, 0].numpy()
    assert np.array_equal(window.timesteps[:, 49].numpy(), t0 + 49)
    assert np.allclose(window.rtg[:, 0].numpy(), data.rtg[data.start[eps] + t0].numpy())
    assert np.array_equal(window.obs[:, 0].numpy(), data.obs[data.start[eps] + t0].numpy())


def test_transition_view_crosses_episode_ends_with_final_obs(reg, tiny_expert):
    data = OfflineDataset.load(tiny_expert, reg.environment("rware-tiny-2ag").info)
    _, arrays = read_arrays(tiny_expert)

    class FixedRng:  # picks the last step of episode 1 and a middle step
        def integers(self, lo, hi, n):
            return np.array([999, 10])

    b = data.transitions(2, FixedRng())
    assert np.array_equal(b.next_obs[0].numpy(), arrays["episodes/final_obs"][1])
    assert np.array_equal(b.next_obs[1].numpy(), arrays["steps/obs"][11])
    assert not b.terminated.any()  # RWARE episodes end by time limit only


def _corrupt(src, dst):
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        f["steps/rewards"][3] = 1234.0


def test_bad_files_give_clear_errors(reg, tiny_expert, tmp_path):
    info = reg.environment("rware-tiny-2ag").info
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(tiny_expert.read_bytes()[:5000])
    with pytest.raises(DatasetError, match="corrupt or truncated"):
        OfflineDataset.load(truncated, info)

    modified = tmp_path / "modified.h5"
    _corrupt(tiny_expert, modified)
    with pytest.raises(DatasetError, match="checksum"):
        OfflineDataset.load(modified, info)

    old = tmp_path / "old.h5"
    shutil.copy(tiny_expert, old)
    with h5py.File(old, "r+") as f:
        f.attrs["schema_version"] = 0
    with pytest.raises(DatasetError, match="schema version 0"):
        OfflineDataset.load(old, info)

    with pytest.raises(DatasetError, match="does not fit env 'rware-tiny-4ag'.*n_agents 2 != 4"):
        OfflineDataset.load(tiny_expert, reg.environment("rware-tiny-4ag").info)

    with pytest.raises(DatasetError, match="does not exist"):
        OfflineDataset.load(tmp_path / "nope.h5", info)


def test_interrupted_collection_leaves_no_file(reg, tmp_path, monkeypatch):
    from marlbench.data import collect as collect_mod

    spec = reg.environment("rware-tiny-2ag")
    calls = {"n": 0}
    real = collect_mod.run_episode

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(collect_mod, "run_episode", dying)
    with pytest.raises(KeyboardInterrupt):
        collect_mod.collect(spec, reg.recipe(spec, "expert").make_behaviour(spec),
                            quality="expert", episodes=3, seed=0, path=tmp_path / "x.h5")
    assert list(tmp_path.iterdir()) == []
