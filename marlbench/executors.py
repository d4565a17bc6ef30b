"""Where sweep cells run. A cell is a picklable `CellTask`; `execute_cell` runs it anywhere.

An executor only decides where and how many at a time, so a distributed executor is one more
subclass that ships `execute_cell` to its workers (`RayExecutor`); cells and the sweep stay
unchanged.
"""

from __future__ import annotations

import abc
import dataclasses
import ipaddress
import logging
import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from marlbench.cells import CellOutcome, CellTask, execute_cell
from marlbench.errors import MarlbenchError
from marlbench.plugins import Registry, importable


class Executor(abc.ABC):
    @abc.abstractmethod
    def run(self, tasks: Sequence[CellTask]) -> Iterator[CellOutcome]:
        """Run every task; yield one outcome per task as it finishes (any order)."""

    def describe(self) -> str:
        """Where and how many at a time, for the sweep's first line."""
        return type(self).__name__


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

    def describe(self) -> str:
        return f"{self.jobs} at a time, {self.threads} torch thread(s) each"

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


# ------------------------------------------------------------------------------------------------
# Ray
# ------------------------------------------------------------------------------------------------

# Environment that selects what a cell does besides its options (trackers, their settings,
# default folders); handed to the Ray job so workers on other nodes see the same.
_FORWARDED = ("MARLBENCH_LOG", "MARLBENCH_LOG_DIR", "MARLBENCH_RESULTS", "MARLBENCH_DATASETS")
_FORWARDED_PREFIXES = ("WANDB_", "MLFLOW_")
_LOCAL_OBJECT_STORE = 128 * 2**20  # outcomes are a few hundred bytes; Ray's minimum is 75 MiB


class RayExecutor(Executor):
    """Each cell one Ray task, running `execute_cell` on whichever node has its CPUs (and GPU).

    A task asks for `threads` CPUs (the torch threads its cell uses) and one GPU when the cells
    run on a CUDA device. Without `address`, Ray starts a local cluster of ``jobs * threads``
    CPUs bound to the loopback interface only, and stops it when the sweep ends. With
    `address`, the cluster's nodes must see the results and datasets folders at the same paths
    (a shared filesystem): cells write there exactly as local ones do, under the same per-cell
    lock, so resuming and mixing executors work unchanged. A task is never retried by Ray: a
    worker that dies is recorded as that cell's failure, and re-running the sweep retries it.
    """

    def __init__(self, jobs: int = 1, threads: int | None = None, address: str | None = None,
                 connect_timeout: float = 5.0):
        if jobs < 1:
            raise MarlbenchError(f"--jobs must be at least 1 (got {jobs})")
        if not importable("ray"):
            raise MarlbenchError("--executor ray needs the 'ray' extra, which is not "
                                 "installed: pip install 'marlbench[ray]'")
        self.jobs, self.address = jobs, address
        # A remote node's cores are unknown here: one thread per cell unless told.
        self.threads = threads or (1 if address else threads_per_job(jobs))
        if address is not None:
            check_ray_address(address, connect_timeout)

    def describe(self) -> str:
        where = (f"the Ray cluster at {self.address}" if self.address
                 else f"a local Ray cluster of {self.jobs * self.threads} CPU(s)")
        return f"Ray tasks on {where}, {self.threads} CPU(s) and torch thread(s) each"

    def run(self, tasks: Sequence[CellTask]) -> Iterator[CellOutcome]:
        if not tasks:
            return
        ray, started_here = self._connect()
        remote = ray.remote(_ray_cell)
        pending: dict = {}
        try:
            for task in tasks:
                task = _portable(task, self.threads)
                gpus = 1 if str(task.options.device).startswith("cuda") else 0
                ref = remote.options(num_cpus=task.options.threads, num_gpus=gpus,
                                     max_retries=0, name=f"marlbench-cell {task.cell}"
                                     ).remote(task)
                pending[ref] = (task, time.perf_counter())
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    task, t0 = pending.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:  # raised outside the cell
                        outcome = _raised(task, exc, time.perf_counter() - t0)
                    except ray.exceptions.RayError as exc:
                        outcome = _lost(task, exc, time.perf_counter() - t0)
                    yield outcome
        finally:  # interrupted or abandoned: stop the cells still running
            for ref in pending:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001, S110 - already finished or gone
                    pass
            if started_here:
                ray.shutdown()

    def _connect(self):
        """Import Ray and connect (or start the local cluster). Returns (ray, whether this
        call initialised Ray and so must shut it down)."""
        if self.address is None:
            # Bind every Ray service to 127.0.0.1: Ray otherwise picks the address other
            # machines reach. Ray reads this switch when first imported (this process and the
            # cluster's processes); a Ray imported earlier gets its constant set directly.
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        import ray

        if ray.is_initialized():  # the caller connected already (library use)
            return ray, False
        if self.address is None:
            from ray._private import ray_constants

            ray_constants.ENABLE_RAY_CLUSTER = False
        env = {k: v for k, v in os.environ.items()
               if k in _FORWARDED or k.startswith(_FORWARDED_PREFIXES)}
        kwargs = dict(log_to_driver=False, logging_level=logging.WARNING,
                      runtime_env={"env_vars": env} if env else None)
        try:
            if self.address is None:
                # "local": always a new cluster, even where `ray start` runs one already
                ray.init(address="local", num_cpus=self.jobs * self.threads,
                         include_dashboard=False, object_store_memory=_LOCAL_OBJECT_STORE,
                         **kwargs)
            else:
                ray.init(address=self.address, **kwargs)
        except Exception as exc:  # noqa: BLE001 - Ray raises several kinds; one line
            where = f"at {self.address}" if self.address else "locally"
            raise MarlbenchError(f"cannot start Ray {where}: "
                                 f"{str(exc).strip().splitlines()[0]}") from None
        if self.address is None and not ipaddress.ip_address(
                ray.util.get_node_ip_address()).is_loopback:
            ip = ray.util.get_node_ip_address()
            ray.shutdown()
            raise MarlbenchError(f"the local Ray cluster bound to {ip}, not the loopback "
                                 "interface; stopped it (start one yourself and pass "
                                 "--address)")
        return ray, True


