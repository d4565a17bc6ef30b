"""Hook specifications: what a marlbench plugin may implement.

A plugin is a module (or object) with functions decorated by `marlbench.api.hookimpl` whose
names match the specs below, exposed through an entry point in the group ``marlbench``.
Built-in algorithms and environments use exactly this mechanism.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pluggy

from marlbench.api import AlgorithmSpec, DatasetRecipe, EnvSpec, LoggerSpec, RunContext

hookspec = pluggy.HookspecMarker("marlbench")


@hookspec
def marlbench_algorithms() -> Sequence[AlgorithmSpec]:
    """Algorithms this plugin offers."""


@hookspec
def marlbench_environments() -> Sequence[EnvSpec]:
    """Environment tasks this plugin offers."""


@hookspec
def marlbench_dataset_recipes() -> Sequence[DatasetRecipe]:
    """Dataset recipes (behaviour policy per quality) for an environment family."""


@hookspec
def marlbench_loggers() -> Sequence[LoggerSpec]:
    """Experiment trackers this plugin offers (selected with ``--log``)."""


@hookspec
def marlbench_run_started(run: RunContext) -> None:
    """A run is about to train."""


@hookspec
def marlbench_train_metrics(run: RunContext, step: int, metrics: Mapping[str, float]) -> None:
    """Training metrics logged at `step` (every `log_every` updates)."""


@hookspec
def marlbench_eval_episode(run: RunContext, episode: Mapping[str, Any]) -> None:
    """One evaluation episode finished: return, length and env extras such as 'won'."""


@hookspec
def marlbench_run_finished(run: RunContext, summary: Mapping[str, Any]) -> None:
    """A run completed and its results are on disk."""
