"""Batched evaluation: all parallel episodes advance in one batched policy call (MADS4's
recurrent step, MADT's KV cache and K-step window), with the same returns per seed as
evaluating one episode at a time, greedy or sampled (every episode samples from its own
random stream: marlbench.nn.ActionSampler)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from marlbench.algorithms.mads4 import MADS4, MADS4Config
from marlbench.algorithms.madt import MADT, MADTConfig
from marlbench.config import build_config
from marlbench.data import OfflineDataset
from marlbench.evaluation import evaluate


class RecordingPolicy:
    """Records the batch size of every `act` call and each episode's actions."""

    def __init__(self, policy):
        self.policy, self.batches, self.episodes = policy, [], []

    def reset(self, n_envs):
        self.policy.reset(n_envs)
        self.current = [[] for _ in range(n_envs)]
        self.episodes += self.current

    def act(self, obs, state, avail):
        self.batches.append(len(obs))
        actions = self.policy.act(obs, state, avail)
        for j, a in enumerate(actions):
            self.current[j].append(a.tolist())
        return actions

    def observe(self, rewards):
        self.policy.observe(rewards)


def _algo(name, info, data):
    torch.manual_seed(0)
    if name == "mads4":
        algo = MADS4(MADS4Config(d_model=16, d_state=16, embed_dim=16, message_dim=8),
                     info, torch.device("cpu"), 0)
    else:
        algo = MADT(MADTConfig(dim=16, context=8, batch_size=8), info, torch.device("cpu"), 0)
    algo.setup(data)
    algo.update()
    # A freshly trained head picks one greedy action almost everywhere (RWARE's expert mostly
    # moves forward); random head weights make the greedy actions depend on the inputs.
    head = algo.net.action_head if name == "mads4" else algo.net.head
    with torch.no_grad():
        for p in head.parameters():
            p.normal_()
    return algo


@pytest.mark.parametrize("greedy", [True, False], ids=["greedy", "sampled"])
@pytest.mark.parametrize("name", ["mads4", "madt"])
def test_batched_evaluation_equals_one_episode_at_a_time(reg, tiny_expert, name, greedy):
    spec = reg.environment("rware-tiny-2ag")
    algo = _algo(name, spec.info, OfflineDataset.load(tiny_expert, spec.info))
    batched = RecordingPolicy(algo.policy(greedy=greedy, seed=0))
    together = evaluate(spec, batched, episodes=3, seed=5, parallel=3)
    single = RecordingPolicy(algo.policy(greedy=greedy, seed=0))
    alone = evaluate(spec, single, episodes=3, seed=5, parallel=1)
    # every episode acts the same, step for step (after its end a batched env idles)
    for a, b in zip(batched.episodes, single.episodes, strict=True):
        assert a[:len(b)] == b
    assert len({str(e) for e in single.episodes}) > 1  # not one action sequence for all
    assert [r.env_seed for r in together] == [r.env_seed for r in alone]
    assert [r.ret for r in together] == [r.ret for r in alone]
    assert [r.length for r in together] == [r.length for r in alone]
    assert set(batched.batches) == {3}  # one call per step for all three episodes
    assert len(batched.batches) == max(r.length for r in together)
    assert np.isfinite([r.ret for r in together]).all()


@pytest.mark.parametrize(("algo_name", "overrides"), [
    ("bc", {}), ("icq", {}), ("madtkd", {"teacher_steps": 0, "batch_size": 4})])
def test_sampled_returns_do_not_depend_on_the_batch(reg, tiny_expert, algo_name, overrides):
    """Every registered kind of policy (feed-forward, recurrent GRU, K-step window): five
    sampled episodes, together in batches of 2 or one at a time, act alike."""
    spec = reg.environment("rware-tiny-2ag")
    plugin = reg.algorithm(algo_name)
    torch.manual_seed(0)
    algo = plugin.cls(build_config(plugin.config_cls, overrides), spec.info,
                      torch.device("cpu"), 0)
    algo.setup(OfflineDataset.load(tiny_expert, spec.info))
    algo.update()
    runs = []
    for parallel in (2, 1):
        policy = RecordingPolicy(algo.policy(greedy=False, seed=3))
        runs.append((evaluate(spec, policy, episodes=5, seed=1, parallel=parallel), policy))
    (together, batched), (alone, single) = runs
    for a, b in zip(batched.episodes, single.episodes, strict=True):
        assert a[:len(b)] == b
    assert [r.ret for r in together] == [r.ret for r in alone]
    assert len({str(e) for e in single.episodes}) == 5  # sampled: every episode differs
