"""SMAX plugin on the real jaxmarl simulator: tasks, env contract, datasets, failure paths.

Everything runs on smax-3m (the smallest map), so JAX compiles one set of functions.
"""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import pytest

from marlbench.catalog import collect_dataset
from marlbench.data.collect import collect, run_episode
from marlbench.data.schema import read_card
from marlbench.errors import DatasetError, MarlbenchError, UnknownNameError
from marlbench.runner import RunRequest, cell_dir, run

pytest.importorskip("jaxmarl", reason="SMAX tests need the smax extra")

from marlbench.environments.smax import maps, sim  # noqa: E402
from marlbench.environments.smax.behaviour import snapshot_path  # noqa: E402

TASK = "smax-3m"


@pytest.fixture(scope="module")
def spec(reg):
    return reg.environment(TASK)


def test_map_table_matches_installed_jaxmarl():
    from jaxmarl.environments.smax.smax_env import MAP_NAME_TO_SCENARIO

    ours = {n: m for n, m in maps.MAPS.items() if not m.approximation}
    assert set(ours) == set(MAP_NAME_TO_SCENARIO)
    for name, m in maps.MAPS.items():
        env = sim.make_jaxmarl_env(m)
        info = m.info()
        assert (env.obs_size, env.state_size, env.action_spaces["ally_0"].n) == (
            info.obs_dim, info.state_dim, info.n_actions), name
        assert env.num_allies == info.n_agents and env.max_steps == info.episode_limit
        if name in MAP_NAME_TO_SCENARIO and not m.randomised:
            assert tuple(int(u) for u in MAP_NAME_TO_SCENARIO[name].unit_types) == m.units()


def test_every_map_is_a_task_and_the_approximation_is_labelled(reg):
    for m in maps.MAPS.values():
        assert reg.environment(m.task).info == m.info()
    approx = reg.environment("smax-corridor-like")
    assert "APPROXIMATION" in approx.description and "APPROXIMATION" in approx.version
    assert approx.info.n_agents == 6 and approx.info.n_actions == 5 + 24


def test_env_contract_win_flag_and_determinism(spec):
    env = spec.factory()
    obs, state, avail = env.reset(seed=5)
    info = spec.info
    assert obs.shape == (3, info.obs_dim) and obs.dtype == np.float32
    assert state.shape == (info.state_dim,) and avail.shape == (3, info.n_actions)
    assert avail.dtype == bool and avail[:, maps.STOP].all()
    out, t = None, 0
    while out is None or not (out.terminated or out.truncated):
        out = env.step(np.full(3, maps.STOP))  # standing still: the enemy walks in and wins
        t += 1
        assert np.isfinite(out.reward) and out.reward >= 0
    assert t <= info.episode_limit and out.terminated != out.truncated
    assert out.info == {"won": False}
    # same seed, same episode; another seed, other start positions
    assert np.array_equal(env.reset(seed=5)[0], obs)
    assert not np.array_equal(env.reset(seed=6)[0], obs)


def test_vector_env_restarts_finished_episodes(spec):
    venv = spec.vector_factory(4)
    obs, state, avail = venv.reset(seed=0)
    assert obs.shape == (4, 3, spec.info.obs_dim) and state.shape == (4, spec.info.state_dim)
    ended = np.zeros(4, bool)
    for _ in range(spec.info.episode_limit):
        out = venv.step(np.full((4, 3), maps.STOP))
        done = out.terminated | out.truncated
        # a finished env already shows its next episode; final_* keep where the old one ended
        for j in range(4):
            assert np.array_equal(out.state[j], out.final_state[j]) != done[j]
        assert not out.won[~done].any()
        ended |= done
    assert ended.all()


def test_heuristic_plays_and_random_is_weaker(reg, spec):
    env = spec.factory()
    returns = {}
    for quality in ("heuristic", "random"):
        beh = reg.recipe(spec, quality).make_behaviour(spec)
        returns[quality] = np.mean([run_episode(env, beh, 0, k, record=False)[2]
                                    for k in range(4)])
    assert returns["heuristic"] > returns["random"] > 0, returns


