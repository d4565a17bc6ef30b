"""Behaviour policies that generate SMAX datasets.

* `random`: uniform over each agent's available actions (the low reference return).
* `heuristic`: jaxmarl's scripted SMAX policy for the allies (attack the closest enemy in range,
  otherwise walk towards the enemy); it wins 0% on 5m_vs_6m and 6h_vs_8z.
* `good` / `medium` / `poor`: trained MAPPO actors at decreasing win rates (the MADT recipe),
  stored as small policy files under ``behaviours/<map>/<quality>.safetensors``.

Policy file format (``marlbench-mlp-policy-v1``): the state dict of a shared MLP actor whose
input is [obs_i, onehot(i)]: ``in_norm`` (LayerNorm) -> for each k, ``hidden.k`` (Linear),
ReLU, ``hidden_norm.k`` (LayerNorm) -> ``out`` (Linear) = action logits; the metadata holds
the task and how the snapshot was made. Actions are computed in float64 NumPy and sampled with
the collection's generator, so a dataset depends only on the file, the env and the seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from marlbench.api import BehaviourPolicy, EnvSpec, MultiAgentEnv
from marlbench.errors import DatasetError

from .maps import STOP

POLICY_FORMAT = "marlbench-mlp-policy-v1"
LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, which the actors were trained with
BEHAVIOURS = Path(__file__).parent / "behaviours"


def sample_available(probs: np.ndarray, avail: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One action per row from probabilities restricted to the available actions."""
    c = np.cumsum(np.where(avail, probs, 0.0), -1)
    c = c / c[:, -1:]  # exactly 1 from the last available action on
    return (c < rng.random(len(c))[:, None]).sum(-1)


class RandomBehaviour(BehaviourPolicy):
    def reset(self, env: MultiAgentEnv, rng: np.random.Generator) -> None:
        self.rng = rng

    def act(self, env, obs, state, avail):
        return sample_available(np.ones(avail.shape), avail, self.rng)


class HeuristicBehaviour(BehaviourPolicy):
    """jaxmarl's `create_heuristic_policy` for team 0 (the allies), one jitted call per step.
    The rare choice it makes that the env does not allow (e.g. a dead agent's move) becomes
    the always-available stop."""

    def __init__(self, map_name: str):
        self.map_name = map_name
        self._fns = _heuristic(map_name)

    def reset(self, env: MultiAgentEnv, rng: np.random.Generator) -> None:
        self._key, self._pstate = self._fns["init"](np.uint32(rng.integers(2**32)))

    def act(self, env, obs, state, avail):
        self._key, actions, self._pstate = self._fns["act"](self._key, self._pstate, obs)
        actions = np.asarray(actions)
        ok = avail[np.arange(len(actions)), actions]
        return np.where(ok, actions, STOP).astype(np.int64)


_HEURISTICS: dict[str, dict[str, Any]] = {}


def _heuristic(map_name: str) -> dict[str, Any]:
    if map_name not in _HEURISTICS:
        from jaxmarl.environments.smax.heuristic_enemy import (
            create_heuristic_policy,
            get_heuristic_policy_initial_state,
        )

        from .sim import _jaxmarl, compiled

        jax, _ = _jaxmarl()
        env = compiled(map_name).env
        n = env.num_allies
        policy = create_heuristic_policy(env, 0, shoot=True, attack_mode="closest")

        def init(seed):
            pstate = jax.tree.map(lambda *xs: jax.numpy.stack(xs),
                                  *[get_heuristic_policy_initial_state()] * n)
            return jax.random.PRNGKey(seed), pstate

        def act(key, pstate, obs):
            key, k = jax.random.split(key)
            actions, pstate = jax.vmap(policy)(jax.random.split(k, n), pstate, obs)
            return key, actions, pstate

        _HEURISTICS[map_name] = {"init": jax.jit(init), "act": jax.jit(act)}
    return _HEURISTICS[map_name]


