"""RWARE (multi-robot warehouse, rware 2.x) behind the marlbench env interface."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import rware  # noqa: F401 - registers the rware-* gymnasium ids

from marlbench.api import EnvInfo, MultiAgentEnv, Step

N_ACTIONS = 5  # NOOP, FORWARD, LEFT, RIGHT, TOGGLE_LOAD


class RwareEnv(MultiAgentEnv):
    """Team reward = sum of agents' deliveries in the step (what the papers report).

    RWARE ends every episode at `max_steps` (500) with ``terminated=True``; that is a time limit,
    so it is reported here as ``truncated=True, terminated=False`` (value methods must bootstrap).
    RWARE has no global state: the state is the concatenation of the agents' observations.
    All actions are always available.
    """

    def __init__(self, gym_id: str, info: EnvInfo):
        self.gym_id, self.info = gym_id, info
        # The unwrapped env: gymnasium's order/passive checkers only cost time here.
        self.warehouse = gym.make(gym_id, disable_env_checker=True).unwrapped
        self._avail = np.ones((info.n_agents, N_ACTIONS), dtype=bool)
        self._t = 0

    def _observe(self, obs: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        o = np.stack(obs).astype(np.float32, copy=False)
        return o, o.reshape(-1), self._avail.copy()

    def reset(self, seed: int | None = None):
        obs, _ = self.warehouse.reset(seed=seed)
        self._t = 0
        return self._observe(obs)

    def step(self, actions: np.ndarray) -> Step:
        obs, rewards, done, _, _ = self.warehouse.step([int(a) for a in actions])
        self._t += 1
        time_limit = self._t >= self.warehouse.max_steps
        o, s, avail = self._observe(obs)
        return Step(o, s, avail, float(sum(rewards)), terminated=bool(done) and not time_limit,
                    truncated=time_limit)

    def close(self) -> None:
        self.warehouse.close()
