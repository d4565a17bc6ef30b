"""SMAX (jaxmarl, JAX on the CPU) behind the marlbench env interfaces.

The allies are the agents; the enemies play jaxmarl's built-in heuristic (`HeuristicEnemySMAX`,
as in SMAC where the enemy is the game AI). Every env of one map shares one set of jitted
functions (compiled once per process): `SmaxEnv` steps one env per call (evaluation, dataset
collection), `SmaxVectorEnv` steps B envs in one vmapped call and restarts finished episodes
inside it (online training).

Per step: obs [n, obs_dim] and the world state [state_dim] as SMAX defines them, available
actions, the team reward (identical for all allies; raw SMAX scale, maximum 2 per episode),
terminated (a team is wiped out), truncated (the 100-step limit) and `won` (every enemy dead
and at least one ally alive).
"""

from __future__ import annotations

import contextlib
import functools
import io
import sys
from typing import Any

import numpy as np

from marlbench.api import EnvInfo, MultiAgentEnv, Step, VectorEnv, VectorStep
from marlbench.errors import MarlbenchError

from .maps import MAPS, SmaxMap

INSTALL_HINT = "pip install 'marlbench[smax]'"


class SmaxUnavailable(MarlbenchError):
    """jaxmarl (and so JAX) is not installed."""


class SimulatorError(MarlbenchError):
    """The simulator returned something unusable (e.g. a NaN state)."""


@contextlib.contextmanager
def _quiet_import():
    """jaxmarl prints about optional submodules on import, and one of its modules resets
    sys.stdout/stderr to the process's own streams: drop the prints, restore the streams."""
    saved = sys.stdout, sys.stderr, sys.__stdout__
    sys.stdout = sys.__stdout__ = io.StringIO()
    try:
        yield
    finally:
        sys.stdout, sys.stderr, sys.__stdout__ = saved


@functools.lru_cache(maxsize=1)
def _jaxmarl() -> tuple[Any, Any]:
    try:
        with _quiet_import():
            import jax
            import jaxmarl  # noqa: F401
            from jaxmarl.environments.smax import HeuristicEnemySMAX, Scenario
    except ImportError as exc:
        raise SmaxUnavailable(f"SMAX tasks need jaxmarl, which is not installed ({exc.name} is "
                              f"missing): {INSTALL_HINT}") from None
    return jax, (HeuristicEnemySMAX, Scenario)


def make_jaxmarl_env(smax_map: SmaxMap):
    """The jaxmarl env of a map (allies = agents, enemies = jaxmarl's heuristic)."""
    jax, (HeuristicEnemySMAX, Scenario) = _jaxmarl()
    import jax.numpy as jnp

    randomised = smax_map.randomised
    units = smax_map.units() or (0,) * (smax_map.n_allies + smax_map.n_enemies)
    scenario = Scenario(jnp.asarray(units, dtype=jnp.uint8), smax_map.n_allies,
                        smax_map.n_enemies, randomised, randomised)
    return HeuristicEnemySMAX(scenario=scenario)


class _Compiled:
    """The jitted reset/step of one map, shared by all its envs."""

    def __init__(self, smax_map: SmaxMap):
        jax, _ = _jaxmarl()
        import jax.numpy as jnp

        env = make_jaxmarl_env(smax_map)
        self.env, agents, n_allies = env, env.agents, smax_map.n_allies

        def observe(obs, st):
            avail = env.get_avail_actions(st)
            return (jnp.stack([obs[a] for a in agents]), obs["world_state"],
                    jnp.stack([avail[a] for a in agents]).astype(bool))

        def reset(key):
            obs, st = env.reset(key)
            return (st, *observe(obs, st))

        def seeded_reset(seed):
            key, k = jax.random.split(jax.random.PRNGKey(seed))
            st, *out = reset(k)
            # Concrete dtypes (reset leaves some weakly typed): otherwise the step function
            # compiles twice, once for a reset state and once for a stepped one.
            st = jax.tree.map(lambda x: jnp.asarray(x, x.dtype), st)
            return (key, st, *out)

        def step(key, st, actions):
            obs, st, rew, dones, _ = env.step_env(key, st, {a: actions[i]
                                                          for i, a in enumerate(agents)})
            alive = st.state.unit_alive
            allies_dead, enemies_dead = ~alive[:n_allies].any(), ~alive[n_allies:].any()
            done = dones["__all__"]
            terminated = allies_dead | enemies_dead
            won = enemies_dead & ~allies_dead
            return (st, *observe(obs, st), rew[agents[0]], terminated, done & ~terminated, won)

        def auto_reset_step(key, st, actions):
            key, k_step, k_reset = jax.random.split(key, 3)
            st, obs, state, avail, rew, term, trunc, won = step(k_step, st, actions)
            st0, obs0, state0, avail0 = reset(k_reset)
            end = term | trunc
            pick = lambda a, b: jax.tree.map(lambda x, y: jnp.where(end, x, y), a, b)  # noqa: E731
            return (key, pick(st0, st), pick(obs0, obs), pick(state0, state),
                    pick(avail0, avail), rew, term, trunc, won & end, obs, state)

        def single_step(key, st, actions):
            key, k = jax.random.split(key)
            return (key, *step(k, st, actions))

        self.reset = jax.jit(seeded_reset)
        self.step = jax.jit(single_step)
        self.vreset = jax.jit(jax.vmap(seeded_reset))
        self.vstep = jax.jit(jax.vmap(auto_reset_step))
        self.device_get = jax.device_get