def test_datasets_are_reproducible_and_carry_their_card(reg, spec, tmp_path):
    def collect(quality, seed, name):
        return collect_dataset(reg, spec, quality, episodes=3, seed=seed,
                               out=tmp_path / f"{name}.h5")[1]

    a, b, c = collect("heuristic", 0, "a"), collect("heuristic", 0, "b"), collect("heuristic", 1,
                                                                                    "c")
    assert a["sha256"] == b["sha256"] != c["sha256"]
    card = read_card(tmp_path / "a.h5")
    assert card["win_rate"] is not None and card["behaviour"].startswith("jaxmarl's scripted")
    assert card["env_version"].startswith("jaxmarl")
    assert card["return_max"] <= 2.0 + 1e-6  # SMAX's raw scale
    if snapshot_path("3m", "good").exists():  # trained behaviours replay byte-identically
        g1, g2 = collect("good", 0, "g1"), collect("good", 0, "g2")
        assert g1["sha256"] == g2["sha256"]


def test_trained_behaviour_missing_for_a_map_says_how_to_make_it(reg):
    spec = reg.environment("smax-27m_vs_30m")
    with pytest.raises(DatasetError, match="smax_behaviours.py --map 27m_vs_30m"):
        reg.recipe(spec, "good").make_behaviour(spec)


def test_dataset_of_another_map_is_refused(reg, spec, tmp_path, datasets_root):
    path, _ = collect_dataset(reg, spec, "random", episodes=1, seed=0,
                              out=tmp_path / "threem.h5")
    with pytest.raises(DatasetError, match="made for 'smax-3m'"):
        run(RunRequest(algo="bc", env="smax-5m_vs_6m", dataset=str(path), steps=1,
                       eval_episodes=1, results_root=tmp_path / "res"))


def test_bc_end_to_end_records_win_flag_and_smac_scale(tmp_path, datasets_root):
    summary = run(RunRequest(algo="bc", env=TASK, dataset="heuristic-3ep", steps=20,
                             eval_episodes=3, eval_parallel=3, log_every=10,
                             results_root=tmp_path / "res", datasets_root=datasets_root))
    cell = cell_dir(tmp_path / "res", TASK, "heuristic-3ep", "bc", 0)
    episodes = json.loads((cell / "eval.json").read_text())["episodes"]
    assert all(isinstance(e["won"], bool) for e in episodes)
    assert all(e["return_smac"] == pytest.approx(10 * e["return"]) for e in episodes)
    assert summary["eval"]["win_rate"] is not None and "return_smac_mean" in summary["eval"]


@pytest.mark.parametrize("task, reason", [("smax-2c_vs_64zg", "no colossus"),
                                          ("smax-corridor", "no terrain")])
def test_maps_smax_cannot_express_fail_saying_why(reg, tmp_path, task, reason):
    with pytest.raises(MarlbenchError, match=reason):
        reg.environment(task).factory()
    with pytest.raises(MarlbenchError, match=reason):  # before any dataset or training
        run(RunRequest(algo="bc", env=task, results_root=tmp_path / "res",
                       datasets_root=tmp_path / "ds"))
    assert not (tmp_path / "ds").exists() and not (tmp_path / "res").exists()


def test_unknown_map_suggests_the_real_ones(reg):
    with pytest.raises(UnknownNameError, match="smax-5m_vs_6m"):
        reg.environment("smax-5m_vs_7m")


def test_missing_jaxmarl_names_the_extra(reg, monkeypatch):
    monkeypatch.setitem(sys.modules, "jaxmarl", None)  # what an absent package looks like
    sim._jaxmarl.cache_clear()
    try:
        with pytest.raises(sim.SmaxUnavailable, match=r"pip install 'marlbench\[smax\]'"):
            reg.environment(TASK).factory()
    finally:
        monkeypatch.undo()
        sim._jaxmarl.cache_clear()


def test_nan_from_the_simulator_stops_collection_and_writes_nothing(reg, spec, tmp_path):
    class PoisonedStep:
        """The real compiled functions, except that step returns a NaN world state."""

        def __init__(self, fns):
            self.fns = fns

        def __getattr__(self, name):
            return getattr(self.fns, name)

        def step(self, *args):
            key, st, obs, state, *rest = self.fns.step(*args)
            return (key, st, obs, np.full(state.shape, np.nan, np.float32), *rest)

    def poisoned_env():
        env = spec.factory()
        env._fns = PoisonedStep(env._fns)
        return env

    bad = dataclasses.replace(spec, factory=poisoned_env)
    beh = reg.recipe(spec, "random").make_behaviour(spec)
    with pytest.raises(sim.SimulatorError, match="non-finite values in state"):
        collect(bad, beh, quality="random", episodes=2, seed=0, path=tmp_path / "nan.h5")
    assert list(tmp_path.iterdir()) == []  # the writer's temporary file is gone too
