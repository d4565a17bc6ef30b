"""RWARE environment plugin: tasks ``rware-<size>-<N>ag[-normal|-hard]`` and their datasets.

``rware-tiny-2ag`` etc. map to rware 2's ``-easy`` variants (request queue = 2 x agents),
which is where the paper's RWARE datasets (from AlberDICE) were collected. The ``-normal``
(queue = agents) and ``-hard`` (queue = agents / 2) variants are reachable by name too.
The paper's six tasks are tiny/small with 2, 4 and 6 agents.
"""

from __future__ import annotations

import functools
import importlib.metadata as md

from marlbench.api import DatasetRecipe, EnvInfo, EnvSpec, hookimpl

from .env import N_ACTIONS, RwareEnv
from .expert import QUALITIES, RwareExpert

SIZES = ("tiny", "small", "medium", "large")
DIFFICULTIES = {"": "-easy", "-normal": "", "-hard": "-hard"}  # marlbench suffix -> rware suffix
PAPER_TASKS = tuple(f"rware-{s}-{n}ag" for s in ("tiny", "small") for n in (2, 4, 6))
MAX_AGENTS = 19  # rware registers 1..19 agents
OBS_DIM = 71  # sensor range 1: 8 self features + 9 cells x 7
EPISODE_LIMIT = 500


def _make(gym_id: str, info: EnvInfo) -> RwareEnv:
    return RwareEnv(gym_id, info)


def _spec(size: str, n: int, suffix: str) -> EnvSpec:
    name = f"rware-{size}-{n}ag{suffix}"
    gym_id = f"rware-{size}-{n}ag{DIFFICULTIES[suffix]}-v2"
    info = EnvInfo(name=name, n_agents=n, obs_dim=OBS_DIM, state_dim=n * OBS_DIM,
                   n_actions=N_ACTIONS, episode_limit=EPISODE_LIMIT)
    paper = " (paper task)" if name in PAPER_TASKS else ""
    return EnvSpec(
        name=name, family="rware", info=info,
        factory=functools.partial(_make, gym_id, info),
        description=f"RWARE {size}, {n} agents, gym id {gym_id}{paper}",
        version=f"rware {md.version('rware')} {gym_id}",
        state_is_concat_obs=True,
        default_dataset="expert",
    )


@hookimpl
def marlbench_environments() -> list[EnvSpec]:
    return [_spec(size, n, suffix) for suffix in DIFFICULTIES for size in SIZES
            for n in range(1, MAX_AGENTS + 1)]


_QUALITY_TEXT = {
    "expert": "scripted planner (distance fields, shelf claims, yielding)",
    "medium": "planner, each agent's action replaced by a uniform random one w.p. {eps}",
    "poor": "planner, each agent's action replaced by a uniform random one w.p. {eps}",
    "random": "uniform random actions",
}


@hookimpl
def marlbench_dataset_recipes() -> list[DatasetRecipe]:
    return [
        DatasetRecipe(family="rware", quality=q,
                      make_behaviour=functools.partial(_behaviour, eps),
                      description=_QUALITY_TEXT[q].format(eps=eps))
        for q, eps in QUALITIES.items()
    ]


def _behaviour(epsilon: float, spec: EnvSpec) -> RwareExpert:
    return RwareExpert(epsilon=epsilon)
