"""Generate a dataset by running a behaviour policy in the real environment.

Determinism: episode k of a dataset with seed s resets the env with a seed derived from (s, k)
and gives the behaviour policy its own generator seeded from (s, k). Same seed, same arrays,
same sha256, and episodes do not depend on each other.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from marlbench.api import BehaviourPolicy, EnvSpec, MultiAgentEnv
from marlbench.data.schema import DatasetWriter
from marlbench.progress import Reporter
from marlbench.provenance import creation_record

REFERENCE_EPISODES = 10  # episodes per reference policy for normalised scores
REFERENCE_SEED = 2**31 - 1  # fixed so every dataset of an env gets the same references


def episode_seeds(seed: int, episode: int) -> tuple[int, np.random.Generator]:
    """(env reset seed, behaviour rng) of one episode."""
    ss = np.random.SeedSequence([seed, episode])
    env_seed = int(ss.generate_state(1, dtype=np.uint32)[0])
    return env_seed, np.random.default_rng(ss.spawn(1)[0])


def run_episode(env: MultiAgentEnv, behaviour: BehaviourPolicy, seed: int, episode: int,
                record: bool = True) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray],
                                              float, bool | None]:
    """One episode: (stacked step arrays, final obs/state/avail, return, won)."""
    env_seed, rng = episode_seeds(seed, episode)
    obs, state, avail = env.reset(seed=env_seed)
    behaviour.reset(env, rng)
    cols: dict[str, list] = {k: [] for k in ("obs", "state", "avail", "actions", "rewards",
                                            "terminated", "truncated")}
    limit = env.info.episode_limit
    ret, won = 0.0, None
    for t in range(limit + 1):
        actions = behaviour.act(env, obs, state, avail)
        if not np.all(np.take_along_axis(avail, actions[:, None], axis=1)):
            raise RuntimeError(f"behaviour policy chose an unavailable action at step {t}")
        out = env.step(actions)
        if record:
            for k, v in (("obs", obs), ("state", state), ("avail", avail),
                         ("actions", actions), ("rewards", out.reward),
                         ("terminated", out.terminated), ("truncated", out.truncated)):
                cols[k].append(v)
        ret += out.reward
        obs, state, avail = out.obs, out.state, out.avail
        if out.terminated or out.truncated:
            won = out.info.get("won")
            break
    else:
        raise RuntimeError(f"{env.info.name} did not end within its episode limit {limit}")
    steps = {k: np.asarray(v) for k, v in cols.items()} if record else {}
    return steps, {"obs": obs, "state": state, "avail": avail}, ret, won


def measure_return(spec: EnvSpec, behaviour: BehaviourPolicy, episodes: int = REFERENCE_EPISODES,
                   seed: int = REFERENCE_SEED) -> float:
    env = spec.factory()
    try:
        return float(np.mean([run_episode(env, behaviour, seed, k, record=False)[2]
                              for k in range(episodes)]))
    finally:
        env.close()


def collect(spec: EnvSpec, behaviour: BehaviourPolicy, *, quality: str, episodes: int,
            seed: int, path: Path, reporter: Reporter | None = None,
            references: dict[str, float] | None = None,
            behaviour_name: str = "") -> dict[str, Any]:
    """Collect `episodes` episodes into `path` (written atomically); returns the card."""
    reporter = reporter or Reporter()
    env = spec.factory()
    writer = DatasetWriter(path, spec.info, state_is_concat_obs=spec.state_is_concat_obs,
                           has_win_flag=spec.has_win_flag)
    t0 = time.perf_counter()
    try:
        with reporter.task(f"collect {spec.name}/{quality}", total=episodes) as task:
            for k in range(episodes):
                steps, final, ret, won = run_episode(env, behaviour, seed, k)
                writer.add_episode(steps, final, won)
                task.advance()
                task.note(f"return {ret:.1f}")
        card = writer.commit({
            "family": spec.family, "env_version": spec.version, "quality": quality,
            "behaviour": behaviour_name or type(behaviour).__name__, "seed": seed,
            "reference_returns": references or {},
            **creation_record(t0),
        })
    except BaseException:
        writer.abort()
        raise
    finally:
        env.close()
    return card
