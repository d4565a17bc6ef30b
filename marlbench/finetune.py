"""`marlbench finetune`: MADS4's second stage (paper §4.2, Algorithm 2) as a results cell.

    marlbench finetune --from RESULTS/<env>/<dataset>/<algo>/seed-K [--from-scratch]

continues a complete offline run of `<algo>` (mads4, ids4 or mads4-dec) on-policy in its env
and writes ``<results>/<env>/<dataset>/<algo>+ft/seed-S/`` (``<algo>+scratch`` with
``--from-scratch``: the same loop from a random initialisation, Fig. 2's baseline), where
``<results>`` is the root the offline run lives in unless ``--results`` says otherwise and S is
the offline run's seed unless ``--seed`` says otherwise. The folder holds the files of any run
(marlbench.runner): config.json (the fine-tuner's config, with the actor's MADS4 config and the
source folder inside), metrics.jsonl (the online learning curve: one row per update with
train_return, env_steps, ...), eval.json, model.safetensors and run.json, whose
``finetuned_from`` names the offline run (folder, checkpoint sha256, code commit, evaluation) and
whose ``dataset_card`` is the offline run's, so `compare` normalises both stages alike.

The algorithm is the `mads4_finetune` plugin; this module only checks the source, builds the
fine-tuner from it and hands it to the runner's staging/publishing (shared with `run`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from marlbench.config import build_config, to_dict
from marlbench.errors import CheckpointError, ConfigError, MarlbenchError
from marlbench.fsutil import check_writable_dir, path_lock, remove_dead_staging
from marlbench.plugins import Registry, registry
from marlbench.progress import Reporter
from marlbench.runner import (
    TRAIN_THREADS,
    RunContext,
    RunOptions,
    RunRequest,
    _refuse_existing,
    _stage_and_publish,
    cell_dir,
    is_complete,
    load_run,
    seed_everything,
    torch_device,
)

FILES = ("config.json", "model.safetensors", "eval.json")  # besides run.json


@dataclass(frozen=True, kw_only=True)
class FinetuneRequest(RunOptions):
    """The offline run to start from, and the run's options (the one `RunOptions` type that
    `run` and `sweep` use; `episodes` and `datasets_root` do not apply: no dataset)."""

    source: Path  # a complete offline MADS4 results folder (…/<algo>/seed-K)
    scratch: bool = False  # Fig. 2's baseline: random initialisation
    env: str | None = None  # when given, the source must be a run of this env
    seed: int | None = None  # default: the source run's seed
    # steps: default the fine-tuner config's `steps`; results_root: default the source run's
    log_every: int = 1  # one curve point per update


def read_source(path: Path, reg: Registry, env: str | None = None) -> dict[str, Any]:
    """The run.json of a complete offline run the fine-tuner can start from, or one clear
    error: missing folder, incomplete run, another algorithm, another env."""
    if not path.is_dir():
        raise MarlbenchError(f"--from {path} does not exist or is not a folder")
    if not is_complete(path):
        raise MarlbenchError(f"--from {path} is not a complete run (no run.json)")
    try:
        summary = json.loads((path / "run.json").read_text())
        algo, run_env = summary["algo"], summary["env"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MarlbenchError(f"--from {path}: unreadable run.json ({exc})") from None
    try:
        reg.stage_of(algo)
    except MarlbenchError as exc:
        raise MarlbenchError(f"--from {path} is a run of {algo!r}: {exc}") from None
    if env is not None and env != run_env:
        raise MarlbenchError(f"--from {path} is a run of {run_env}, not {env}")
    missing = [f for f in FILES if not (path / f).is_file()]
    if missing:
        raise MarlbenchError(f"--from {path} is not a complete run (missing "
                             f"{', '.join(missing)})")
    reg.environment(run_env)  # an env whose plugin is gone fails here, by name
    return summary


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def finetune(req: FinetuneRequest, reporter: Reporter | None = None,
             reg: Registry | None = None) -> dict[str, Any]:
    """Fine-tune (or train from scratch) from `req.source`; returns the new run.json summary."""
    reporter = reporter or Reporter()
    reg = reg or registry()
    fixed = sorted({"source", "actor", "actor_algo", "init"} & set(req.overrides))
    if fixed:
        raise ConfigError(f"--set {', '.join(fixed)}: set by --from / --from-scratch, not an "
                          "option")
    source = Path(req.source).resolve()
    summary = read_source(source, reg, req.env)
    spec = reg.stage_of(summary["algo"], req.scratch)
    env_spec = reg.environment(summary["env"])
    device = torch_device(req.device)
    try:
        offline, _, _ = load_run(source, req.device, reg)
    except CheckpointError as exc:
        raise MarlbenchError(f"--from {source}: {exc}") from None
    config = build_config(spec.config_cls, spec.preset, dict(req.overrides),
                          {"source": str(source), "actor": to_dict(offline.config),
                           "actor_algo": summary["algo"]})
    steps = req.steps if req.steps is not None else config.steps
    if steps < 1:
        raise ConfigError(f"--steps must be a positive integer (got {steps})")
    seed = summary["seed"] if req.seed is None else req.seed
    root = req.results_root if req.results_root is not None else source.parents[3]
    dataset = summary["dataset"]
    final = cell_dir(root, env_spec.name, dataset, spec.name, seed)
    run_req = RunRequest.of(replace(req, steps=steps, results_root=root), algo=spec.name,
                            env=env_spec.name, dataset=None, seed=seed)
    _refuse_existing(final, req.overwrite)
    check_writable_dir(final.parent, "results")
    env_spec.factory().close()
    if req.threads or TRAIN_THREADS:  # --threads, else the training default, as in `run`
        torch.set_num_threads(req.threads or TRAIN_THREADS)
    seed_everything(seed)
    algo = spec.cls(config, env_spec.info, device, seed)
    algo.adopt(offline)
    provenance = {
        "finetuned_from": {
            "path": str(source), "algo": summary["algo"], "seed": summary["seed"],
            "checkpoint_sha256": _sha256(source / "model.safetensors"),
            "code_commit": summary.get("code_commit"), "eval": summary.get("eval"),
            "train_steps": (summary.get("train") or {}).get("steps"),
            "init": config.init},
        "dataset_card": summary.get("dataset_card"),
        "dataset_path": summary.get("dataset_path"),
    }
    with path_lock(final, wait=False, what=f"results {final}"):
        remove_dead_staging(final)
        _refuse_existing(final, req.overwrite)  # finished meanwhile by another process
        result = _stage_and_publish(run_req, reg, spec, env_spec, config, steps, None, dataset,
                                    final, device, reporter, algo=algo,
                                    extra_summary=provenance)
    ctx = RunContext(spec.name, env_spec.name, dataset, seed, final, to_dict(config))
    reg.broadcast("marlbench_run_finished", run=ctx, summary=result)
    reporter.info(f"results written to {final}")
    return result

