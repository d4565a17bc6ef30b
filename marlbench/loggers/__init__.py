"""Experiment trackers (``--log tensorboard,wandb,mlflow,csv``) as plugins of the lifecycle hooks.

Each tracker is an ordinary marlbench plugin, registered through the ``marlbench`` entry-point
group like the built-in algorithms: it offers a `LoggerSpec` (``marlbench_loggers``) and
implements ``marlbench_run_started / train_metrics / eval_episode / run_finished``. Nothing in
the runner knows about trackers; a third-party tracker is written the same way.

Selection travels in the environment variable ``MARLBENCH_LOG`` (``--log`` sets it after
checking the names), so the worker processes of a sweep, local or on Ray, see it without any
change to what a cell is. A tracker acts on a run only when its name is selected.

Where the trackers write: ``$MARLBENCH_LOG_DIR`` or ``<results>/logs``, then
``<tracker>/<env>/<dataset>/<algo>/seed-<k>`` (MLflow: one store, ``<logs>/mlruns``). The logs
are outside the cell's results folder on purpose: that folder is published atomically when the
run completes, while a tracker streams during the run and keeps the curve of a run that failed.
A new attempt at a cell (resume, ``--overwrite``) replaces that cell's TensorBoard and CSV logs;
W&B and MLflow record each attempt as its own run (an interrupted one marked failed or killed).
"""

from __future__ import annotations

import abc
import atexit
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from marlbench.api import LoggerSpec, RunContext, hookimpl
from marlbench.errors import MarlbenchError, UnknownNameError
from marlbench.plugins import importable

ENV_VAR = "MARLBENCH_LOG"  # comma-separated names of the selected trackers
DIR_ENV_VAR = "MARLBENCH_LOG_DIR"  # where they write (default: <results>/logs)

# ------------------------------------------------------------------------------------------------
# Selection
# ------------------------------------------------------------------------------------------------


def parse(text: str | None) -> list[str]:
    """'tensorboard, csv' -> ['tensorboard', 'csv'] (order kept, duplicates dropped)."""
    names: list[str] = []
    for name in (n.strip().lower() for n in (text or "").split(",")):
        if name and name not in names:
            names.append(name)
    return names


def selected() -> frozenset[str]:
    """The trackers selected for runs of this process."""
    return frozenset(parse(os.environ.get(ENV_VAR)))


def available(reg) -> dict[str, LoggerSpec]:
    """Every tracker the loaded plugins offer, by name (first registration wins)."""
    specs: dict[str, LoggerSpec] = {}
    for impl in reg.pm.hook.marlbench_loggers.get_hookimpls():
        try:
            offered = list(impl.function() or ())
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not hide the others
            warnings.warn(f"plugin {impl.plugin_name!r} failed in marlbench_loggers: {exc!r}",
                          stacklevel=2)
            continue
        for spec in offered:
            specs.setdefault(spec.name, spec)
    return specs


def check(reg, names: Sequence[str]) -> list[str]:
    """Unknown names (closest suggested) and trackers whose package is missing fail here."""
    specs = available(reg)
    for name in names:
        if name not in specs:
            raise UnknownNameError("logger", name, specs)
        spec = specs[name]
        missing = [m for m in spec.requires if not importable(m)]
        if missing:
            how = (f"pip install 'marlbench[{spec.extra}]'" if spec.extra
                   else f"install {', '.join(missing)}")
            raise MarlbenchError(f"--log {name} needs the {spec.extra or missing[0]!r} extra, "
                                 f"which is not installed ({', '.join(missing)} missing): {how}")
    return list(names)


def enable(reg, text: str | None) -> list[str]:
    """Check ``--log`` and select those trackers for this process and the workers it starts.

    A relative ``$MARLBENCH_LOG_DIR`` is made absolute, so workers started elsewhere (Ray)
    write to the same place.
    """
    names = check(reg, parse(text))
    if names:
        os.environ[ENV_VAR] = ",".join(names)
    else:
        os.environ.pop(ENV_VAR, None)
    if os.environ.get(DIR_ENV_VAR):
        os.environ[DIR_ENV_VAR] = str(Path(os.environ[DIR_ENV_VAR]).absolute())
    return names


# ------------------------------------------------------------------------------------------------
# Where a run's logs go
# ------------------------------------------------------------------------------------------------

_STAGING = re.compile(r"\.(.+)\.staging-\d+")


def run_key(run: RunContext) -> PurePosixPath:
    """``<env>/<dataset>/<algo>/seed-<k>``: the same for a run's staging and final folder."""
    out = Path(run.out_dir)
    m = _STAGING.fullmatch(out.name)
    return PurePosixPath(*out.parent.parts[-3:], m[1] if m else out.name)


def log_root(run: RunContext) -> Path:
    """``$MARLBENCH_LOG_DIR``, else ``<results>/logs`` of the results root the run writes to."""
    if os.environ.get(DIR_ENV_VAR):
        return Path(os.environ[DIR_ENV_VAR])
    return Path(run.out_dir).absolute().parents[3] / "logs"


