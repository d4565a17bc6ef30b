"""Where sweep cells run. A cell is a picklable `CellTask`; `execute_cell` runs it anywhere.

An executor only decides where and how many at a time, so a distributed executor is one more
subclass that ships `execute_cell` to its workers; cells and the sweep stay unchanged.
"""

from __future__ import annotations

import abc
import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from collections.abc import Iterator, Sequence

from marlbench.cells import CellOutcome, CellTask, execute_cell
from marlbench.errors import MarlbenchError
from marlbench.plugins import Registry


class Executor(abc.ABC):
    @abc.abstractmethod
    def run(self, tasks: Sequence[CellTask]) -> Iterator[CellOutcome]:
        """Run every task; yield one outcome per task as it finishes (any order)."""


class InlineExecutor(Executor):
    """One cell after another in this process (library use, debugging, in-process plugins)."""

    def __init__(self, reg: Registry | None = None):
        self.reg = reg

    def run(self, tasks: Sequence[CellTask]) -> Iterator[CellOutcome]:
        for task in tasks:
            yield execute_cell(task, self.reg)


def threads_per_job(jobs: int, cpus: int | None = None) -> int:
    """Split the machine's cores between parallel cells (at least one thread each)."""
    return max(1, (cpus or os.cpu_count() or 1) // jobs)


@dataclasses.dataclass
class _Worker:
    proc: multiprocessing.Process
    receive: multiprocessing.connection.Connection
    task: CellTask
    started: float

    def outcome(self) -> CellOutcome:
        """The cell's outcome once the pipe is readable; a crash is the cell's failure."""
        try:
            outcome = self.receive.recv()
        except EOFError:  # the process ended without sending one
            outcome = None
        self.proc.join()
        self.receive.close()
        if outcome is not None:
            return outcome
        code = self.proc.exitcode
        how = (f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0
               else f"exited with code {code}")
        return CellOutcome(self.task.cell, "failed", time.perf_counter() - self.started,
                           error=f"worker process {self.proc.pid} {how} before the cell "
                                 "finished", details=f"exitcode {code}")


class LocalProcessExecutor(Executor):
    """Up to `jobs` cells at once, each in a fresh process.

    A fresh process per cell isolates cells completely: a cell that crashes the interpreter or
    is killed is reported as that cell's failure, and the others go on. Starting a process
    costs about as much as importing torch, which is small next to a cell. Each cell gets
    `threads` torch threads (default: the cores divided by `jobs`).
    """

    def __init__(self, jobs: int = 1, threads: int | None = None):
        if jobs < 1:
            raise MarlbenchError(f"--jobs must be at least 1 (got {jobs})")
        self.jobs = jobs
        self.threads = threads or threads_per_job(jobs)
        self._ctx = multiprocessing.get_context("spawn")  # torch is not fork-safe

    def run(self, tasks: Sequence[CellTask]) -> Iterator[CellOutcome]:
        queue = list(tasks)
        running: dict[multiprocessing.connection.Connection, _Worker] = {}
        try:
            while queue or running:
                while queue and len(running) < self.jobs:
                    task = queue.pop(0)
                    if task.options.threads is None:
                        task = dataclasses.replace(task, options=dataclasses.replace(
                            task.options, threads=self.threads))
                    receive, send = self._ctx.Pipe(duplex=False)
                    proc = self._ctx.Process(target=_work, args=(task, send),
                                             name=f"marlbench-cell {task.cell}")
                    proc.start()
                    send.close()
                    running[receive] = _Worker(proc, receive, task, time.perf_counter())
                # readable = an outcome was sent, or end of file because the process died
                for receive in multiprocessing.connection.wait(list(running)):
                    yield running.pop(receive).outcome()
        finally:  # interrupted or abandoned: stop the cells still running
            for worker in running.values():
                worker.proc.terminate()
                worker.proc.join()
                worker.receive.close()


def _work(task: CellTask, send: multiprocessing.connection.Connection) -> None:
    try:
        outcome = execute_cell(task)
    except KeyboardInterrupt:  # the parent handles Ctrl-C; the runner has cleaned up
        os._exit(130)
    send.send(outcome)
    send.close()