def compiled(map_name: str) -> _Compiled:
    _jaxmarl()  # a clear error when the extra is missing, even for a map compiled earlier
    return _compiled(map_name)


@functools.cache
def _compiled(map_name: str) -> _Compiled:
    return _Compiled(MAPS[map_name])


def _f32(x) -> np.ndarray:
    return np.array(x, np.float32)  # a writable copy (JAX hands out read-only buffers)


def _bool(x) -> np.ndarray:
    return np.array(x, bool)


def _check_finite(name: str, **arrays: np.ndarray) -> None:
    bad = [k for k, v in arrays.items() if not np.isfinite(v).all()]
    if bad:
        raise SimulatorError(f"{name} returned non-finite values in {', '.join(bad)}; "
                             "stopped (nothing was written)")


class SmaxEnv(MultiAgentEnv):
    """One SMAX env; `reset(seed)` makes the episode (positions, enemy heuristic's randomness)
    a pure function of the seed."""

    def __init__(self, smax_map: SmaxMap, info: EnvInfo):
        self.map, self.info = smax_map, info
        self._fns = compiled(smax_map.name)
        self._key = self._state = None

    def reset(self, seed: int | None = None):
        self._key, self._state, *out = self._fns.reset(np.uint32(seed or 0))
        obs, state, avail = self._fns.device_get(out)
        _check_finite(self.info.name, obs=obs, state=state)
        return _f32(obs), _f32(state), _bool(avail)

    def step(self, actions: np.ndarray) -> Step:
        if self._state is None:
            raise RuntimeError("step() before reset()")
        self._key, self._state, *out = self._fns.step(self._key, self._state,
                                                      np.asarray(actions, np.int32))
        obs, state, avail, rew, term, trunc, won = self._fns.device_get(out)
        _check_finite(self.info.name, obs=obs, state=state, reward=rew)
        info = {"won": bool(won)} if term or trunc else {}
        return Step(_f32(obs), _f32(state), _bool(avail), float(rew), bool(term), bool(trunc),
                    info)


class SmaxVectorEnv(VectorEnv):
    """B SMAX envs in one jitted, vmapped call; finished episodes restart inside the call."""

    def __init__(self, smax_map: SmaxMap, info: EnvInfo, n_envs: int):
        self.map, self.info, self.n_envs = smax_map, info, n_envs
        self._fns = compiled(smax_map.name)
        self._keys = self._states = None

    def reset(self, seed: int):
        seeds = np.random.SeedSequence(seed).generate_state(self.n_envs, dtype=np.uint32)
        self._keys, self._states, *out = self._fns.vreset(seeds)
        obs, state, avail = self._fns.device_get(out)
        _check_finite(self.info.name, obs=obs, state=state)
        return _f32(obs), _f32(state), _bool(avail)

    def step(self, actions: np.ndarray) -> VectorStep:
        self._keys, self._states, *out = self._fns.vstep(self._keys, self._states,
                                                         np.asarray(actions, np.int32))
        obs, state, avail, rew, term, trunc, won, final_obs, final_state = \
            self._fns.device_get(out)
        _check_finite(self.info.name, obs=obs, state=state, reward=rew)
        return VectorStep(_f32(obs), _f32(state), _bool(avail), _f32(rew), _bool(term),
                          _bool(trunc), _bool(won), _f32(final_obs), _f32(final_state))
