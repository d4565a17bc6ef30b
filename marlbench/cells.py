"""One benchmark cell: an (algorithm, env, dataset, seed) run, what an executor ships to a
worker and what comes back.

A cell runs under an exclusive per-cell lock, skips itself if it is already complete (another
sweep finished it), clears staging folders of killed runs, and turns any error into a "failed"
outcome so the grid goes on.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from marlbench.plugins import Registry
from marlbench.progress import Reporter
from marlbench.runner import EVAL_EPISODES, ONLINE, RunRequest, cell_dir, is_complete, run

Status = Literal["done", "skipped", "failed"]
_TRACEBACK_CHARS = 4000  # tail kept in error records; enough for the failing frames


@dataclass(frozen=True)
class Cell:
    algo: str
    env: str
    dataset: str  # resolved dataset name as in the results path ('online': no dataset)
    seed: int

    def __str__(self) -> str:
        return f"{self.algo} on {self.env}/{self.dataset} seed {self.seed}"


@dataclass(frozen=True)
class CellOptions:
    """Run options shared by every cell of a sweep (what `marlbench run` takes besides names)."""

    steps: int | None = None
    eval_episodes: int = EVAL_EPISODES
    eval_parallel: int = 10
    device: str = "cpu"
    overrides: dict[str, Any] = field(default_factory=dict)
    results_root: Path | None = None
    datasets_root: Path | None = None
    threads: int | None = None
    greedy: bool = False
    log_every: int = 100


@dataclass(frozen=True)
class CellTask:
    """What an executor runs: one cell and its options. Picklable, so it can cross processes."""

    cell: Cell
    options: CellOptions

    @property
    def path(self) -> Path:
        c = self.cell
        return cell_dir(self.options.results_root, c.env, c.dataset, c.algo, c.seed)


@dataclass
class CellOutcome:
    cell: Cell
    status: Status
    seconds: float = 0.0
    return_mean: float | None = None
    error: str | None = None  # one line
    details: str | None = None  # traceback tail or exit status


def error_record_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.error.json")


@contextlib.contextmanager
def _cell_lock(path: Path) -> Iterator[None]:
    """Exclusive per-cell lock, so two sweeps over one results folder never run a cell twice.

    The kernel releases it when the holder dies, so a killed sweep leaves no stale lock.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _remove_dead_staging(path: Path) -> None:
    """Staging folders left by runs whose process no longer exists (killed mid-run)."""
    for staging in path.parent.glob(f".{path.name}.staging-*"):
        pid = staging.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(staging, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    return True


def execute_cell(task: CellTask, reg: Registry | None = None) -> CellOutcome:
    """Run one cell unless it is already complete. Errors become a 'failed' outcome."""
    t0 = time.perf_counter()
    cell, opts, path = task.cell, task.options, task.path
    with _cell_lock(path):
        if is_complete(path):  # completed meanwhile, e.g. by another sweep
            return CellOutcome(cell, "skipped")
        _remove_dead_staging(path)
        dataset = None if cell.dataset == ONLINE else cell.dataset
        req = RunRequest(algo=cell.algo, env=cell.env, dataset=dataset, seed=cell.seed,
                         steps=opts.steps, eval_episodes=opts.eval_episodes,
                         eval_parallel=opts.eval_parallel, device=opts.device,
                         overrides=dict(opts.overrides), results_root=opts.results_root,
                         datasets_root=opts.datasets_root, threads=opts.threads,
                         greedy=opts.greedy, log_every=opts.log_every)
        try:
            summary = run(req, Reporter(), reg)
        except Exception as exc:  # noqa: BLE001 - one failing cell must not stop the grid
            return CellOutcome(cell, "failed", time.perf_counter() - t0,
                               error=f"{type(exc).__name__}: {exc}",
                               details=traceback.format_exc()[-_TRACEBACK_CHARS:])
        error_record_path(path).unlink(missing_ok=True)
        return CellOutcome(cell, "done", time.perf_counter() - t0,
                           return_mean=summary["eval"]["return_mean"])
