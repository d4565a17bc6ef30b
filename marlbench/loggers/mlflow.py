"""MLflow tracker (``--log mlflow``, extra ``mlflow``: the ``mlflow-skinny`` client).

By default each run goes to a local MLflow file store, ``<logs>/mlruns`` (browse it with
``mlflow ui --backend-store-uri <results>/logs/mlruns``, which needs the full ``mlflow``
package); ``MLFLOW_TRACKING_URI`` points it elsewhere (a server, or ``sqlite:///mlflow.db`` with
sqlalchemy and alembic installed). MLflow 3 keeps the file store in maintenance mode behind
``MLFLOW_ALLOW_FILE_STORE``; marlbench sets that for its own default store only. The experiment
is ``MLFLOW_EXPERIMENT_NAME`` (default ``marlbench``). Logged: the config as params, the cell as
tags, ``train/<metric>`` against the update step, ``eval/return`` ... against the episode index,
the headline numbers when the run completes. A run that raised is marked FAILED; one whose
process was killed is marked KILLED when the cell is next attempted.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from marlbench.api import LoggerSpec, RunContext, hookimpl
from marlbench.loggers import (
    RunLogger,
    episode_scalars,
    flat,
    lifecycle_hooks,
    log_root,
    run_key,
    run_name,
    summary_scalars,
)

CELL_TAG = "marlbench.cell"
_BATCH = 100  # MLflow's limit on params per log_batch call


def tracking_uri(run: RunContext) -> str:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return (log_root(run) / "mlruns").absolute().as_uri()


class MLflowLogger(RunLogger):
    name = "mlflow"

    def open(self, run: RunContext) -> Any:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri(run))
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "marlbench")
        experiment = client.get_experiment_by_name(name)
        experiment_id = (experiment.experiment_id if experiment is not None
                         else client.create_experiment(name))
        key = str(run_key(run))
        # An attempt still RUNNING is one whose process died (cells run under a lock).
        for stale in client.search_runs([experiment_id],
                                        f"tags.`{CELL_TAG}` = '{key}' and "
                                        "attributes.status = 'RUNNING'"):
            client.set_terminated(stale.info.run_id, status="KILLED")
        active = client.create_run(experiment_id, run_name=run_name(run), tags={
            CELL_TAG: key, "marlbench.algo": run.algo, "marlbench.env": run.env,
            "marlbench.dataset": run.dataset, "marlbench.seed": str(run.seed)})
        run_id = active.info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in flat(run.config).items()]
        for i in range(0, len(params), _BATCH):
            client.log_batch(run_id, params=params[i:i + _BATCH])
        return client, run_id

    def _metrics(self, handle, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        client, run_id = handle
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def log_metrics(self, handle, step: int, metrics: Mapping[str, float]) -> None:
        self._metrics(handle, {f"train/{k}": v for k, v in metrics.items()}, step)

    def log_episode(self, handle, episode: Mapping[str, Any]) -> None:
        self._metrics(handle, episode_scalars(episode), int(episode["episode"]))

    def close(self, handle, summary: Mapping[str, Any] | None) -> None:
        client, run_id = handle
        if summary is not None:
            step = int((summary.get("train") or {}).get("steps") or 0)
            self._metrics(handle, {f"summary/{k}": v for k, v in
                                   summary_scalars(summary).items()}, step)
        client.set_terminated(run_id, status="FINISHED" if summary is not None else "FAILED")


_logger = MLflowLogger()
(marlbench_run_started, marlbench_train_metrics, marlbench_eval_episode,
 marlbench_run_finished) = lifecycle_hooks(_logger)


@hookimpl
def marlbench_loggers():
    return [LoggerSpec("mlflow", "MLflow runs (local file store <results>/logs/mlruns)",
                       requires=("mlflow",), extra="mlflow")]