def log_dir(run: RunContext, tracker: str) -> Path:
    return log_root(run) / tracker / run_key(run)


def run_name(run: RunContext) -> str:
    return f"{run.algo} {run.env}/{run.dataset} seed {run.seed}"


def flat(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as 'a.b' keys (configs hold nested options)."""
    out: dict[str, Any] = {}
    for k, v in mapping.items():
        if isinstance(v, Mapping):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def scalars(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric entries (bools as 0/1), prefixed; None and text are left out."""
    return {f"{prefix}{k}": float(v) for k, v in values.items()
            if isinstance(v, (int, float))}


def summary_scalars(summary: Mapping[str, Any]) -> dict[str, float]:
    """A finished run's headline numbers from its run.json summary."""
    out = scalars(summary.get("eval") or {}, "eval/")
    out.update(scalars({k: v for k, v in (summary.get("train") or {}).items()
                        if k != "final_metrics"}, "train/"))
    if isinstance(summary.get("parameters"), int):
        out["parameters"] = float(summary["parameters"])
    return out


def episode_scalars(episode: Mapping[str, Any]) -> dict[str, float]:
    """An evaluation episode's numbers: return, length, won, scaled returns."""
    return scalars({k: v for k, v in episode.items() if k not in ("episode", "env_seed")},
                   "eval/")


# ------------------------------------------------------------------------------------------------
# Per-process bookkeeping shared by the tracker plugins
# ------------------------------------------------------------------------------------------------


@dataclass
class _Open:
    handle: Any
    key: PurePosixPath


class RunLogger(abc.ABC):
    """One open handle (writer, tracker run) per run of this process.

    The lifecycle has no 'run failed' hook: a run that raised never reaches
    ``run_finished``. Its handle is closed as failed when the next run of the process starts,
    or when the process exits.
    """

    name: str

    def __init__(self) -> None:
        self._open: dict[PurePosixPath, _Open] = {}
        atexit.register(self._close_unfinished)

    # -- what a tracker implements ---------------------------------------------------------------

    @abc.abstractmethod
    def open(self, run: RunContext) -> Any:
        """Start logging `run`; returns the handle the other methods get."""

    @abc.abstractmethod
    def log_metrics(self, handle: Any, step: int, metrics: Mapping[str, float]) -> None:
        """Training metrics (averaged over the logging interval) at update `step`."""

    @abc.abstractmethod
    def log_episode(self, handle: Any, episode: Mapping[str, Any]) -> None:
        """One evaluation episode (its 'episode' entry is its index)."""

    @abc.abstractmethod
    def close(self, handle: Any, summary: Mapping[str, Any] | None) -> None:
        """The run finished with `summary` (run.json), or None: it did not finish."""

    # -- what the hooks call -------------------------------------------------------------------

    def started(self, run: RunContext) -> None:
        if self.name not in selected():
            return
        self._close_unfinished()
        key = run_key(run)
        self._open[key] = _Open(self.open(run), key)

    def metrics(self, run: RunContext, step: int, metrics: Mapping[str, float]) -> None:
        if (o := self._open.get(run_key(run))) is not None:
            self.log_metrics(o.handle, step, metrics)

    def episode(self, run: RunContext, episode: Mapping[str, Any]) -> None:
        if (o := self._open.get(run_key(run))) is not None:
            self.log_episode(o.handle, episode)

    def finished(self, run: RunContext, summary: Mapping[str, Any]) -> None:
        if (o := self._open.pop(run_key(run), None)) is not None:
            self.close(o.handle, summary)

    def _close_unfinished(self) -> None:
        while self._open:
            _, o = self._open.popitem()
            try:
                self.close(o.handle, None)
            except Exception as exc:  # noqa: BLE001 - closing a dead run is best effort
                warnings.warn(f"{self.name}: closing the unfinished run {o.key} failed: "
                              f"{exc!r}", stacklevel=2)


def lifecycle_hooks(logger: RunLogger) -> tuple[Any, Any, Any, Any]:
    """The four lifecycle hook implementations that drive `logger`, for a tracker module to
    bind to its hook names::

        (marlbench_run_started, marlbench_train_metrics, marlbench_eval_episode,
         marlbench_run_finished) = lifecycle_hooks(MyLogger())
    """

    @hookimpl
    def marlbench_run_started(run):
        logger.started(run)

    @hookimpl
    def marlbench_train_metrics(run, step, metrics):
        logger.metrics(run, step, metrics)

    @hookimpl
    def marlbench_eval_episode(run, episode):
        logger.episode(run, episode)

    @hookimpl
    def marlbench_run_finished(run, summary):
        logger.finished(run, summary)

    return (marlbench_run_started, marlbench_train_metrics, marlbench_eval_episode,
            marlbench_run_finished)
