"""Finding the dataset a command asks for, and generating it from its recipe when missing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from marlbench.api import EnvSpec
from marlbench.config import check_seed
from marlbench.data import collect as _collect
from marlbench.data import store
from marlbench.data.schema import check_compatible, read_card
from marlbench.errors import DatasetError, UnknownNameError
from marlbench.fsutil import check_writable_dir, io_step, path_lock, remove_dead_tmp
from marlbench.plugins import Registry
from marlbench.progress import Reporter

REFERENCE_QUALITIES = ("random", "expert")  # low / high anchors for normalised scores


def reference_returns(reg: Registry, spec: EnvSpec, reporter: Reporter) -> dict[str, float]:
    """Mean return of the family's reference behaviours (fixed seed, same for every dataset)."""
    recipes = reg.recipes_for(spec)
    out = {}
    for quality in REFERENCE_QUALITIES:
        if quality in recipes:
            reporter.info(f"measuring the {quality!r} reference return of {spec.name}")
            out[quality] = _collect.measure_return(spec, recipes[quality].make_behaviour(spec))
    return out


def collect_dataset(reg: Registry, spec: EnvSpec, quality: str, *, episodes: int | None = None,
                    seed: int = store.DEFAULT_SEED, root: Path | str | None = None,
                    out: Path | None = None, overwrite: bool = False,
                    reporter: Reporter | None = None,
                    reuse: bool = False) -> tuple[Path, dict[str, Any]]:
    """Generate a dataset from the (family, quality) recipe; returns (path, card).

    `reuse`: if the file exists (e.g. another process just collected it), return it as is.
    """
    reporter = reporter or Reporter()
    recipe = reg.recipe(spec, quality)
    episodes = episodes if episodes is not None else recipe.default_episodes
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes <= 0:
        raise DatasetError(f"--episodes must be a positive integer (got {episodes!r})")
    check_seed(seed)
    name = store.dataset_name(quality, episodes, seed, recipe.default_episodes)
    path = Path(out) if out else store.dataset_path(spec.name, name, root)
    if path.is_dir():
        raise DatasetError(f"cannot write the dataset {path}: it is a folder")
    if path.exists() and not overwrite and not reuse:
        raise DatasetError(f"{path} already exists (use --overwrite to replace it)")
    check_writable_dir(path.parent, "datasets")
    # One collection per file at a time: a second process needing the same dataset waits, then
    # finds it written (`reuse`) instead of collecting it again.
    with path_lock(path, wait=True):
        if path.exists() and not overwrite:
            if reuse:
                return path, read_card(path)
            raise DatasetError(f"{path} already exists (use --overwrite to replace it)")
        remove_dead_tmp(path)
        reporter.info(f"collecting {spec.name}/{quality} ({episodes} episodes, seed {seed}) "
                      f"into {path}")
        refs = reference_returns(reg, spec, reporter)
        with io_step("write the dataset", path):
            card = _collect.collect(spec, recipe.make_behaviour(spec), quality=quality,
                                    episodes=episodes, seed=seed, path=path, reporter=reporter,
                                    references=refs,
                                    behaviour_name=recipe.description or quality)
    return path, card


def resolve_dataset(reg: Registry, spec: EnvSpec, dataset: str, *,
                    episodes: int | None = None, root: Path | str | None = None,
                    reporter: Reporter | None = None,
                    collect: bool = True) -> tuple[str, Path]:
    """(dataset name, path) for a --dataset argument, collecting it first if it is missing.

    `dataset` is a file path, or a name under the datasets root (see `marlbench.data.store`).
    `collect=False`: only check that a missing dataset has a recipe; the path may not exist.
    """
    reporter = reporter or Reporter()
    if store.is_path(dataset):
        path = Path(dataset)
        if not path.exists():
            raise DatasetError(f"dataset file {path} does not exist")
        if path.is_dir():
            raise DatasetError(f"--dataset {path} is a folder, not a dataset file")
        check_compatible(read_card(path), spec.info, path)
        return path.stem, path
    recipes = reg.recipes_for(spec)
    default_eps = next(iter(recipes.values())).default_episodes if recipes else 0
    parsed = store.parse_name(dataset, default_eps)
    if parsed and episodes is not None:
        parsed = store.Recipe(parsed.quality, episodes, parsed.seed)
    name = (store.dataset_name(parsed.quality, parsed.episodes, parsed.seed,
                               recipes[parsed.quality].default_episodes)
            if parsed and parsed.quality in recipes else dataset)
    path = store.dataset_path(spec.name, name, root)
    if path.exists():
        check_compatible(read_card(path), spec.info, path)
        return name, path
    if not parsed or parsed.quality not in recipes:
        existing = [p.stem for p in path.parent.glob("*.h5")]
        raise UnknownNameError(f"dataset for {spec.name} (no file {path}, no recipe)", dataset,
                               [*recipes, *existing])
    if not collect:
        return name, path
    collect_dataset(reg, spec, parsed.quality, episodes=parsed.episodes, seed=parsed.seed,
                    out=path, reporter=reporter, reuse=True)
    return name, path
