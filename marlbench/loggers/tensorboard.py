"""TensorBoard tracker (``--log tensorboard``, extra ``tensorboard``).

Event files in ``<logs>/tensorboard/<env>/<dataset>/<algo>/seed-<k>/`` (``tensorboard --logdir
<results>/logs/tensorboard`` shows every run): ``train/<metric>`` against the update step,
``eval/return`` (and length, won, scaled returns) against the episode index, the run's headline
numbers (``summary/eval/return_mean`` ...) at the last update step when it completes, and the config
as text. Written with torch's ``SummaryWriter``, which needs the tensorboard package.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from typing import Any

from marlbench.api import LoggerSpec, RunContext, hookimpl
from marlbench.loggers import (
    RunLogger,
    episode_scalars,
    lifecycle_hooks,
    log_dir,
    run_name,
    summary_scalars,
)


class TensorBoardLogger(RunLogger):
    name = "tensorboard"

    def open(self, run: RunContext) -> Any:
        from torch.utils.tensorboard import SummaryWriter

        folder = log_dir(run, self.name)
        shutil.rmtree(folder, ignore_errors=True)  # an earlier, unfinished attempt
        writer = SummaryWriter(str(folder))
        writer.add_text("run", run_name(run))
        writer.add_text("config", "```\n" + json.dumps(dict(run.config), indent=2,
                                                       default=str) + "\n```")
        writer.last_step = 0
        return writer

    def log_metrics(self, writer, step: int, metrics: Mapping[str, float]) -> None:
        for k, v in metrics.items():
            writer.add_scalar(f"train/{k}", v, step)
        writer.last_step = step

    def log_episode(self, writer, episode: Mapping[str, Any]) -> None:
        for k, v in episode_scalars(episode).items():
            writer.add_scalar(k, v, int(episode["episode"]))

    def close(self, writer, summary: Mapping[str, Any] | None) -> None:
        if summary is not None:
            step = int((summary.get("train") or {}).get("steps") or writer.last_step)
            for k, v in summary_scalars(summary).items():
                writer.add_scalar(f"summary/{k}", v, step)
        writer.close()


_logger = TensorBoardLogger()
(marlbench_run_started, marlbench_train_metrics, marlbench_eval_episode,
 marlbench_run_finished) = lifecycle_hooks(_logger)


@hookimpl
def marlbench_loggers():
    return [LoggerSpec("tensorboard", "TensorBoard event files per run",
                       requires=("tensorboard",), extra="tensorboard")]