def _ray_cell(task: CellTask) -> CellOutcome:
    """A Ray task: the same `execute_cell` the local executor runs in its worker process."""
    return execute_cell(task)


def _portable(task: CellTask, threads: int) -> CellTask:
    """The task with absolute folders (a Ray worker's working folder is not ours) and its
    thread count fixed."""
    from marlbench.data.store import root_dir
    from marlbench.runner import results_root

    o = task.options
    return dataclasses.replace(task, options=dataclasses.replace(
        o, results_root=results_root(o.results_root).absolute(),
        datasets_root=root_dir(o.datasets_root).absolute(),
        threads=o.threads or threads))


def _raised(task: CellTask, exc: Exception, seconds: float) -> CellOutcome:
    """The task raised before or after `execute_cell` (which turns a cell's own errors into
    outcomes), e.g. a node without marlbench cannot unpickle the task."""
    cause = getattr(exc, "cause", None) or exc
    return CellOutcome(task.cell, "failed", seconds,
                       error=f"the Ray task failed: {type(cause).__name__}: "
                             f"{str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}",
                       details=str(exc)[-4000:])


def _lost(task: CellTask, exc: Exception, seconds: float) -> CellOutcome:
    """A task whose worker died (killed, out of memory, node lost): the cell's failure."""
    pid = _staging_pid(task.path)
    who = f"worker process {pid}" if pid is not None else "its Ray worker process"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return CellOutcome(task.cell, "failed", seconds,
                       error=f"{who} died before the cell finished ({type(exc).__name__}: "
                             f"{first})", details=str(exc)[-4000:])


def _staging_pid(path: Path) -> int | None:
    """The process id in a cell's staging folder name (``.seed-k.staging-<pid>``)."""
    for staging in path.parent.glob(f".{path.name}.staging-*"):
        pid = staging.name.rsplit("-", 1)[-1]
        if pid.isdigit():
            return int(pid)
    return None


def check_ray_address(address: str, timeout: float = 5.0) -> None:
    """Fail in one line, before any work, when nothing answers at a Ray address."""
    if address == "auto":  # Ray finds the cluster this machine is part of
        return
    m = re.fullmatch(r"(?:ray://)?(\[[^\]]+\]|[^:/\s]+):(\d{1,5})", address.strip())
    if not m:
        raise MarlbenchError(f"bad --address {address!r}: use HOST:PORT (the head node's GCS "
                             "port, 6379 by default) or ray://HOST:PORT")
    host, port = m[1].strip("[]"), int(m[2])
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise MarlbenchError(f"no Ray cluster answers at {address}: {reason} (is `ray start "
                             "--head` running there?)") from None


def make_executor(name: str, jobs: int = 1, threads: int | None = None,
                  address: str | None = None) -> Executor:
    """The executor `marlbench sweep --executor NAME` uses."""
    if name == "local":
        if address is not None:
            raise MarlbenchError("--address applies to --executor ray only")
        return LocalProcessExecutor(jobs, threads)
    if name == "ray":
        return RayExecutor(jobs, threads, address)
    raise MarlbenchError(f"unknown executor {name!r}: use local or ray")
