"""Benchmark grids: every (algorithm, env, dataset, seed) cell through the same runner as `run`.

A sweep is resumable because the runner publishes a cell atomically (``run.json`` last): cells
that are already complete are skipped, and a cell whose run was killed left nothing that looks
complete, so it simply runs again. A cell that fails is recorded next to where its results would
be (``seed-<k>.error.json``) and the other cells go on. Cells are handed to an `Executor`
(`marlbench.executors`), so where they run is independent of what a cell is
(`marlbench.cells`).
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from marlbench.catalog import resolve_dataset
from marlbench.cells import Cell, CellOutcome, CellTask, Status, error_record_path
from marlbench.config import build_config, check_seed
from marlbench.errors import MarlbenchError
from marlbench.executors import Executor
from marlbench.fsutil import check_writable_dir, io_step, write_json
from marlbench.plugins import Registry
from marlbench.progress import Reporter
from marlbench.runner import (
    ONLINE,
    RunOptions,
    config_steps,
    is_complete,
    results_root,
    torch_device,
)

# ------------------------------------------------------------------------------------------------
# The grid
# ------------------------------------------------------------------------------------------------


MAX_SEEDS = 10_000  # a typo such as 0-99999999 fails at once instead of planning for hours


def parse_seeds(text: str) -> list[int]:
    """'0-4' -> [0..4]; '0,2,5-6' -> [0, 2, 5, 6]. Order kept, duplicates dropped."""
    seeds: dict[int, None] = {}  # ordered set
    for part in filter(None, (p.strip() for p in text.split(","))):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise MarlbenchError(f"bad --seeds {text!r}: use e.g. 0-4 or 0,2,5-7")
        lo, hi = int(m[1]), int(m[2] if m[2] is not None else m[1])
        if hi < lo:
            raise MarlbenchError(f"bad --seeds range {part!r}: {hi} < {lo}")
        check_seed(hi, "each of --seeds")
        if hi - lo + 1 + len(seeds) > MAX_SEEDS:
            raise MarlbenchError(f"--seeds {text!r} lists more than {MAX_SEEDS} seeds")
        seeds.update(dict.fromkeys(range(lo, hi + 1)))
    if not seeds:
        raise MarlbenchError("--seeds is empty")
    return list(seeds)


def parse_names(text: str | None) -> list[str]:
    """'a,b, c' -> ['a', 'b', 'c'] (empty or None -> [])."""
    return [n.strip() for n in (text or "").split(",") if n.strip()]


# ------------------------------------------------------------------------------------------------
# The sweep (runs in the parent)
# ------------------------------------------------------------------------------------------------


@dataclass
class SweepSummary:
    outcomes: list[CellOutcome]
    seconds: float
    already_complete: int  # cells skipped before any work started

    def count(self, status: Status) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[CellOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def plan(reg: Registry, algos: Sequence[str], envs: Sequence[str], datasets: Sequence[str],
         seeds: Sequence[int], options: RunOptions,
         reporter: Reporter | None = None, collect: bool = True) -> list[CellTask]:
    """Validate names and options, make sure every dataset exists, and list the grid's cells.

    Missing datasets are collected here, once and one after another, so that parallel cells
    never generate the same file concurrently (and under a per-file lock, so that two sweeps
    needing the same dataset collect it once). `collect=False` (a dry run) collects nothing.
    """
    reporter = reporter or Reporter()
    if not algos or not envs or not seeds:
        raise MarlbenchError("a sweep needs at least one algorithm, one env and one seed")
    torch_device(options.device)
    specs = [reg.algorithm(algo) for algo in algos]
    for spec in specs:  # unknown names and bad --set values fail before any work
        config = build_config(spec.config_cls, spec.preset, options.overrides)
        if options.steps is None:
            config_steps(spec, config)
    envs = [reg.environment(env).name for env in envs]
    check_writable_dir(results_root(options.results_root), "results")
    offline = [s.name for s in specs if s.offline]
    online = [s.name for s in specs if not s.offline]  # train in the env: no dataset axis
    tasks = []
    for env in envs:
        env_spec = reg.environment(env)
        for dataset in (datasets or [env_spec.default_dataset]) if offline else []:
            name, _ = resolve_dataset(reg, env_spec, dataset, episodes=options.episodes,
                                      root=options.datasets_root, reporter=reporter,
                                      collect=collect)
            tasks += [CellTask(Cell(algo, env_spec.name, name, seed), options)
                      for algo in offline for seed in seeds]
        tasks += [CellTask(Cell(algo, env_spec.name, ONLINE, seed), options)
                  for algo in online for seed in seeds]
    return tasks


def sweep(tasks: Sequence[CellTask], executor: Executor,
          reporter: Reporter | None = None) -> SweepSummary:
    """Run every incomplete cell of `tasks` on `executor`; failures are recorded, not raised."""
    reporter = reporter or Reporter()
    t0 = time.perf_counter()
    complete = {t.cell for t in tasks if is_complete(t.path)}
    pending = [t for t in tasks if t.cell not in complete]
    if complete:
        reporter.info(f"{len(complete)} of {len(tasks)} cells are already complete; "
                      "skipping them")
    outcomes = [CellOutcome(t.cell, "skipped") for t in tasks if t.cell in complete]
    by_cell = {t.cell: t for t in pending}
    busy: list[CellTask] = []

    def record(outcome: CellOutcome) -> None:
        if outcome.status == "busy":  # another sweep runs it: come back to it at the end
            busy.append(by_cell[outcome.cell])
            return
        outcomes.append(outcome)
        if outcome.status == "failed":
            reporter.warn(f"{outcome.cell} failed: {outcome.error}")
            try:
                _record_failure(by_cell[outcome.cell], outcome)
            except MarlbenchError as exc:  # e.g. the results folder is not writable
                reporter.warn(str(exc))
        elif outcome.status == "done":
            reporter.info(f"{outcome.cell}: return {outcome.return_mean:.2f} "
                          f"({outcome.seconds:.0f} s)")
        progress.advance()

    with reporter.task(f"sweep ({len(pending)} cells)", total=len(pending)) as progress:
        for outcome in executor.run(pending):
            record(outcome)
        # The busy cells again, now waiting for their lock: by then the other sweep has
        # usually completed them (skipped here), or its run failed and this sweep runs them.
        retry = [dataclasses.replace(t, wait_if_busy=True) for t in busy]
        for outcome in executor.run(retry) if retry else ():
            record(outcome)
    return SweepSummary(outcomes, time.perf_counter() - t0, len(complete))


def _record_failure(task: CellTask, outcome: CellOutcome) -> None:
    record = {**asdict(outcome.cell), "error": outcome.error, "details": outcome.details,
              "seconds": round(outcome.seconds, 2),
              "failed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path = error_record_path(task.path)
    with io_step("write the error record", path):
        write_json(path, record)
