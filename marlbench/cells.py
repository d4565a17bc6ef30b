"""One benchmark cell: an (algorithm, env, dataset, seed) run, what an executor ships to a
worker and what comes back.

A cell runs under an exclusive per-cell lock (the same one `marlbench run` takes), skips itself
if it is already complete (another sweep finished it), clears staging folders of killed runs, and
turns any error into a "failed" outcome so the grid goes on. A cell whose lock another process
holds comes back "busy" at once (unless its task says to wait): two sweeps over one results
folder then share the grid instead of queueing behind each other's cells.
"""

from __future__ import annotations

import contextlib
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from marlbench.errors import BusyError, MarlbenchError
from marlbench.fsutil import path_lock, remove_dead_staging
from marlbench.plugins import Registry
from marlbench.progress import Reporter
from marlbench.runner import ONLINE, RunOptions, RunRequest, cell_dir, is_complete, run

Status = Literal["done", "skipped", "failed", "busy"]
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
class CellTask:
    """What an executor runs: one cell and its options. Picklable, so it can cross processes."""

    cell: Cell
    options: RunOptions
    wait_if_busy: bool = False  # False: a cell another process is running comes back "busy"

    @property
    def path(self) -> Path:
        c = self.cell
        return cell_dir(self.options.results_root, c.env, c.dataset, self.options.label or c.algo,
                        c.seed)


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


def execute_cell(task: CellTask, reg: Registry | None = None) -> CellOutcome:
    """Run one cell unless it is already complete, or "busy" when another process holds it
    (and the task does not wait). Errors, I/O errors included, become a 'failed' outcome."""
    t0 = time.perf_counter()
    cell, path = task.cell, task.path
    try:
        with path_lock(path, wait=task.wait_if_busy):
            if is_complete(path):  # completed meanwhile, e.g. by another sweep
                return CellOutcome(cell, "skipped")
            remove_dead_staging(path)
            dataset = None if cell.dataset == ONLINE else cell.dataset
            req = RunRequest.of(task.options, algo=cell.algo, env=cell.env, dataset=dataset,
                                seed=cell.seed)
            summary = run(req, Reporter(), reg, lock=False)
    except BusyError as exc:
        return CellOutcome(cell, "busy", time.perf_counter() - t0, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - one failing cell must not stop the grid
        error = str(exc) if isinstance(exc, MarlbenchError) else f"{type(exc).__name__}: {exc}"
        return CellOutcome(cell, "failed", time.perf_counter() - t0, error=error,
                           details=traceback.format_exc()[-_TRACEBACK_CHARS:])
    with contextlib.suppress(OSError):
        error_record_path(path).unlink(missing_ok=True)
    return CellOutcome(cell, "done", time.perf_counter() - t0,
                       return_mean=summary["eval"]["return_mean"])
