"""The real StarCraft Multi-Agent Challenge (oxwhirl SMAC + StarCraft II) behind the marlbench
env interface, and the checks that say precisely why it is not available when it is not.

Two things get in the way: the PyPI package called `smac` is SMAC3, a hyperparameter
optimiser that only shares the name, and SMAC needs the StarCraft II game (SC2PATH).
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
from pathlib import Path

import numpy as np

from marlbench.api import EnvInfo, MultiAgentEnv, Step
from marlbench.errors import MarlbenchError

INSTALL = ("pip install git+https://github.com/oxwhirl/smac.git (not `pip install smac`, "
           "which is SMAC3)")


class SmacUnavailable(MarlbenchError):
    """oxwhirl SMAC or StarCraft II is missing, or `smac` is the unrelated SMAC3."""


def smac_problem() -> str | None:
    """Why the real SMAC cannot run here, or None when it can."""
    try:
        dist = md.distribution("smac")
    except md.PackageNotFoundError:
        dist = None
    if dist is not None and _is_smac3(dist):
        return (f"the installed `smac` {dist.version} is SMAC3 (hyperparameter optimisation), "
                f"not the StarCraft Multi-Agent Challenge; uninstall it and {INSTALL}")
    if importlib.util.find_spec("smac") is None:
        return f"oxwhirl SMAC is not installed: {INSTALL}, plus StarCraft II"
    try:
        found = importlib.util.find_spec("smac.env") is not None
    except ImportError:
        found = False
    if not found:
        return (f"the importable `smac` package has no `smac.env` (it is not oxwhirl SMAC); "
                f"{INSTALL}")
    sc2 = os.environ.get("SC2PATH")
    if not sc2:
        return ("StarCraft II is not configured: set SC2PATH to the game's install folder (see "
                "the oxwhirl SMAC README for the Linux package and the SMAC maps)")
    if not Path(sc2).is_dir():
        return f"SC2PATH={sc2} is not a folder; point it at the StarCraft II install"
    return None


def _is_smac3(dist: md.Distribution) -> bool:
    summary = (dist.metadata.get("Summary") or "").lower()
    return "algorithm configuration" in summary or "smac3" in summary


def require_smac() -> None:
    problem = smac_problem()
    if problem:
        raise SmacUnavailable(f"smac-* tasks need the real SMAC: {problem}")


class SmacEnv(MultiAgentEnv):
    """One StarCraft II game. SC2 is seeded when the game starts (at the first reset); later
    resets do not reseed it, so episodes are as reproducible as SC2 makes them."""

    def __init__(self, map_name: str, info: EnvInfo):
        require_smac()
        from smac.env import StarCraft2Env

        self.map_name, self.info = map_name, info
        self._make = StarCraft2Env
        self._env = None

    def reset(self, seed: int | None = None):
        if self._env is None:
            self._env = self._make(map_name=self.map_name, seed=seed)
            got = self._env.get_env_info()
            if (got["obs_shape"], got["state_shape"], got["n_actions"]) != (
                    self.info.obs_dim, self.info.state_dim, self.info.n_actions):
                raise SmacUnavailable(f"SMAC's {self.map_name} has shapes {got}, not "
                                      f"{self.info}: another SMAC version")
        self._env.reset()
        return self._observe()

    def _observe(self):
        e = self._env
        return (np.asarray(e.get_obs(), np.float32), np.asarray(e.get_state(), np.float32),
                np.asarray(e.get_avail_actions(), bool))

    def step(self, actions: np.ndarray) -> Step:
        reward, done, info = self._env.step([int(a) for a in actions])
        obs, state, avail = self._observe()
        time_limit = bool(info.get("episode_limit", False))
        extra = {"won": bool(info.get("battle_won", False))} if done else {}
        return Step(obs, state, avail, float(reward), terminated=bool(done) and not time_limit,
                    truncated=time_limit, info=extra)

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
