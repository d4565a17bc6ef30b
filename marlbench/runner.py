"""One benchmark cell: dataset -> train -> evaluate online -> results folder.

Results go to ``<results>/<env>/<dataset>/<algo>/seed-<k>/`` (``<dataset>`` is ``online`` for an
online algorithm such as MAPPO, which trains in the env instead of on a dataset):

    config.json     the algorithm config actually used (defaults + preset + --set)
    metrics.jsonl   training curve: one JSON object per logging interval
    eval.json       every evaluation episode (return, length, win flag, scaled returns)
    model.safetensors  weights + metadata (no pickle)
    run.json        provenance and summary; written last

Everything is written into a staging folder that is renamed into place only when complete, so a
cell is complete exactly when ``run.json`` exists, and an existing result is never replaced
unless ``overwrite`` is set. A run whose loss turns NaN stops, naming the step, and leaves
``seed-<k>.failed/`` holding the last good checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import re
import shutil
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marlbench import checkpoint
from marlbench.api import Algorithm, AlgorithmSpec, EnvInfo, EnvSpec, Policy, RunContext
from marlbench.catalog import resolve_dataset
from marlbench.config import build_config, check_seed, to_dict
from marlbench.data import OfflineDataset
from marlbench.errors import ConfigError, ContractError, MarlbenchError, TrainingDiverged
from marlbench.evaluation import evaluate, measure_latency, summarize
from marlbench.fsutil import (
    check_writable_dir,
    io_step,
    path_lock,
    publish_dir,
    remove_dead_staging,
    write_json,
)
from marlbench.plugins import Registry, registry
from marlbench.progress import Reporter
from marlbench.provenance import code_commit, command_line, package_versions

DEFAULT_RESULTS = Path("results")
EVAL_EPISODES = 30  # paper §5.2: "evaluated over 30 episodes"
ONLINE = "online"  # the <dataset> part of an online algorithm's results path
# Torch threads per phase when --threads is not given. `python bench/s4_speed.py
# --thread-sweep` on the 2-core reference machine with other jobs running (MADS4 defaults,
# rware-small-6ag): train step 1.24 s with 1 thread vs 12.0 s with 2; policy step 1.5 vs
# 8.6 ms at batch 1 and 6.4 vs 72 ms at 16 parallel episodes. A second thread pays only when
# a core is free for it, and evaluation's batched steps are too small to gain much even then:
# evaluation runs on 1 thread; training on 1 thread on machines of 2 cores or fewer, torch's
# default (one per core) on larger ones.
EVAL_THREADS: int | None = 1
TRAIN_THREADS: int | None = 1 if (os.cpu_count() or 1) <= 2 else None


@contextlib.contextmanager
def phase_threads(explicit: int | None, default: int | None):
    """Torch threads for one phase: `--threads` when given, else the phase's `default`
    (None: torch's own), restored afterwards."""
    if explicit or default is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(default)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def results_root(root: Path | str | None = None) -> Path:
    """Explicit root, else $MARLBENCH_RESULTS, else ./results."""
    return Path(root or os.environ.get("MARLBENCH_RESULTS") or DEFAULT_RESULTS)


_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=@-]*")


def cell_dir(root: Path | str | None, env: str, dataset: str, algo: str, seed: int) -> Path:
    return results_root(root) / env / dataset / algo / f"seed-{seed}"


def is_complete(path: Path) -> bool:
    return (path / "run.json").is_file()


