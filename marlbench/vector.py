"""Batches of environments for online training.

An env plugin may offer a native batched simulator (`EnvSpec.vector_factory`, e.g. SMAX steps
many envs in one jitted call); every other env is batched here by stepping `factory()` envs one
after another. Either way the caller sees one `VectorEnv` that restarts episodes as they end.
"""

from __future__ import annotations

import numpy as np

from marlbench.api import EnvSpec, MultiAgentEnv, VectorEnv, VectorStep

_RESET_STREAM = 11  # separates training-reset seeds from evaluation and collection seeds


def make_vector_env(spec: EnvSpec, n_envs: int) -> VectorEnv:
    if n_envs <= 0:
        raise ValueError(f"n_envs must be positive, got {n_envs}")
    if spec.vector_factory is not None:
        return spec.vector_factory(n_envs)
    return SerialVectorEnv(spec, n_envs)


class SerialVectorEnv(VectorEnv):
    """`n_envs` single envs stepped in a Python loop; episode k of env j resets from a seed
    derived from (seed, j, k), so a run is reproducible."""

    def __init__(self, spec: EnvSpec, n_envs: int):
        self.info, self.n_envs = spec.info, n_envs
        self.envs: list[MultiAgentEnv] = [spec.factory() for _ in range(n_envs)]
        self._seed, self._episodes = 0, np.zeros(n_envs, dtype=np.int64)

    def _reset_one(self, j: int):
        ss = np.random.SeedSequence(self._seed, spawn_key=(_RESET_STREAM, j,
                                                           int(self._episodes[j])))
        self._episodes[j] += 1
        return self.envs[j].reset(seed=int(ss.generate_state(1, dtype=np.uint32)[0]))

    def reset(self, seed: int):
        self._seed, self._episodes[:] = seed, 0
        first = [self._reset_one(j) for j in range(self.n_envs)]
        return tuple(np.stack([f[i] for f in first]) for i in range(3))

    def step(self, actions: np.ndarray) -> VectorStep:
        B, info = self.n_envs, self.info
        out = VectorStep(
            obs=np.zeros((B, info.n_agents, info.obs_dim), np.float32),
            state=np.zeros((B, info.state_dim), np.float32),
            avail=np.zeros((B, info.n_agents, info.n_actions), bool),
            reward=np.zeros(B, np.float32), terminated=np.zeros(B, bool),
            truncated=np.zeros(B, bool), won=np.zeros(B, bool),
            final_obs=np.zeros((B, info.n_agents, info.obs_dim), np.float32),
            final_state=np.zeros((B, info.state_dim), np.float32),
            final_avail=np.zeros((B, info.n_agents, info.n_actions), bool))
        for j, env in enumerate(self.envs):
            s = env.step(actions[j])
            out.reward[j], out.terminated[j], out.truncated[j] = s.reward, s.terminated, s.truncated
            out.final_obs[j], out.final_state[j], out.final_avail[j] = s.obs, s.state, s.avail
            if s.terminated or s.truncated:
                out.won[j] = bool(s.info.get("won", False))
                out.obs[j], out.state[j], out.avail[j] = self._reset_one(j)
            else:
                out.obs[j], out.state[j], out.avail[j] = s.obs, s.state, s.avail
        return out

    def close(self) -> None:
        for env in self.envs:
            env.close()
