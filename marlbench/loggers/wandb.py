"""Weights & Biases tracker (``--log wandb``, extra ``wandb``), offline by default.

Each run is a W&B run in ``<logs>/wandb/<env>/<dataset>/<algo>/seed-<k>/wandb/offline-run-*``
(nothing leaves the machine). Upload later with ``wandb sync <that folder>``, or log online
directly with ``WANDB_MODE=online`` (and a ``wandb login``). ``WANDB_PROJECT`` names the project
(default ``marlbench``); runs are grouped by ``<env>/<dataset>/<algo>``. Logged: the config,
``train/<metric>`` against the update step, every evaluation episode (``eval/return`` ...
against ``eval/episode``) and the headline numbers in the run summary.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from marlbench.api import LoggerSpec, RunContext, hookimpl
from marlbench.loggers import (
    RunLogger,
    episode_scalars,
    lifecycle_hooks,
    log_dir,
    log_root,
    run_key,
    run_name,
    summary_scalars,
)


class WandbLogger(RunLogger):
    name = "wandb"

    def open(self, run: RunContext) -> Any:
        import wandb

        folder = log_dir(run, self.name)
        folder.mkdir(parents=True, exist_ok=True)
        # W&B's own files (its settings, cache of artifacts) stay next to the logs unless the
        # user placed them elsewhere; nothing is written to the home folder.
        for var, sub in (("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"),
                         ("WANDB_DATA_DIR", "data")):
            os.environ.setdefault(var, str(log_root(run) / ".wandb" / sub))
        handle = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "marlbench"),
            dir=str(folder), name=run_name(run), group=str(run_key(run).parent),
            job_type="train", tags=[run.algo, run.env, run.dataset],
            config={"marlbench": {"algo": run.algo, "env": run.env, "dataset": run.dataset,
                                  "seed": run.seed}, **dict(run.config)},
            mode=os.environ.get("WANDB_MODE", "offline"),
            reinit="create_new",  # several runs in one process (inline sweeps)
            settings=wandb.Settings(console="off", x_disable_stats=True, silent=True))
        handle.define_metric("train/*", step_metric="train/step")
        handle.define_metric("eval/*", step_metric="eval/episode")
        return handle

    def log_metrics(self, handle, step: int, metrics: Mapping[str, float]) -> None:
        handle.log({"train/step": step, **{f"train/{k}": v for k, v in metrics.items()}})

    def log_episode(self, handle, episode: Mapping[str, Any]) -> None:
        handle.log({"eval/episode": int(episode["episode"]), **episode_scalars(episode)})

    def close(self, handle, summary: Mapping[str, Any] | None) -> None:
        if summary is not None:
            handle.summary.update(summary_scalars(summary))
        handle.finish(exit_code=0 if summary is not None else 1)


_logger = WandbLogger()
(marlbench_run_started, marlbench_train_metrics, marlbench_eval_episode,
 marlbench_run_finished) = lifecycle_hooks(_logger)


@hookimpl
def marlbench_loggers():
    return [LoggerSpec("wandb", "Weights & Biases runs (offline by default; wandb sync later)",
                       requires=("wandb",), extra="wandb")]