# ---------------------------------------------------------------------------------------------
# Trained snapshots
# ---------------------------------------------------------------------------------------------


class MLPPolicy:
    """NumPy (float64) forward pass of a `marlbench-mlp-policy-v1` actor."""

    def __init__(self, tensors: dict[str, np.ndarray], meta: dict[str, Any]):
        t = {k: v.astype(np.float64) for k, v in tensors.items()}
        self.meta = meta
        self.in_norm = (t["in_norm.weight"], t["in_norm.bias"])
        n_hidden = sum(1 for k in t if k.startswith("hidden.") and k.endswith(".weight"))
        self.hidden = [(t[f"hidden.{k}.weight"], t[f"hidden.{k}.bias"],
                        t[f"hidden_norm.{k}.weight"], t[f"hidden_norm.{k}.bias"])
                       for k in range(n_hidden)]
        self.out = (t["out.weight"], t["out.bias"])

    @staticmethod
    def _norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + LAYER_NORM_EPS) * w + b

    def logits(self, obs: np.ndarray) -> np.ndarray:
        """obs [..., n, obs_dim] -> logits [..., n, n_actions]."""
        n = obs.shape[-2]
        ids = np.broadcast_to(np.eye(n), (*obs.shape[:-2], n, n))
        x = self._norm(np.concatenate([obs.astype(np.float64), ids], -1), *self.in_norm)
        for w, b, nw, nb in self.hidden:
            x = self._norm(np.maximum(x @ w.T + b, 0.0), nw, nb)
        return x @ self.out[0].T + self.out[1]

    def probs(self, obs: np.ndarray, avail: np.ndarray) -> np.ndarray:
        z = np.where(avail, self.logits(obs), -np.inf)
        z = np.exp(z - z.max(-1, keepdims=True))
        return z / z.sum(-1, keepdims=True)


def save_policy(path: Path | str, tensors: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    from safetensors.numpy import save_file

    from marlbench.fsutil import atomic_path

    with atomic_path(path) as tmp:
        save_file({k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()}, str(tmp),
                  metadata={"format": POLICY_FORMAT, "meta": json.dumps(meta, sort_keys=True)})


def load_policy(path: Path | str) -> MLPPolicy:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        header = f.metadata() or {}
        if header.get("format") != POLICY_FORMAT:
            raise DatasetError(f"{path} is not a {POLICY_FORMAT} policy file")
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - not a mapping
    return MLPPolicy(tensors, json.loads(header.get("meta", "{}")))


def snapshot_path(map_name: str, quality: str) -> Path:
    return BEHAVIOURS / map_name / f"{quality}.safetensors"


class SnapshotBehaviour(BehaviourPolicy):
    """A trained actor sampling from its masked action distribution."""

    def __init__(self, policy: MLPPolicy):
        self.policy = policy

    def reset(self, env: MultiAgentEnv, rng: np.random.Generator) -> None:
        self.rng = rng

    def act(self, env, obs, state, avail):
        return sample_available(self.policy.probs(obs, avail), avail, self.rng)


def snapshot_behaviour(map_name: str, quality: str, spec: EnvSpec) -> SnapshotBehaviour:
    path = snapshot_path(map_name, quality)
    if not path.exists():
        have = sorted(p.name for p in BEHAVIOURS.iterdir() if p.is_dir()) if BEHAVIOURS.exists() \
            else []
        raise DatasetError(
            f"no {quality!r} behaviour policy for {spec.name} (trained snapshots exist for "
            f"{', '.join(have) or 'no map'}); train them with `python bench/smax_behaviours.py "
            f"--map {map_name}`, or use the 'heuristic' or 'random' dataset")
    policy = load_policy(path)
    if policy.meta.get("env") != spec.name:
        raise DatasetError(f"{path} was trained on {policy.meta.get('env')!r}, not {spec.name}")
    return SnapshotBehaviour(policy)
