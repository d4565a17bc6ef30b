"""Experiment trackers (`--log`): real runs through the real tracker packages, and the files they
wrote read back with each tracker's own reader (TensorBoard's event accumulator, the MLflow
client, W&B's record log parsed with its protobuf schema, the csv module), compared with the
run's own metrics.jsonl / eval.json / run.json.
"""

from __future__ import annotations

import csv
import json
import struct
import subprocess
import sys
import types
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from marlbench import loggers
from marlbench.api import AlgorithmSpec, LoggerSpec, hookimpl
from marlbench.cli import main
from marlbench.errors import MarlbenchError, UnknownNameError
from marlbench.plugins import build_registry
from marlbench.runner import RunRequest, run

ENV, DATA = "rware-tiny-2ag", "expert-4ep"
CELL = f"{ENV}/{DATA}/bc/seed-0"


@pytest.fixture(autouse=True)
def clean_tracker_env(monkeypatch, tmp_path):
    """--log selects trackers through the environment: start and end every test without any,
    and keep the trackers' own files (W&B's config and cache) inside tmp_path."""
    for var in (loggers.ENV_VAR, loggers.DIR_ENV_VAR, "WANDB_MODE", "WANDB_PROJECT",
                "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.delenv(var, raising=False)
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))


def _cli(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------


def test_unknown_logger_name_is_one_line_with_the_closest_name(tmp_path, tiny_expert):
    res = _cli("run", "--algo", "bc", "--env", ENV, "--dataset", DATA, "--steps", "5",
               "--log", "csv,tensorbord", "--results", str(tmp_path / "r"))
    assert res.exit_code == 1
    assert res.output.strip().count("\n") == 0, res.output
    assert "unknown logger 'tensorbord'. Did you mean 'tensorboard'?" in res.output
    assert not (tmp_path / "r").exists()


def test_plugins_lists_the_trackers_as_plugins_of_marlbench():
    res = _cli("plugins")
    assert res.exit_code == 0, res.output
    table = res.output.split("Loggers (--log)", 1)[1]
    for name in ("csv", "mlflow", "tensorboard", "wandb"):
        assert f"│ {name}" in table  # listed, so its plugin module loaded


def test_a_tracker_whose_package_is_missing_names_the_extra(tmp_path, tiny_expert):
    # A plugin whose module cannot be found: the spec names the pip extra to install.
    plugin = types.SimpleNamespace(marlbench_loggers=hookimpl(lambda: [LoggerSpec(
        "neptune", "test tracker", requires=("marlbench_no_such_module",), extra="neptune")]))
    reg = build_registry(extra_plugins=[("neptune-test", plugin)])
    with pytest.raises(MarlbenchError, match=r"--log neptune needs the 'neptune' extra, which "
                       r"is not installed .*pip install 'marlbench\[neptune\]'"):
        loggers.check(reg, ["neptune"])
    with pytest.raises(UnknownNameError, match="Did you mean 'mlflow'"):
        loggers.check(reg, ["mlflw"])
    # The real CLI in a process where the tensorboard package cannot be imported.
    code = ("import sys\n"
            "class Hide:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'tensorboard':\n"
            "            raise ModuleNotFoundError(name)\n"
            "sys.meta_path.insert(0, Hide())\n"
            "from marlbench.cli import main\n"
            "main()\n")
    res = subprocess.run([sys.executable, "-c", code, "run", "--algo", "bc", "--env", ENV,
                          "--dataset", DATA, "--steps", "5", "--log", "tensorboard",
                          "--results", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'marlbench[tensorboard]'" in lines[0], res.stderr
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------------------
# Every tracker on one real run
# ------------------------------------------------------------------------------------------------


def _wandb_records(path: Path):
    """W&B's offline run file: a ':W&B' header, then a LevelDB-style log of 32 KiB blocks whose
    chunks (crc32, length, type) carry protobuf `Record`s. Checksums are verified."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B" and struct.unpack("<HB", data[4:7]) == (0xBEE1, 0)
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if (crc, length, kind) == (0, 0, 0):
            break
        chunk = data[pos + 7:pos + 7 + length]
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == crc, f"bad checksum at {pos}"
        pos += 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk  # FULL/FIRST start, MIDDLE/LAST append
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            yield record
            buf = b""


def _key(item) -> str:
    """An item's name: `key`, or `nested_key` parts when W&B split a 'a/b' name."""
    return item.key or "/".join(item.nested_key)


def test_every_tracker_records_the_run_as_the_results_do(tmp_path, tiny_expert):
    results = tmp_path / "r"
    res = _cli("run", "--algo", "bc", "--env", ENV, "--dataset", DATA, "--steps", "300",
               "--eval-episodes", "3", "--eval-parallel", "1", "--threads", "1",
               "--log", "tensorboard,wandb,mlflow,csv", "--results", str(results), "-q")
    assert res.exit_code == 0, res.output
    cell = results / CELL
    curve = [json.loads(line) for line in (cell / "metrics.jsonl").read_text().splitlines()]
    episodes = json.loads((cell / "eval.json").read_text())["episodes"]
    summary = json.loads((cell / "run.json").read_text())
    config = json.loads((cell / "config.json").read_text())
    assert [row["step"] for row in curve] == [100, 200, 300] and len(episodes) == 3
    logs = results / "logs"

    # TensorBoard, read with TensorBoard's own event reader
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logs / "tensorboard" / CELL))
    acc.Reload()
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == [100, 200, 300]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in curve], rel=1e-6)
    # RWARE returns are whole deliveries: exact in float32
    assert sorted((e.step, e.value) for e in acc.Scalars("eval/return")) == sorted(
        (e["episode"], e["return"]) for e in episodes)
    (mean,) = acc.Scalars("summary/eval/return_mean")
    assert (mean.step, mean.value) == (300, pytest.approx(summary["eval"]["return_mean"]))

    # W&B: offline (no WANDB_MODE set), one run file read back record by record
    (run_file,) = (logs / "wandb" / CELL).glob("wandb/offline-run-*/run-*.wandb")
    records = list(_wandb_records(run_file))
    kinds = [r.WhichOneof("record_type") for r in records]
    (run_record,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    wb_config = {i.key: json.loads(i.value_json) for i in run_record.config.update}
    assert wb_config["lr"] == config["lr"] and wb_config["marlbench"]["seed"] == 0
    history = [{_key(i): json.loads(i.value_json) for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    train = [h for h in history if "train/loss" in h]
    assert [h["train/step"] for h in train] == [100, 200, 300]
    assert [h["train/loss"] for h in train] == pytest.approx([r["loss"] for r in curve])
    assert sorted((h["eval/episode"], h["eval/return"]) for h in history
                  if "eval/return" in h) == sorted((e["episode"], e["return"]) for e in episodes)
    final = {_key(i): json.loads(i.value_json) for r in records
             if r.WhichOneof("record_type") == "summary" for i in r.summary.update}
    assert final["eval/return_mean"] == pytest.approx(summary["eval"]["return_mean"])
    assert kinds[-1] != "run" and [r.exit.exit_code for r in records
                                   if r.WhichOneof("record_type") == "exit"] == [0]

    # MLflow: the local file store opened with the MLflow client
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(logs / "mlruns").as_uri())
    (exp,) = [e for e in client.search_experiments() if e.name == "marlbench"]
    (mrun,) = client.search_runs([exp.experiment_id])
    assert mrun.info.status == "FINISHED" and mrun.data.tags["marlbench.cell"] == CELL
    assert mrun.data.params["lr"] == str(config["lr"])
    history = client.get_metric_history(mrun.info.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [
        (r["step"], pytest.approx(r["loss"])) for r in curve]
    assert mrun.data.metrics["summary/eval/return_mean"] == pytest.approx(
        summary["eval"]["return_mean"])

    # CSV
    with open(logs / "csv" / CELL / "train.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(int(r["step"]), float(r["loss"])) for r in rows] == [
        (r["step"], pytest.approx(r["loss"])) for r in curve]
    with open(logs / "csv" / CELL / "summary.csv") as fh:
        assert float(dict(csv.reader(fh))["eval/return_mean"]) == pytest.approx(
            summary["eval"]["return_mean"])

    # --log selects for this command only: a run without it writes no new logs
    before = sorted(p for p in logs.rglob("*") if p.is_file())
    res = _cli("run", "--algo", "bc", "--env", ENV, "--dataset", DATA, "--steps", "5",
               "--eval-episodes", "1", "--eval-parallel", "1", "--seed", "1",
               "--results", str(results), "-q")
    assert res.exit_code == 0, res.output
    assert sorted(p for p in logs.rglob("*") if p.is_file()) == before


# ------------------------------------------------------------------------------------------------
# Runs that do not finish
# ------------------------------------------------------------------------------------------------


def _flaky_registry():
    """BC plus 'flaky', a BC that raises after its first logging interval."""
    from marlbench.algorithms.bc import BC

    class Flaky(BC):
        calls = 0

        def update(self):
            Flaky.calls += 1
            if Flaky.calls > 15:
                raise RuntimeError("flaky cell exploded")
            return super().update()

    plugin = types.SimpleNamespace(marlbench_algorithms=hookimpl(
        lambda: [AlgorithmSpec(name="flaky", cls=Flaky)]))
    return build_registry(extra_plugins=[("flaky", plugin)])


def test_failed_and_killed_runs_are_closed_as_such(tmp_path, tiny_expert, monkeypatch):
    from mlflow.tracking import MlflowClient

    reg = _flaky_registry()
    results = tmp_path / "r"
    monkeypatch.setenv(loggers.ENV_VAR, "tensorboard,mlflow")
    store = (results / "logs" / "mlruns").as_uri()
    # A killed attempt leaves an MLflow run RUNNING; the next attempt at that cell ends it.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=store)
    killed = client.create_run(client.create_experiment("marlbench"),
                               tags={"marlbench.cell": CELL}).info.run_id

    def request(algo):
        return RunRequest(algo=algo, env=ENV, dataset=DATA, steps=20, eval_episodes=1,
                          eval_parallel=1, results_root=results, log_every=10)

    with pytest.raises(RuntimeError, match="flaky cell exploded"):
        run(request("flaky"), reg=reg)
    run(request("bc"), reg=reg)  # the next run of the process closes the failed one first

    status = {r.data.tags["marlbench.cell"].split("/")[2]: r.info.status
              for r in client.search_runs([client.get_experiment_by_name("marlbench")
                                           .experiment_id]) if r.info.run_id != killed}
    assert status == {"flaky": "FAILED", "bc": "FINISHED"}
    assert client.get_run(killed).info.status == "KILLED"
    # the failed run's curve is kept: its one logging interval before the error
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(results / "logs" / "tensorboard" / ENV / DATA / "flaky/seed-0"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [10]


def test_sweep_workers_log_each_cell(tmp_path, tiny_expert):
    """--log reaches the sweep's worker processes (spawned, so only the environment
    carries it)."""
    results = tmp_path / "r"
    res = _cli("sweep", "--algos", "bc", "--envs", ENV, "--datasets", DATA, "--seeds", "1",
               "--steps", "100", "--eval-episodes", "1", "--eval-parallel", "1",
               "--threads", "1", "--log", "csv", "--results", str(results), "-q")
    assert res.exit_code == 0, res.output
    with open(results / "logs/csv" / ENV / DATA / "bc/seed-1/train.csv") as fh:
        assert [int(r["step"]) for r in csv.DictReader(fh)] == [100]


def test_the_readme_tracker_example_works_as_written(tmp_path, tiny_expert, monkeypatch):
    """The README's worked example of a non-algorithm plugin, run as printed there."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("### Worked example: a tracker plugin", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    module = types.ModuleType("my_tracker")
    exec(compile(code, "README.md: my_tracker.py", "exec"), module.__dict__)
    reg = build_registry(extra_plugins=[("jsonl", module)])
    with pytest.raises(UnknownNameError, match="Did you mean 'jsonl'"):
        loggers.enable(reg, "jsnl")
    monkeypatch.setenv(loggers.ENV_VAR, "")  # restored after the test
    assert loggers.enable(reg, "jsonl") == ["jsonl"] and loggers.selected() == {"jsonl"}
    results = tmp_path / "r"
    run(RunRequest(algo="bc", env=ENV, dataset=DATA, steps=20, eval_episodes=2,
                   eval_parallel=1, results_root=results, log_every=10), reg=reg)
    events = [json.loads(line) for line in
              (results / "logs/jsonl" / CELL / "events.jsonl").read_text().splitlines()]
    curve = [json.loads(line) for line in (results / CELL / "metrics.jsonl").read_text()
             .splitlines()]
    assert [e for e in events if "step" in e] == [
        {k: v for k, v in row.items() if k != "seconds"} for row in curve]
    assert sorted(e["episode"]["episode"] for e in events if "episode" in e) == [0, 1]
    assert events[-1]["eval"]["return_mean"] == json.loads(
        (results / CELL / "run.json").read_text())["eval"]["return_mean"]


def test_finetune_logs_like_run(tmp_path, tiny_expert):
    """`finetune --log` (MADS4's online stage) goes through the same hooks as `run`."""
    tiny = ["--set", "d_model=8", "--set", "d_state=8", "--set", "n_layers=1", "--set",
            "embed_dim=8", "--set", "message_dim=8", "--set", "batch_size=2"]
    quick = ["--eval-episodes", "1", "--eval-parallel", "1", "--threads", "1", "-q"]
    results = tmp_path / "r"
    res = _cli("run", "--algo", "mads4", "--env", ENV, "--dataset", DATA, "--steps", "3",
               "--results", str(results), *tiny, *quick)
    assert res.exit_code == 0, res.output
    res = _cli("finetune", "--from", str(results / ENV / DATA / "mads4/seed-0"), "--steps", "2",
               "--set", "n_envs=1", "--set", "epochs=1", "--set", "critic_warmup=1",
               "--log", "csv", *quick)
    assert res.exit_code == 0, res.output
    cell = results / ENV / DATA / "mads4+ft/seed-0"
    curve = [json.loads(line) for line in (cell / "metrics.jsonl").read_text().splitlines()]
    with open(results / "logs/csv" / ENV / DATA / "mads4+ft/seed-0/train.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [r["step"] for r in curve] == [1, 2]
    assert [float(r["actor_trained"]) for r in rows] == [r["actor_trained"] for r in curve]
    assert not (results / "logs/csv" / ENV / DATA / "mads4").exists()  # run had no --log
