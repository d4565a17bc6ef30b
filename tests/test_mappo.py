"""MAPPO: its pieces against hand computations, and online runs through the runner."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from marlbench.algorithms.mappo import MAPPO, MAPPOConfig
from marlbench.api import EnvInfo, EnvSpec, VectorEnv, VectorStep
from marlbench.config import build_config
from marlbench.errors import ConfigError, MarlbenchError
from marlbench.evaluation import evaluate
from marlbench.nn.ppo import ValueNorm, alive_agents
from marlbench.runner import ONLINE, RunRequest, cell_dir, load_run, run

TINY = {"n_envs": "2", "rollout": "16", "epochs": "2", "hidden": "16"}


def _algo(reg, env="rware-tiny-2ag", **overrides):
    cfg = build_config(MAPPOConfig, {**TINY, **overrides})
    return MAPPO(cfg, reg.environment(env).info, torch.device("cpu"), seed=0)


def test_config_is_validated():
    with pytest.raises(ConfigError, match="rollout must be > 0"):
        build_config(MAPPOConfig, {"rollout": "0"})
    with pytest.raises(ConfigError, match="gamma"):
        build_config(MAPPOConfig, {"gamma": "1.5"})


def test_gae_against_a_hand_computation(reg):
    algo = _algo(reg, gamma="0.9", gae_lambda="0.8", value_norm="false")
    # one env, one agent, 3 steps; the episode ends after step 1
    v = torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1)
    last = torch.tensor([4.0]).view(1, 1)
    r = torch.tensor([1.0, 0.5, 2.0]).view(3, 1)
    ended = torch.tensor([False, True, False]).view(3, 1)
    final = torch.zeros(3, 1, 1)
    final[1] = 5.0  # V of the state the episode stopped in
    adv, ret = algo._gae(v, last, r, ended, ended, final)  # terminated: no bootstrap
    d2 = 2.0 + 0.9 * 4.0 - 3.0
    d1 = 0.5 - 2.0  # no bootstrap across the episode end
    d0 = 1.0 + 0.9 * 2.0 - 1.0
    expected = [d0 + 0.9 * 0.8 * d1, d1, d2]
    assert adv.flatten().tolist() == pytest.approx(expected)
    assert ret.flatten().tolist() == pytest.approx([e + x for e, x in zip(expected, [1, 2, 3])])
    # a time limit (ended, not terminated) adds γ V(final) at the cut, and still cuts the trace
    adv_b, _ = algo._gae(v, last, r, torch.zeros_like(ended), ended, final)
    assert adv_b[1].item() == pytest.approx(d1 + 0.9 * 5.0)
    assert adv_b[0].item() == pytest.approx(d0 + 0.9 * 0.8 * (d1 + 0.9 * 5.0))


class _TimeLimitEnv(VectorEnv):
    """Deterministic 2-agent task with a 3-step time limit: agent 1 dies on the last step (its
    final mask has only the no-op) and the state changes with every step."""

    info = EnvInfo(name="time-limit-toy", n_agents=2, obs_dim=2, state_dim=2, n_actions=3,
                   episode_limit=3)

    def __init__(self, n_envs: int):
        self.n_envs, self.t = n_envs, 0

    def _view(self, t: int, dead: bool = False):
        B = self.n_envs
        obs = np.full((B, 2, 2), float(t), np.float32)
        state = np.full((B, 2), 1.0 + t, np.float32)
        avail = np.ones((B, 2, 3), bool)
        if dead:
            avail[:, 1, 1:] = False
        return obs, state, avail

    def reset(self, seed: int):
        self.t = 0
        return self._view(0)

    def step(self, actions: np.ndarray) -> VectorStep:
        self.t += 1
        B, end = self.n_envs, self.t == 3
        final_obs, final_state, final_avail = self._view(self.t, dead=end)
        obs, state, avail = self._view(0) if end else (final_obs, final_state, final_avail)
        if end:
            self.t = 0
        return VectorStep(obs, state, avail, np.ones(B, np.float32), np.zeros(B, bool),
                          np.full(B, end), np.zeros(B, bool), final_obs, final_state,
                          final_avail)


@pytest.mark.parametrize("bootstrap", [True, False])
def test_time_limits_bootstrap_from_the_final_state_with_its_death_mask(bootstrap):
    spec = EnvSpec(name="time-limit-toy", family="toy", info=_TimeLimitEnv.info,
                   factory=lambda: None, vector_factory=_TimeLimitEnv)
    overrides = {**TINY, "n_envs": "1", "rollout": "3", "value_norm": "false",
                 "gamma": "0.9", "gae_lambda": "0.8"}
    if not bootstrap:
        overrides["bootstrap_time_limits"] = "false"
    else:
        assert MAPPOConfig().bootstrap_time_limits  # the default
    algo = MAPPO(build_config(MAPPOConfig, overrides), spec.info, torch.device("cpu"), seed=0)
    algo.setup_online(spec)
    roll = algo._collect()
    with torch.no_grad():
        obs, state, avail = (torch.as_tensor(x) for x in _TimeLimitEnv(1)._view(3, dead=True))
        v_final = algo.critic(state, obs, torch.tensor([[1.0, 0.0]]))[0]  # agent 1 dead
        v_alive = algo.critic(state, obs, torch.ones(1, 2))[0]
    v = roll.values[:, 0]  # [3, n]
    delta2 = 1.0 + (0.9 * v_final if bootstrap else 0.0) - v[2]
    assert torch.allclose(roll.advantages[2, 0], delta2, atol=1e-5)
    assert not torch.allclose(v_final, v_alive)  # the mask matters for the test to mean much
    delta1 = 1.0 + 0.9 * v[2] - v[1]
    assert torch.allclose(roll.advantages[1, 0], delta1 + 0.9 * 0.8 * delta2, atol=1e-5)


def test_value_norm_tracks_the_targets():
    vn = ValueNorm()
    x = torch.randn(10_000) * 3.0 + 7.0
    for chunk in x.chunk(10):
        vn.update(chunk)
    mean, var = vn._stats()
    assert mean.item() == pytest.approx(7.0, abs=0.15) and var.sqrt().item() == pytest.approx(
        3.0, abs=0.15)
    assert torch.allclose(vn.denormalize(vn.normalize(x)), x, atol=1e-4)


def test_dead_agents_are_those_with_only_the_noop():
    avail = torch.tensor([[True, False, False], [True, True, False], [False, True, True]])
    assert alive_agents(avail).tolist() == [False, True, True]


def test_online_update_on_rware_through_the_serial_fallback(reg):
    algo = _algo(reg)
    algo.setup_online(reg.environment("rware-tiny-2ag"))
    before = [p.clone() for p in algo.actor.parameters()]
    m = algo.update()
    assert m["env_steps"] == 2 * 16 and np.isfinite(m["loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, algo.actor.parameters()))


def test_offline_setup_is_refused(reg):
    with pytest.raises(MarlbenchError, match="online"):
        _algo(reg).setup(None)


def test_exported_actor_is_the_policy_file_the_datasets_replay(reg):
    from marlbench.environments.smax.behaviour import MLPPolicy

    algo = _algo(reg, env="smax-3m")
    tensors = {k: v.numpy() for k, v in algo.actor.net.state_dict().items()}
    policy = MLPPolicy(tensors, {})
    obs = torch.randn(4, 3, reg.environment("smax-3m").info.obs_dim)
    with torch.no_grad():
        ours = algo.actor(obs).numpy()
    assert np.allclose(policy.logits(obs.numpy()), ours, atol=1e-5)


@pytest.fixture(scope="module")
def online_cell(reg, tmp_path_factory):
    pytest.importorskip("jaxmarl")
    root = tmp_path_factory.mktemp("online")
    summary = run(RunRequest(algo="mappo", env="smax-3m", steps=2, eval_episodes=3,
                             eval_parallel=3, log_every=1, overrides=dict(TINY),
                             results_root=root))
    return root, summary


def test_online_run_writes_the_same_layout_without_a_dataset(online_cell):
    root, summary = online_cell
    cell = cell_dir(root, "smax-3m", ONLINE, "mappo", 0)
    assert sorted(p.name for p in cell.iterdir()) == [
        "config.json", "eval.json", "metrics.jsonl", "model.safetensors", "run.json"]
    rows = [json.loads(line) for line in (cell / "metrics.jsonl").read_text().splitlines()]
    assert [r["env_steps"] for r in rows] == [32, 64]
    assert summary["dataset"] == ONLINE and summary["dataset_card"] is None
    assert summary["eval"]["win_rate"] is not None


def test_online_run_reloads_into_the_same_evaluation(online_cell):
    root, _ = online_cell
    cell = cell_dir(root, "smax-3m", ONLINE, "mappo", 0)
    algo, _, spec = load_run(cell)
    episodes = json.loads((cell / "eval.json").read_text())["episodes"]
    again = evaluate(spec, algo.policy(seed=0), 3, seed=0, parallel=3)
    assert [r.ret for r in again] == [e["return"] for e in episodes]


def test_a_dataset_for_an_online_algorithm_is_an_error(tmp_path):
    with pytest.raises(MarlbenchError, match="trains online"):
        run(RunRequest(algo="mappo", env="rware-tiny-2ag", dataset="expert", steps=1,
                       results_root=tmp_path))


@pytest.mark.slow
def test_mappo_learns_to_win_smax_3m(reg):
    """Paper defaults except the budget: 40 updates (128k env steps), ~2 minutes on one core."""
    pytest.importorskip("jaxmarl")
    torch.manual_seed(0)
    algo = MAPPO(MAPPOConfig(), reg.environment("smax-3m").info, torch.device("cpu"), seed=0)
    algo.setup_online(reg.environment("smax-3m"))
    for _ in range(40):
        m = algo.update()
    assert m["train_win_rate"] >= 0.5, m
