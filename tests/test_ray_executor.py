"""`marlbench sweep --executor ray`: a real local Ray cluster (loopback only) runs a tiny BC grid
in which one cell fails (its dataset is corrupt) and one cell's worker process is killed; both
are recorded as the local executor records them, and re-running the sweep completes them.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from marlbench.cli import main
from marlbench.executors import RayExecutor
from marlbench.runner import RunOptions, is_complete
from marlbench.sweep import plan, sweep

ENV, DATA, SPARE = "rware-tiny-2ag", "expert-4ep", "spare"
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="the 'ray' extra is not installed")


@pytest.fixture(autouse=True)
def ray_environment(monkeypatch):
    # Token authentication would write ~/.ray/auth_token for a new local cluster.
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    # The executor sets this for its local cluster; restored after the test.
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    monkeypatch.delenv("MARLBENCH_LOG", raising=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_without_the_ray_extra_executor_ray_is_one_line_naming_it(tmp_path):
    code = ("import sys\n"
            "class Hide:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'ray':\n"
            "            raise ModuleNotFoundError(name)\n"
            "sys.meta_path.insert(0, Hide())\n"
            "from marlbench.cli import main\n"
            "main()\n")
    res = subprocess.run([sys.executable, "-c", code, "sweep", "--algos", "bc", "--envs", ENV,
                          "--seeds", "0", "--executor", "ray", "--results", str(tmp_path / "r"),
                          "--datasets-root", str(tmp_path / "ds")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'marlbench[ray]'" in lines[0], res.stderr
    assert not (tmp_path / "r").exists() and not (tmp_path / "ds").exists()


@needs_ray
def test_a_ray_address_that_does_not_answer_is_one_line_and_writes_nothing(tmp_path):
    port = _free_port()
    res = CliRunner().invoke(main, [
        "sweep", "--algos", "bc", "--envs", ENV, "--seeds", "0", "--executor", "ray",
        "--address", f"127.0.0.1:{port}", "--results", str(tmp_path / "r"),
        "--datasets-root", str(tmp_path / "ds")], catch_exceptions=False)
    assert res.exit_code == 1
    assert res.output.strip().count("\n") == 0, res.output
    assert f"no Ray cluster answers at 127.0.0.1:{port}: Connection refused" in res.output
    assert not (tmp_path / "r").exists() and not (tmp_path / "ds").exists()
    for args, message in ((["--address", "nohost"], "bad --address 'nohost'"),
                          (["--executor", "local", "--address", "127.0.0.1:1"],
                           "--address applies to --executor ray only")):
        res = CliRunner().invoke(main, ["sweep", "--algos", "bc", "--envs", ENV,
                                        "--executor", "ray", *args])
        assert res.exit_code == 1 and message in res.output, res.output


def _staging_pid(algo_dir, seed):
    for p in algo_dir.glob(f".seed-{seed}.staging-*") if algo_dir.exists() else ():
        return int(p.name.rsplit("-", 1)[1])
    return None


@needs_ray
def test_ray_sweep_records_a_failed_and_a_killed_cell_and_resume_completes_them(
        reg, tmp_path, tiny_expert):
    import ray

    datasets, results = tmp_path / "ds", tmp_path / "r"
    (datasets / ENV).mkdir(parents=True)
    for name in (DATA, SPARE):
        shutil.copy(tiny_expert, datasets / ENV / f"{name}.h5")
    opts = RunOptions(steps=150, eval_episodes=1, eval_parallel=1, results_root=results,
                      datasets_root=datasets)
    tasks = plan(reg, ["bc"], [ENV], [DATA, SPARE], [0, 1], opts)
    # The spare dataset is damaged after planning: both of its cells fail when they load it.
    spare = datasets / ENV / f"{SPARE}.h5"
    spare.write_bytes(spare.read_bytes()[:4096])

    algo_dir = results / ENV / DATA / "bc"
    seen = {}

    def kill_seed_1():  # the worker of (expert-4ep, seed 1) dies mid-cell
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and "pid" not in seen:
            pid = _staging_pid(algo_dir, 1)
            if pid is not None:
                seen["node_ip"] = ray.util.get_node_ip_address()
                seen["pid"] = pid
                import os
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)

    killer = threading.Thread(target=kill_seed_1, daemon=True)
    killer.start()
    t0 = time.perf_counter()
    summary = sweep(tasks, RayExecutor(jobs=2, threads=1))
    seconds = time.perf_counter() - t0
    killer.join(timeout=5)
    assert not ray.is_initialized()  # the local cluster is stopped when the sweep ends
    assert seen.get("node_ip") == "127.0.0.1", seen  # loopback only

    status = {(o.cell.dataset, o.cell.seed): o.status for o in summary.outcomes}
    assert status == {(DATA, 0): "done", (DATA, 1): "failed", (SPARE, 0): "failed",
                      (SPARE, 1): "failed"}, (summary.outcomes, seconds)
    killed = json.loads((algo_dir / "seed-1.error.json").read_text())
    assert killed["error"].startswith(f"worker process {seen['pid']} died before the cell "
                                      "finished"), killed
    for seed in (0, 1):
        record = json.loads((results / ENV / SPARE / f"bc/seed-{seed}.error.json").read_text())
        assert SPARE in record["error"] or "h5" in record["error"], record
    assert is_complete(algo_dir / "seed-0") and not is_complete(algo_dir / "seed-1")
    first = (algo_dir / "seed-0" / "run.json").read_bytes()

    # Resume from the command line, with the dataset repaired and a tracker selected.
    shutil.copy(tiny_expert, spare)
    cmd = [sys.executable, "-m", "marlbench.cli", "sweep", "--executor", "ray", "--jobs", "2",
           "--threads", "1", "--algos", "bc", "--envs", ENV, "--datasets", f"{DATA},{SPARE}",
           "--seeds", "0-1", "--steps", "150", "--eval-episodes", "1", "--eval-parallel", "1",
           "--datasets-root", str(datasets), "--results", str(results), "--log", "csv", "-q"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 done, 0 failed, 1 skipped" in done.stdout, done.stdout
    assert (algo_dir / "seed-0" / "run.json").read_bytes() == first  # not run again
    for dataset in (DATA, SPARE):
        folder = results / ENV / dataset / "bc"
        assert sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) == [
            "seed-0", "seed-1"]  # no staging leftovers, error records cleared
        for seed in (0, 1):
            assert is_complete(folder / f"seed-{seed}")
            run = json.loads((folder / f"seed-{seed}" / "run.json").read_text())
            assert run["torch_threads"] == 1
    # --log reached the Ray workers: the three cells run there have CSV logs
    logged = sorted(p.parent.relative_to(results / "logs" / "csv").as_posix()
                    for p in (results / "logs" / "csv").rglob("train.csv"))
    assert logged == [f"{ENV}/{DATA}/bc/seed-1", f"{ENV}/{SPARE}/bc/seed-0",
                      f"{ENV}/{SPARE}/bc/seed-1"]


@needs_ray
@pytest.mark.slow
def test_a_sweep_on_a_running_ray_cluster_given_by_address(tmp_path, tiny_expert):
    """`ray start --head` (ours, on loopback, stopped by its process group), then a sweep with
    --address: cells run on that cluster and land in the same layout; the cluster stays up."""
    import os

    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    temp = Path(f"/tmp/mb-ray-{port}")  # Ray's socket paths must stay short; removed after
    head = subprocess.Popen([str(Path(sys.executable).with_name("ray")), "start", "--head",
                             "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
                             "--num-cpus", "2", "--include-dashboard", "false",
                             "--temp-dir", str(temp), "--disable-usage-stats"], env=env,
                            start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:  # the GCS port answers once the head is up
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and head.poll() is None, "no Ray head"
                time.sleep(0.5)
        results = tmp_path / "r"
        cmd = [sys.executable, "-m", "marlbench.cli", "sweep", "--executor", "ray",
               "--address", f"127.0.0.1:{port}", "--threads", "1", "--algos", "bc",
               "--envs", ENV, "--datasets", DATA, "--seeds", "0-1", "--steps", "50",
               "--eval-episodes", "1", "--eval-parallel", "1", "--results", str(results)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "2 done, 0 failed, 0 skipped" in done.stdout, done.stdout
        assert f"the Ray cluster at 127.0.0.1:{port}" in done.stderr
        for seed in (0, 1):
            assert is_complete(results / ENV / DATA / f"bc/seed-{seed}")
        assert head.poll() is None  # connecting to a cluster does not stop it
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)