@dataclass(frozen=True)
class RunOptions:
    """How to run a cell: everything `marlbench run` takes besides the cell's names. A sweep
    shares one `RunOptions` between all its cells. Values are checked by meaning on creation,
    so a bad one fails before any work starts."""

    steps: int | None = None  # default: the algorithm config's `steps`
    eval_episodes: int = EVAL_EPISODES
    eval_parallel: int = 10
    episodes: int | None = None  # dataset size when it has to be collected
    device: str = "cpu"
    overrides: Mapping[str, Any] = field(default_factory=dict)
    results_root: Path | None = None
    datasets_root: Path | None = None
    overwrite: bool = False
    log_every: int = 100
    threads: int | None = None
    greedy: bool = False  # evaluate with argmax actions instead of sampling
    # Results folder of the algorithm, default its name: a variant (e.g. `--set order=random`)
    # gets a column of its own in `compare` instead of mixing with the default's runs.
    label: str | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "eval_episodes", "eval_parallel", "episodes", "log_every",
                     "threads"):
            value = getattr(self, name)
            optional = name in ("steps", "episodes", "threads")
            if optional and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag} must be a positive integer (got {value!r})")
        if not isinstance(self.device, str) or not self.device.strip():
            raise ConfigError(f"--device must name a torch device (got {self.device!r})")
        if self.label is not None and not _LABEL.fullmatch(self.label):
            raise ConfigError(f"--label must be a folder name of letters, digits and ._+=@- "
                              f"(got {self.label!r})")


@dataclass(frozen=True, kw_only=True)
class RunRequest(RunOptions):
    """One cell (algorithm, env, dataset, seed) and the options it runs with."""

    algo: str
    env: str
    dataset: str | None = None  # default: the env's default dataset
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_seed(self.seed)

    @classmethod
    def of(cls, options: RunOptions, *, algo: str, env: str, dataset: str | None,
           seed: int) -> RunRequest:
        return cls(algo=algo, env=env, dataset=dataset, seed=seed,
                   **{f.name: getattr(options, f.name) for f in fields(RunOptions)})

    @property
    def options(self) -> RunOptions:
        return RunOptions(**{f.name: getattr(self, f.name) for f in fields(RunOptions)})


