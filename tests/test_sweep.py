"""`marlbench sweep`: the grid, failures that do not stop it, and resuming after a kill.

Cells are real BC runs on real RWARE with tiny budgets. The kill test runs the CLI in its own
process group and kills a worker mid-cell, then the whole sweep, as a user's Ctrl-C or a
crashed machine would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import types

import pytest
from click.testing import CliRunner

from marlbench.api import AlgorithmSpec, hookimpl
from marlbench.cli import main
from marlbench.errors import MarlbenchError, UnknownNameError
from marlbench.executors import InlineExecutor, LocalProcessExecutor, threads_per_job
from marlbench.fsutil import lock_path, path_lock
from marlbench.plugins import build_registry
from marlbench.runner import RunOptions, cell_dir, is_complete
from marlbench.sweep import parse_seeds, plan, sweep

ENV, DATA = "rware-tiny-2ag", "expert-4ep"


def test_seed_lists_parse_and_bad_ones_are_rejected():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("3, 0-1,3") == [3, 0, 1]
    for bad in ("", "a", "4-2", "1-"):
        with pytest.raises(MarlbenchError):
            parse_seeds(bad)
    assert threads_per_job(jobs=2, cpus=2) == 1 and threads_per_job(jobs=3, cpus=8) == 2
    assert threads_per_job(jobs=4, cpus=2) == 1
    with pytest.raises(MarlbenchError, match="--jobs must be at least 1"):
        LocalProcessExecutor(jobs=0)


def test_plan_checks_names_and_options_before_any_work(reg, tmp_path, tiny_expert):
    opts = RunOptions(results_root=tmp_path / "r")
    tasks = plan(reg, ["bc"], [ENV], [DATA], [0, 1, 2], opts)
    assert [(t.cell.algo, t.cell.env, t.cell.dataset, t.cell.seed) for t in tasks] == [
        ("bc", ENV, DATA, s) for s in (0, 1, 2)]
    assert tasks[1].path == cell_dir(tmp_path / "r", ENV, DATA, "bc", 1)
    # an online algorithm has no dataset axis: one cell per env and seed, under <env>/online
    mixed = plan(reg, ["bc", "mappo"], [ENV], [DATA], [0], opts)
    assert [(t.cell.algo, t.cell.dataset) for t in mixed] == [("bc", DATA), ("mappo", "online")]
    with pytest.raises(UnknownNameError, match="Did you mean 'bc'"):
        plan(reg, ["bcc"], [ENV], [DATA], [0], opts)
    with pytest.raises(MarlbenchError, match="Did you mean 'hidden'"):
        plan(reg, ["bc"], [ENV], [DATA], [0], RunOptions(overrides={"hiden": "3"}))
    assert not (tmp_path / "r").exists()


def _flaky_registry():
    """BC plus 'flaky', a BC whose seed-1 run raises during training."""
    from marlbench.algorithms.bc import BC

    class Flaky(BC):
        def update(self):
            if self.seed == 1:
                raise RuntimeError("flaky cell exploded")
            return super().update()

    plugin = types.SimpleNamespace(marlbench_algorithms=hookimpl(
        lambda: [AlgorithmSpec(name="flaky", cls=Flaky)]))
    return build_registry(extra_plugins=[("flaky", plugin)])


def test_a_failing_cell_is_recorded_and_the_others_go_on(tmp_path, tiny_expert):
    reg = _flaky_registry()
    opts = RunOptions(steps=20, eval_episodes=1, eval_parallel=1, results_root=tmp_path / "r",
                       log_every=10)
    tasks = plan(reg, ["flaky", "bc"], [ENV], [DATA], [0, 1], opts)
    summary = sweep(tasks, InlineExecutor(reg))
    assert (summary.count("done"), summary.count("failed")) == (3, 1)
    (failed,) = summary.failed
    assert (failed.cell.algo, failed.cell.seed) == ("flaky", 1)
    record = json.loads((tmp_path / f"r/{ENV}/{DATA}/flaky/seed-1.error.json").read_text())
    assert record["error"] == "RuntimeError: flaky cell exploded"
    assert "update" in record["details"]  # the traceback tail names the failing frame
    assert not (tmp_path / f"r/{ENV}/{DATA}/flaky/seed-1").exists()

    again = sweep(tasks, InlineExecutor(reg))  # complete cells skipped, the failed one retried
    assert (again.already_complete, again.count("failed"), again.count("done")) == (3, 1, 0)

    res = CliRunner().invoke(main, ["compare", str(tmp_path / "r"), "--reps", "100",
                                    "--format", "markdown"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "failed cell: flaky on rware-tiny-2ag/expert-4ep seed 1: RuntimeError" in res.output
    assert "| rware-tiny-2ag/expert-4ep | bc 2, flaky 1 |" in res.output


def _wait_for(predicate, timeout=120.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def _staging_pid(algo_dir, seed):
    for p in algo_dir.glob(f".seed-{seed}.staging-*") if algo_dir.exists() else ():
        return int(p.name.rsplit("-", 1)[1])
    return None


def test_killed_worker_and_killed_sweep_resume_with_each_cell_once(tmp_path, tiny_expert):
    results = tmp_path / "r"
    algo_dir = results / ENV / DATA / "bc"
    cmd = [sys.executable, "-m", "marlbench.cli", "sweep", "--algos", "bc", "--envs", ENV,
           "--datasets", DATA, "--seeds", "0-2", "--steps", "400", "--eval-episodes", "1",
           "--eval-parallel", "1", "--threads", "1", "--results", str(results), "-q"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        # 1. the worker of seed 1 dies mid-cell: recorded as that cell's failure, sweep goes on
        worker = _wait_for(lambda: _staging_pid(algo_dir, 1), what="seed-1 worker")
        assert is_complete(algo_dir / "seed-0")
        os.kill(worker, signal.SIGKILL)
        # 2. then the whole sweep (parent and worker) is killed while seed 2 trains
        _wait_for(lambda: _staging_pid(algo_dir, 2), what="seed-2 worker")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    record = json.loads((algo_dir / "seed-1.error.json").read_text())
    assert "was killed by SIGKILL before the cell finished" in record["error"]
    assert not is_complete(algo_dir / "seed-1") and not is_complete(algo_dir / "seed-2")
    first = (algo_dir / "seed-0" / "run.json").read_bytes()

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 done, 0 failed, 1 skipped" in done.stdout
    assert (algo_dir / "seed-0" / "run.json").read_bytes() == first  # not run again
    assert sorted(p.name for p in algo_dir.iterdir() if not p.name.endswith(".lock")) == [
        "seed-0", "seed-1", "seed-2"]  # no staging leftovers, error record cleared
    assert all(is_complete(algo_dir / f"seed-{s}") for s in range(3))
    summary = json.loads((algo_dir / "seed-2" / "run.json").read_text())
    assert " sweep --algos bc --envs" in summary["command"]
    assert summary["torch_threads"] == 1


def test_io_failures_are_recorded_per_cell_and_the_summary_still_prints(tmp_path, tiny_expert):
    """A cell that cannot take its lock (a folder is in the way) fails with one line naming the
    path; its error record cannot be written either (also a folder): the sweep warns, runs the
    other cell and prints its summary."""
    results = tmp_path / "r"
    algo_dir = results / ENV / DATA / "bc"
    (algo_dir / ".seed-0.lock").mkdir(parents=True)
    (algo_dir / "seed-0.error.json").mkdir()
    res = CliRunner().invoke(main, [
        "sweep", "--algos", "bc", "--envs", ENV, "--datasets", DATA, "--seeds", "0-1",
        "--steps", "2", "--eval-episodes", "1", "--eval-parallel", "1", "--jobs", "2",
        "--results", str(results), "-q"])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert "sweep: 1 done, 1 failed, 0 skipped" in res.stdout
    assert "failed" in res.stdout and "cannot open the lock file" in res.stdout  # the table
    assert f"seed 0 failed: cannot open the lock file {algo_dir / '.seed-0.lock'}" in res.stderr
    assert f"cannot write the error record {algo_dir / 'seed-0.error.json'}" in res.stderr
    assert res.stderr.splitlines()[-1].startswith("error: 1 of 2 cells failed")
    assert is_complete(algo_dir / "seed-1") and not is_complete(algo_dir / "seed-0")


def test_a_cell_busy_in_another_sweep_is_deferred_not_waited_for(reg, tmp_path, tiny_expert):
    """Two sweeps over one results folder share the grid: a cell whose lock another process
    holds is left for the end (the other cells run first), then waited for and run if the
    holder did not complete it."""
    opts = RunOptions(steps=5, eval_episodes=1, eval_parallel=1, results_root=tmp_path / "r",
                      log_every=5)
    tasks = plan(reg, ["bc"], [ENV], [DATA], [0, 1], opts)
    held = tasks[0].path
    release = threading.Event()

    def hold():  # another sweep's worker on seed 0: holds the cell's lock, then dies
        with path_lock(held, wait=False):
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    _wait_for(lambda: lock_path(held).exists() and lock_path(held).read_text().strip(),
              what="the held lock")
    order = []
    executor = InlineExecutor(reg)
    run_cells = executor.run

    def recording(cells):
        for outcome in run_cells(cells):
            order.append((outcome.cell.seed, outcome.status))
            if outcome.status == "done":
                release.set()  # the other sweep's worker goes away after seed 1 is done
            yield outcome

    executor.run = recording
    summary = sweep(tasks, executor)
    holder.join()
    assert order == [(0, "busy"), (1, "done"), (0, "done")]
    assert summary.count("done") == 2 and summary.count("busy") == 0
    assert is_complete(tasks[0].path) and is_complete(tasks[1].path)
