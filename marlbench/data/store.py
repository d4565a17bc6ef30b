"""Where datasets live and what they are called.

A dataset is addressed by env and name: ``datasets/<env>/<name>.h5``. The name of a generated
dataset encodes its recipe: ``<quality>`` for the default size and seed, otherwise
``<quality>-<E>ep`` and/or ``-seed<S>`` (e.g. ``expert``, ``expert-1000ep``,
``medium-seed3``). Any other name (an imported dataset) is used as given.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = Path("datasets")
DEFAULT_SEED = 0
_NAME = re.compile(
    r"^(?P<quality>[A-Za-z][\w.]*?)(?:-(?P<episodes>\d+)ep)?(?:-seed(?P<seed>\d+))?$")


def root_dir(root: Path | str | None = None) -> Path:
    """Explicit root, else $MARLBENCH_DATASETS, else ./datasets."""
    return Path(root or os.environ.get("MARLBENCH_DATASETS") or DEFAULT_ROOT)


@dataclass(frozen=True)
class Recipe:
    """The (quality, episodes, seed) a generated dataset name stands for."""

    quality: str
    episodes: int
    seed: int


def dataset_name(quality: str, episodes: int, seed: int, default_episodes: int) -> str:
    name = quality
    if episodes != default_episodes:
        name += f"-{episodes}ep"
    if seed != DEFAULT_SEED:
        name += f"-seed{seed}"
    return name


def parse_name(name: str, default_episodes: int) -> Recipe | None:
    m = _NAME.match(name)
    if not m:
        return None
    return Recipe(m["quality"], int(m["episodes"] or default_episodes),
                  int(m["seed"] or DEFAULT_SEED))


def dataset_path(env: str, name: str, root: Path | str | None = None) -> Path:
    return root_dir(root) / env / f"{name}.h5"


def is_path(arg: str) -> bool:
    """A --dataset argument that names a file rather than a dataset."""
    return arg.endswith((".h5", ".hdf5")) or os.sep in arg


def list_files(root: Path | str | None = None) -> list[Path]:
    return sorted(root_dir(root).glob("*/*.h5"))
