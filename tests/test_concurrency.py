"""Killed and concurrent processes: real processes, SIGKILL, real locks.

- a second `run` of a cell that a live process is running stops at once, with one line;
- a killed run leaves its staging folder and a killed collection its temporary file; the next
  run / collection of the same target removes them, but never those of a live process;
- two sweeps that need the same missing dataset collect it once (and run the shared cell once).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from marlbench.catalog import collect_dataset
from marlbench.cli import main
from marlbench.runner import is_complete

ENV = "rware-tiny-2ag"


def _spawn(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "marlbench.cli", *args], env=env,
                            start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _wait_for(condition: Callable[[], object], proc: subprocess.Popen, timeout: float = 120):
    t0 = time.monotonic()
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"process ended early ({proc.returncode}): "
                                 f"{proc.stderr.read()[-2000:]}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError("timed out")
        time.sleep(0.05)


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()


@pytest.fixture
def live_pid():
    """The pid of a live process that is not this one (owner of 'live' leftovers)."""
    proc = subprocess.Popen(["sleep", "300"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_second_run_stops_at_once_and_a_killed_runs_staging_is_swept(tmp_path, tiny_expert,
                                                                      live_pid):
    results = tmp_path / "r"
    args = ["run", "--algo", "bc", "--env", ENV, "--dataset", "expert-4ep", "--results",
            str(results), "--eval-episodes", "1", "--eval-parallel", "1", "--threads", "1",
            "-q"]
    cell = results / ENV / "expert-4ep" / "bc" / "seed-0"
    first = _spawn([*args, "--steps", "1000000"])
    staging = cell.with_name(f".seed-0.staging-{first.pid}")
    try:
        _wait_for(staging.is_dir, first)  # training has started under the cell's lock
        t0 = time.perf_counter()
        res = CliRunner().invoke(main, [*args, "--steps", "5"])
        seconds = time.perf_counter() - t0
    finally:
        _kill(first)
    lines = [ln for ln in res.stderr.splitlines() if not ln.startswith("warning: plugin")]
    assert res.exit_code == 1 and len(lines) == 1, res.stderr
    assert f"is being written by process {first.pid} right now" in lines[0]
    assert seconds < 15  # stopped before training (loaded machine: generous bound)
    assert not cell.exists()

    # The killed run left its staging folder; a live process's one must survive the next run.
    assert staging.is_dir()
    live = cell.with_name(f".seed-0.staging-{live_pid}")
    live.mkdir()
    res = CliRunner().invoke(main, [*args, "--steps", "5"])
    assert res.exit_code == 0, res.output
    assert is_complete(cell) and not staging.exists() and live.is_dir()


def test_killed_collection_tmp_is_removed_by_the_next_but_a_live_ones_is_kept(
        tmp_path, reg, live_pid):
    out = tmp_path / "d" / "poor.h5"
    proc = _spawn(["datasets", "collect", "--env", ENV, "--quality", "poor", "--episodes",
                   "100000", "--out", str(out), "-q"])

    def tmp_files():
        return list(out.parent.glob(f".poor.h5.pid{proc.pid}.*.tmp"))

    try:
        _wait_for(tmp_files, proc)
    finally:
        _kill(proc)
    stale = tmp_files()
    assert len(stale) == 1 and stale[0].exists() and not out.exists()
    live = out.parent / f".poor.h5.pid{live_pid}.abcdef.tmp"
    live.write_bytes(b"being written")
    path, card = collect_dataset(reg, reg.environment(ENV), "poor", episodes=2, out=out)
    assert path == out and out.is_file() and card["episodes"] == 2
    assert not stale[0].exists() and live.read_bytes() == b"being written"


def test_two_sweeps_needing_the_same_missing_dataset_collect_it_once(tmp_path, datasets_root):
    name = "poor-3ep-seed11"
    args = ["sweep", "--algos", "bc", "--envs", ENV, "--datasets", name, "--seeds", "0",
            "--steps", "2", "--eval-episodes", "1", "--eval-parallel", "1", "--threads", "1",
            "--results", str(tmp_path / "r")]
    procs = [_spawn(args), _spawn(args)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    collected = [f"collecting {ENV}/poor" in err for _, err in outs]
    assert collected.count(True) == 1, [err for _, err in outs]
    assert (datasets_root / ENV / f"{name}.h5").is_file()
    assert is_complete(tmp_path / "r" / ENV / name / "bc" / "seed-0")
    summaries = " ".join(out for out, _ in outs)
    assert summaries.count("sweep: 1 done") == 1  # the other found the cell complete
    assert not list((datasets_root / ENV).glob(f".{name}.h5.*.tmp"))


def test_path_lock_is_exclusive_across_processes(tmp_path):
    """The lock is the kernel's: held by a live process it refuses, killed it is free."""
    from marlbench.errors import BusyError
    from marlbench.fsutil import path_lock

    target = tmp_path / "thing"
    code = ("import sys, time; from pathlib import Path; from marlbench.fsutil import path_lock\n"
            "with path_lock(Path(sys.argv[1]), wait=False):\n"
            "    print('locked', flush=True); time.sleep(300)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(BusyError, match=f"process {proc.pid}"):
            with path_lock(target, wait=False):
                pass
    finally:
        _kill(proc)
    with path_lock(target, wait=False):  # released by the kernel when the holder died
        assert Path(str(target)).parent.is_dir()


def test_sigterm_cleans_up_like_ctrl_c(tmp_path, tiny_expert):
    """`kill PID` (SIGTERM) removes the run's staging folder and says so in one line."""
    results = tmp_path / "r"
    proc = _spawn(["run", "--algo", "bc", "--env", ENV, "--dataset", "expert-4ep", "--results",
                   str(results), "--steps", "1000000", "--threads", "1", "-q"])
    staging = results / ENV / "expert-4ep" / "bc" / f".seed-0.staging-{proc.pid}"
    try:
        _wait_for(staging.is_dir, proc)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            _kill(proc)
    lines = [ln for ln in err.splitlines() if not ln.startswith("warning: plugin")]
    assert proc.returncode == 130 and lines == ["interrupted: nothing was published"], err
    assert not staging.exists() and not (staging.parent / "seed-0").exists()


def test_leftovers_are_removed_only_when_their_owner_is_gone(tmp_path, live_pid):
    """Staging folders, folders moved aside by --overwrite, and temporary files: by pid."""
    from marlbench.fsutil import remove_dead_staging, remove_dead_tmp

    done = subprocess.Popen(["true"])
    done.wait()
    dead = done.pid  # a process that has exited (its pid is not reused within this test)
    cell, data = tmp_path / "seed-0", tmp_path / "expert.h5"
    left = [tmp_path / f".seed-0.staging-{dead}", tmp_path / f".seed-0.old-{dead}"]
    kept = [tmp_path / f".seed-0.staging-{live_pid}", tmp_path / f".seed-0.old-{live_pid}",
            tmp_path / ".seed-10.staging-1"]  # another cell's (pid 1 is alive anyway)
    for d in left + kept:
        d.mkdir()
    tmp_dead = tmp_path / f".expert.h5.pid{dead}.x1y2.tmp"
    tmp_live = tmp_path / f".expert.h5.pid{live_pid}.x1y2.tmp"
    for f in (tmp_dead, tmp_live):
        f.write_bytes(b"")
    assert sorted(remove_dead_staging(cell)) == sorted(left)
    assert remove_dead_tmp(data) == [tmp_dead]
    assert all(d.is_dir() for d in kept) and tmp_live.exists()
    assert not any(d.exists() for d in left) and not tmp_dead.exists()
