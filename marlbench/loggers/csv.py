"""CSV tracker (``--log csv``): plain files, no extra package.

Writes ``<logs>/csv/<env>/<dataset>/<algo>/seed-<k>/``: ``train.csv`` (one row per logging
interval: step and the averaged training metrics), ``eval.csv`` (one row per evaluation
episode) and, when the run completes, ``summary.csv`` (metric, value). The smallest complete
tracker plugin, and the README's worked example.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Mapping
from typing import Any

from marlbench.api import LoggerSpec, RunContext, hookimpl
from marlbench.fsutil import atomic_path
from marlbench.loggers import RunLogger, lifecycle_hooks, log_dir, summary_scalars


class _Table:
    """A CSV file whose columns are those of its first row (a later new column is dropped
    with a note in the file's last column, never silently)."""

    def __init__(self, path):
        self.fh, self.writer = open(path, "w", newline=""), None

    def write(self, row: Mapping[str, Any]) -> None:
        if self.writer is None:
            self.writer = csv.DictWriter(self.fh, [*row, "dropped"], restval="")
            self.writer.writeheader()
        known = {k: v for k, v in row.items() if k in self.writer.fieldnames}
        dropped = sorted(set(row) - set(known))
        self.writer.writerow({**known, "dropped": " ".join(dropped)})
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


class CSVLogger(RunLogger):
    name = "csv"

    def open(self, run: RunContext) -> dict[str, Any]:
        folder = log_dir(run, self.name)
        shutil.rmtree(folder, ignore_errors=True)  # an earlier, unfinished attempt
        folder.mkdir(parents=True)
        return {"dir": folder, "train": _Table(folder / "train.csv"),
                "eval": _Table(folder / "eval.csv")}

    def log_metrics(self, handle, step: int, metrics: Mapping[str, float]) -> None:
        handle["train"].write({"step": step, **metrics})

    def log_episode(self, handle, episode: Mapping[str, Any]) -> None:
        handle["eval"].write(episode)

    def close(self, handle, summary: Mapping[str, Any] | None) -> None:
        handle["train"].close()
        handle["eval"].close()
        if summary is not None:
            with atomic_path(handle["dir"] / "summary.csv") as tmp, open(tmp, "w",
                                                                         newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["metric", "value"])
                writer.writerows(summary_scalars(summary).items())


_logger = CSVLogger()
(marlbench_run_started, marlbench_train_metrics, marlbench_eval_episode,
 marlbench_run_finished) = lifecycle_hooks(_logger)


@hookimpl
def marlbench_loggers():
    return [LoggerSpec("csv", "CSV files: train.csv, eval.csv, summary.csv per run")]