def torch_device(name: str) -> torch.device:
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise MarlbenchError(f"invalid --device {name!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MarlbenchError(f"--device {name}: CUDA is not available on this machine")
    return dev


def seed_everything(seed: int) -> None:
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_run(path: Path | str, device: str = "cpu",
             reg: Registry | None = None) -> tuple[Algorithm, AlgorithmSpec, EnvSpec]:
    """Rebuild the trained algorithm of a completed results folder from its checkpoint."""
    path = Path(path)
    if not is_complete(path):
        raise MarlbenchError(f"{path} is not a completed run (no run.json)")
    reg = reg or registry()
    summary = json.loads((path / "run.json").read_text())
    algo_spec, env_spec = reg.algorithm(summary["algo"]), reg.environment(summary["env"])
    config = build_config(algo_spec.config_cls, json.loads((path / "config.json").read_text()))
    algo = algo_spec.cls(config, env_spec.info, torch_device(device), summary["seed"])
    checkpoint.load(path / "model.safetensors", algo_spec.name, algo)
    return algo, algo_spec, env_spec


def parameter_count(algo: Algorithm) -> int:
    seen, total = set(), 0
    for module in algo.modules().values():
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


# ------------------------------------------------------------------------------------------------
# The plugin contract, checked where the runner relies on it (marlbench.api)
# ------------------------------------------------------------------------------------------------


def _check_constructed(spec: AlgorithmSpec, algo: Algorithm) -> None:
    missing = [a for a in ("config", "env", "device", "seed") if not hasattr(algo, a)]
    if missing:
        raise ContractError(
            f"plugin contract: {spec.cls.__qualname__}.__init__ of {spec.name!r} must call "
            "super().__init__(config, env, device, seed) (marlbench.api.Algorithm); "
            f"missing attribute(s): {', '.join(missing)}")


def _checked_metrics(spec: AlgorithmSpec, metrics: Any) -> dict[str, float]:
    rule = (f"plugin contract: {spec.cls.__qualname__}.update() of {spec.name!r} must return a "
            "mapping of scalar metrics that includes 'loss' (marlbench.api.Algorithm.update)")
    if not isinstance(metrics, Mapping):
        raise ContractError(f"{rule}; got {type(metrics).__name__}")
    if "loss" not in metrics:
        raise ContractError(f"{rule}; got keys {sorted(metrics) or 'none'}")
    try:
        return {str(k): float(v) for k, v in metrics.items()}
    except (TypeError, ValueError) as exc:
        raise ContractError(f"{rule}; a value is not a scalar ({exc})") from None


class CheckedPolicy(Policy):
    """Wraps a plugin's policy and checks each `act` against the contract: int actions of shape
    [B, n_agents], each one available."""

    def __init__(self, inner: Policy, info: EnvInfo, algo: str):
        self.inner, self.info, self.algo = inner, info, algo

    def reset(self, n_envs: int) -> None:
        self.inner.reset(n_envs)

    def observe(self, rewards: np.ndarray) -> None:
        self.inner.observe(rewards)

    def act(self, obs: np.ndarray, state: np.ndarray, avail: np.ndarray) -> np.ndarray:
        actions = np.asarray(self.inner.act(obs, state, avail))
        rule = (f"plugin contract: {type(self.inner).__qualname__}.act of {self.algo!r} must "
                f"return integer actions of shape [B, n_agents] = {list(obs.shape[:2])} "
                "(marlbench.api.Policy.act)")
        if actions.shape != obs.shape[:2] or not np.issubdtype(actions.dtype, np.integer):
            raise ContractError(f"{rule}; got {actions.dtype} of shape {list(actions.shape)}")
        if (actions < 0).any() or (actions >= self.info.n_actions).any() or not np.all(
                np.take_along_axis(avail, actions[..., None], axis=-1)):
            raise ContractError(f"{rule}, each one available (avail mask); it chose an "
                                "unavailable or out-of-range action")
        return actions


class _Snapshot:
    """In-memory copy of the last weights that produced a finite loss."""

    def __init__(self) -> None:
        self.step, self.state = 0, None

    def take(self, algo: Algorithm, step: int) -> None:
        self.step = step
        self.state = {m: copy.deepcopy(mod.state_dict()) for m, mod in algo.modules().items()}

    def restore(self, algo: Algorithm) -> None:
        if self.state is not None:
            for m, mod in algo.modules().items():
                mod.load_state_dict(self.state[m])


def run(req: RunRequest, reporter: Reporter | None = None,
        reg: Registry | None = None, *, lock: bool = True) -> dict[str, Any]:
    """Run one cell and return its run.json summary.

    Every name, option and config value is checked before any work. The cell is then locked
    (`lock=False`: the caller holds the lock, as a sweep cell does): a second process running
    the same cell stops at once with `BusyError` instead of training for nothing. Staging
    folders of killed runs of this cell are removed.
    """
    reporter = reporter or Reporter()
    reg = reg or registry()
    algo_spec, env_spec = reg.algorithm(req.algo), reg.environment(req.env)
    device = torch_device(req.device)
    # Validate the config before any expensive work (collection, loading).
    config = build_config(algo_spec.config_cls, algo_spec.preset, req.overrides)
    steps = req.steps if req.steps is not None else config_steps(algo_spec, config)
    # A simulator that is missing (an optional extra) or cannot run this task fails here, not
    # after a dataset was collected or a model trained.
    env_spec.factory().close()
    if algo_spec.offline:
        dataset_arg = req.dataset or env_spec.default_dataset
        dataset_name, dataset_path = resolve_dataset(reg, env_spec, dataset_arg,
                                                     episodes=req.episodes,
                                                     root=req.datasets_root, collect=False)
    elif req.dataset:
        raise MarlbenchError(f"{algo_spec.name} trains online in the environment; --dataset "
                             "does not apply to it")
    else:
        dataset_name, dataset_path = ONLINE, None
    final = cell_dir(req.results_root, env_spec.name, dataset_name,
                     req.label or algo_spec.name, req.seed)
    _refuse_existing(final, req.overwrite)
    check_writable_dir(final.parent, "results")
    if dataset_path is not None and not dataset_path.exists():
        check_writable_dir(dataset_path.parent, "datasets")
    if req.threads or TRAIN_THREADS:  # --threads, else the training default (TRAIN_THREADS)
        torch.set_num_threads(req.threads or TRAIN_THREADS)
    with path_lock(final, wait=False, what=f"results {final}") if lock \
            else contextlib.nullcontext():
        remove_dead_staging(final)
        _refuse_existing(final, req.overwrite)  # finished meanwhile by another process
        if dataset_path is not None and not dataset_path.exists():
            dataset_name, dataset_path = resolve_dataset(
                reg, env_spec, dataset_arg, episodes=req.episodes, root=req.datasets_root,
                reporter=reporter)
        data = OfflineDataset.load(dataset_path, env_spec.info) if dataset_path else None
        summary = _stage_and_publish(req, reg, algo_spec, env_spec, config, steps, data,
                                     dataset_name, final, device, reporter)
    ctx = RunContext(algo_spec.name, env_spec.name, dataset_name, req.seed, final,
                     to_dict(config))
    reg.broadcast("marlbench_run_finished", run=ctx, summary=summary)
    reporter.info(f"results written to {final}")
    return summary


def config_steps(algo_spec: AlgorithmSpec, config: Any) -> int:
    steps = getattr(config, "steps", None)
    if steps is None:
        raise ContractError(
            f"plugin contract: {algo_spec.config_cls.__qualname__} (config of "
            f"{algo_spec.name!r}) has no `steps` field, the default training budget the runner "
            "needs (marlbench.api.Algorithm.Config); add one or pass --steps")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be a positive integer (got {steps!r})")
    return steps


def _refuse_existing(final: Path, overwrite: bool) -> None:
    if final.exists() and not overwrite:
        state = "complete" if is_complete(final) else "incomplete"
        raise MarlbenchError(f"results already exist at {final} ({state}); pass --overwrite "
                             "to replace them")


def _stage_and_publish(req: RunRequest, reg: Registry, algo_spec: AlgorithmSpec,
                       env_spec: EnvSpec, config: Any, steps: int, data: OfflineDataset | None,
                       dataset_name: str, final: Path, device: torch.device,
                       reporter: Reporter, *, algo: Algorithm | None = None,
                       extra_summary: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train, evaluate and write into a staging folder, then publish it as `final`. `algo`:
    an algorithm already built (and started, e.g. from another run's weights) instead of a
    fresh one; `extra_summary`: run.json entries to add or replace (e.g. provenance of the
    run it started from). `marlbench finetune` uses both."""
    staging = final.with_name(f".{final.name}.staging-{os.getpid()}")
    failed = final.with_name(f"{final.name}.failed")
    try:  # the staging folder is removed on any exit (Ctrl-C or SIGTERM included)
        with io_step("create the staging folder", staging):
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        with io_step("write results into", staging):
            summary = _train_and_evaluate(req, reg, algo_spec, env_spec, config, steps, data,
                                          dataset_name, staging, failed, device, reporter,
                                          algo, extra_summary)
        with io_step("publish the results folder", final):
            publish_dir(staging, final, overwrite=req.overwrite)
    except TrainingDiverged:
        shutil.rmtree(failed, ignore_errors=True)
        os.replace(staging, failed)
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary


def _train_and_evaluate(req: RunRequest, reg: Registry, algo_spec: AlgorithmSpec,
                        env_spec: EnvSpec, config: Any, steps: int,
                        data: OfflineDataset | None,
                        dataset_name: str, out: Path, failed: Path, device: torch.device,
                        reporter: Reporter, algo: Algorithm | None = None,
                        extra_summary: Mapping[str, Any] | None = None) -> dict[str, Any]:
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if algo is None:
        seed_everything(req.seed)
        algo = algo_spec.cls(config, env_spec.info, device, req.seed)
    _check_constructed(algo_spec, algo)
    if data is None:
        algo.setup_online(env_spec)
    else:
        algo.setup(data)
    write_json(out / "config.json", to_dict(config))
    ctx = RunContext(algo_spec.name, env_spec.name, dataset_name, req.seed, out, to_dict(config))
    reg.broadcast("marlbench_run_started", run=ctx)

    # -- train ---------------------------------------------------------------------------------
    snapshot, sums, count = _Snapshot(), {}, 0
    snapshot.take(algo, 0)
    checkpoint_every = max(1, min(1000, steps // 10))
    t0 = time.perf_counter()
    last_metrics: dict[str, float] = {}
    with open(out / "metrics.jsonl", "w") as log, \
            reporter.task(f"train {algo_spec.name} on {env_spec.name}/{dataset_name}",
                          total=steps) as task:
        for step in range(1, steps + 1):
            metrics = _checked_metrics(algo_spec, algo.update())
            if not all(math.isfinite(v) for v in metrics.values()):
                bad = ", ".join(k for k, v in metrics.items() if not math.isfinite(v))
                snapshot.restore(algo)
                checkpoint.save(out / "model.last-good.safetensors", algo_spec.name, algo)
                raise TrainingDiverged(
                    f"{bad} became non-finite at training step {step}; stopped. The last good "
                    f"checkpoint (step {snapshot.step}) is kept in {failed}")
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            if step % checkpoint_every == 0:
                snapshot.take(algo, step)
            if step % req.log_every == 0 or step == steps:
                last_metrics = {k: v / count for k, v in sums.items()}
                row = {"step": step, "seconds": round(time.perf_counter() - t0, 3),
                       **last_metrics}
                log.write(json.dumps(row) + "\n")
                log.flush()
                reg.broadcast("marlbench_train_metrics", run=ctx, step=step,
                              metrics=last_metrics)
                task.note(f"loss {last_metrics.get('loss', float('nan')):.4f}")
                sums, count = {}, 0
            task.advance()
    train_seconds = time.perf_counter() - t0
    checkpoint.save(out / "model.safetensors", algo_spec.name, algo)

    # -- evaluate ------------------------------------------------------------------------------
    t1 = time.perf_counter()
    policy = CheckedPolicy(algo.policy(greedy=req.greedy, seed=req.seed), env_spec.info,
                           algo_spec.name)

    def on_episode(r):
        reg.broadcast("marlbench_eval_episode", run=ctx, episode=r.to_dict())

    with phase_threads(req.threads, EVAL_THREADS):
        episodes = evaluate(env_spec, policy, req.eval_episodes, req.seed, req.eval_parallel,
                            reporter, on_episode)
    eval_summary = summarize(env_spec, episodes, time.perf_counter() - t1)
    write_json(out / "eval.json", {"summary": eval_summary,
                                   "episodes": [e.to_dict() for e in episodes]})
    # The policy's own latency: the contract was checked on every step of the evaluation.
    with phase_threads(req.threads, EVAL_THREADS):
        latency = measure_latency(env_spec, algo.policy(greedy=req.greedy, seed=req.seed),
                                  steps=min(200, env_spec.info.episode_limit), seed=req.seed)
    algo_origin = reg.algorithms[algo_spec.name][1]
    summary = {
        "status": "complete",
        "algo": algo_spec.name, "label": req.label, "env": env_spec.name,
        "dataset": dataset_name, "seed": req.seed,
        "algorithm": {"class": f"{algo_spec.cls.__module__}.{algo_spec.cls.__qualname__}",
                      "plugin": str(algo_origin), "execution": algo_spec.execution,
                      "uses_global_state": algo_spec.uses_state(config),
                      "paper": algo_spec.paper},
        "environment": {"version": env_spec.version, **env_spec.info.to_dict()},
        "dataset_card": None if data is None else {k: data.card.get(k) for k in (
            "sha256", "quality", "behaviour", "seed", "episodes", "steps", "return_mean",
            "return_std", "return_max", "win_rate", "reference_returns")},
        "dataset_path": None if data is None else str(data.path),
        "train": {"steps": steps, "seconds": round(train_seconds, 2),
                  "steps_per_second": round(steps / max(train_seconds, 1e-9), 2),
                  "final_metrics": last_metrics},
        "eval": {**eval_summary, "actions": "greedy" if req.greedy else "sampled"},
        "inference_latency": latency,
        "parameters": parameter_count(algo),
        "device": str(device), "torch_threads": torch.get_num_threads(),
        "code_commit": code_commit(), "packages": package_versions(),
        "command": command_line(), "host": socket.gethostname(),
        "started_at": started, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    summary.update(extra_summary or {})
    write_json(out / "run.json", summary)
    return summary
