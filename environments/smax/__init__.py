"""SMAX environment plugin: tasks ``smax-<map>`` and their datasets.

SMAX (jaxmarl) is a JAX re-implementation of the StarCraft Multi-Agent Challenge that runs on
the CPU without StarCraft II. It is an optional extra (``pip install 'marlbench[smax]'``); the
tasks are listed either way, and using one without the extra says what to install.

Returns are SMAX's own (damage dealt as a fraction of the enemy's total health, plus 1 for a
win: at most 2 per episode); each evaluation episode also records ``return_smac`` = 10 x the
raw return, on SMAC's 0-20 scale. That is a rescaling, not SMAC's reward: SMAC's win bonus and
kill rewards weigh differently, so compare return_smac with SMAC numbers only loosely.

SMAX has no colossus and no terrain: ``smax-2c_vs_64zg`` and ``smax-corridor`` fail with that
reason; ``smax-corridor-like`` (6 zealots vs 24 zerglings on the open map) is an approximation
and labelled so everywhere. The real maps run through the ``smac-<map>`` adapter.
"""

from __future__ import annotations

import functools
import importlib.metadata as md

from marlbench.api import DatasetRecipe, EnvInfo, EnvSpec, hookimpl
from marlbench.errors import MarlbenchError

from .behaviour import HeuristicBehaviour, RandomBehaviour, snapshot_behaviour, snapshot_path
from .maps import MAPS, SMAC_SCALE, UNSUPPORTED, SmaxMap
from .sim import SmaxEnv, SmaxVectorEnv

FAMILY = "smax"
TRAINED_QUALITIES = ("good", "medium", "poor")  # MAPPO snapshots at decreasing win rates
DATASET_EPISODES = 1000  # default dataset size (MADT's SMAC datasets hold thousands)


def _version() -> str:
    try:
        return f"jaxmarl {md.version('jaxmarl')} SMAX"
    except md.PackageNotFoundError:
        return "jaxmarl (not installed) SMAX"


def _spec(m: SmaxMap) -> EnvSpec:
    info = m.info()
    label = f"SMAX {m.name}: {m.n_allies} vs {m.n_enemies}"
    if m.note:
        label += f" ({m.note})"
    has_snapshots = snapshot_path(m.name, "good").exists()
    return EnvSpec(
        name=m.task, family=FAMILY, info=info,
        factory=functools.partial(SmaxEnv, m, info),
        vector_factory=functools.partial(SmaxVectorEnv, m, info),
        description=label,
        version=_version() + (" APPROXIMATION (not a SMAC map)" if m.approximation else ""),
        has_win_flag=True,
        default_dataset="good" if has_snapshots else "heuristic",
        return_scales={"return_smac": SMAC_SCALE},
    )


def _refuse(name: str, reason: str) -> None:
    raise MarlbenchError(f"smax-{name} is not available: {reason}. The real map runs with "
                         f"StarCraft II as smac-{name}")


def _unsupported_spec(name: str, reason: str) -> EnvSpec:
    # Shapes are unknown (the task cannot be built); the factory raises before they matter.
    info = EnvInfo(name=f"smax-{name}", n_agents=0, obs_dim=0, state_dim=0, n_actions=0,
                   episode_limit=0)
    return EnvSpec(name=info.name, family=FAMILY, info=info,
                   factory=functools.partial(_refuse, name, reason),
                   description=f"NOT AVAILABLE in SMAX: {reason}", version=_version())


@hookimpl
def marlbench_environments() -> list[EnvSpec]:
    return [*(_spec(m) for m in MAPS.values()),
            *(_unsupported_spec(n, r) for n, r in UNSUPPORTED.items())]


def _map_of(spec: EnvSpec) -> str:
    return spec.name.removeprefix("smax-")


_QUALITY_TEXT = {  # how bench/smax_behaviours.py chose them (behaviours/<map>/training.json)
    "good": "MAPPO snapshot: the best of its training run by evaluated win rate (by return if "
            "the run never won)",
    "medium": "MAPPO snapshot: earlier, at about half of the good one's win rate (or halfway "
              "up its return range)",
    "poor": "MAPPO snapshot: earlier, at about a fifth of the good one's win rate (or a fifth "
            "up its return range)",
}


@hookimpl
def marlbench_dataset_recipes() -> list[DatasetRecipe]:
    trained = [DatasetRecipe(family=FAMILY, quality=q, default_episodes=DATASET_EPISODES,
                             make_behaviour=lambda spec, q=q: snapshot_behaviour(
                                 _map_of(spec), q, spec),
                             description=_QUALITY_TEXT[q])
               for q in TRAINED_QUALITIES]
    return [*trained,
            DatasetRecipe(family=FAMILY, quality="heuristic", default_episodes=DATASET_EPISODES,
                          make_behaviour=lambda spec: HeuristicBehaviour(_map_of(spec)),
                          description="jaxmarl's scripted SMAX policy (closest enemy in range)"),
            DatasetRecipe(family=FAMILY, quality="random", default_episodes=DATASET_EPISODES,
                          make_behaviour=lambda spec: RandomBehaviour(),
                          description="uniform over available actions")]
