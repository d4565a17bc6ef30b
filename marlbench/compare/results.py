"""Reading a results folder: completed runs, failed cells, and the filters of `compare`.

Only the files the runner and the sweep write are read (``run.json``, ``eval.json``,
``metrics.jsonl``, ``seed-<k>.error.json``); nothing here imports torch or a plugin, so any
results folder can be compared on any machine.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marlbench.errors import MarlbenchError, NoRunsError, UnknownNameError

_SEED_DIR = re.compile(r"^seed-(\d+)$")
_ERROR_FILE = re.compile(r"^seed-(\d+)\.error\.json$")


@dataclass(frozen=True)
class RunRecord:
    """One completed cell: an algorithm trained with one seed on one task (env, dataset)."""

    env: str
    dataset: str
    algo: str
    seed: int
    return_mean: float  # mean evaluation return of this run: the per-run score
    episode_returns: tuple[float, ...]
    train_steps: int
    code_commit: str | None
    dataset_sha256: str | None
    references: dict[str, float]  # fixed anchors from the dataset card: random, expert
    command: str
    path: Path | None  # None: read back from a leaderboard's comparison.json
    board: str = ""  # the leaderboard folder it was read back from (runs of one comparison)
    source_commit: str | None = None  # a fine-tuned run: the code commit of the run it continued
    continues: str | None = None  # and that run, as "<algo>/seed-<k>" of the same task

    @property
    def task(self) -> str:
        return f"{self.env}/{self.dataset}"

    def curve(self, metric: str = "loss") -> list[tuple[int, float]]:
        """(step, value) of a training metric from metrics.jsonl."""
        rows = [json.loads(line) for line in
                (self.path / "metrics.jsonl").read_text().splitlines() if line.strip()]
        return [(r["step"], r[metric]) for r in rows if metric in r]


@dataclass(frozen=True)
class FailedCell:
    env: str
    dataset: str
    algo: str
    seed: int
    error: str

    @property
    def task(self) -> str:
        return f"{self.env}/{self.dataset}"


@dataclass
class Results:
    runs: list[RunRecord]
    failed: list[FailedCell] = field(default_factory=list)
    root: Path | None = None
    boards: list[Path] = field(default_factory=list)  # the leaderboards the runs were read from
    older_boards: list[Path] = field(default_factory=list)  # leaderboards recording no runs


def load_results(root: Path | str, envs: Sequence[str] = (), algos: Sequence[str] = (),
                 datasets: Sequence[str] = ()) -> Results:
    """Every completed run under `root` (``<env>/<dataset>/<algo>/seed-<k>/run.json``),
    keeping only the given envs / algorithms / datasets when filters are set."""
    root = Path(root)
    if not root.is_dir():
        raise NoRunsError(f"results folder {root} does not exist")
    runs: list[RunRecord] = []
    failed: list[FailedCell] = []
    for algo_dir in sorted(p for p in root.glob("*/*/*") if p.is_dir()):
        env, dataset, algo = algo_dir.relative_to(root).parts
        complete = set()
        for child in sorted(algo_dir.iterdir()):
            m = _SEED_DIR.match(child.name)
            if m and (child / "run.json").is_file():
                runs.append(_read_run(child, env, dataset, algo, int(m[1])))
                complete.add(int(m[1]))
        for child in sorted(algo_dir.iterdir()):
            m = _ERROR_FILE.match(child.name)
            if m and int(m[1]) not in complete:
                error = json.loads(child.read_text()).get("error") or "unknown error"
                failed.append(FailedCell(env, dataset, algo, int(m[1]), error))
    if not runs:
        raise NoRunsError(f"no completed runs under {root} (a run is complete when its "
                             "run.json exists)")
    runs = _select(runs, envs, algos, datasets)
    failed = [f for f in failed if _keep(f, envs, algos, datasets)]
    return Results(runs, failed, root)


def _read_run(path: Path, env: str, dataset: str, algo: str, seed: int) -> RunRecord:
    try:
        summary = json.loads((path / "run.json").read_text())
        episodes = json.loads((path / "eval.json").read_text())["episodes"]
    except (OSError, ValueError, KeyError) as exc:
        raise MarlbenchError(f"unreadable run {path}: {exc}") from None
    card: dict[str, Any] = summary.get("dataset_card") or {}
    source: dict[str, Any] = summary.get("finetuned_from") or {}
    returns = tuple(float(e["return"]) for e in episodes)
    return RunRecord(env=env, dataset=dataset, algo=algo, seed=seed,
                     return_mean=float(summary["eval"]["return_mean"]),
                     episode_returns=returns, train_steps=int(summary["train"]["steps"]),
                     code_commit=summary.get("code_commit"),
                     dataset_sha256=card.get("sha256"),
                     references=dict(card.get("reference_returns") or {}),
                     command=summary.get("command", ""), path=path,
                     source_commit=source.get("code_commit"),
                     continues=f"{source['algo']}/seed-{source['seed']}" if source else None)


def leaderboard_folders(root: Path | str) -> list[Path]:
    """The `compare` outputs (folders with a comparison.json) at `root` or one level below."""
    root = Path(root)
    return [p.parent for p in sorted(root.glob("comparison.json"))
            + sorted(root.glob("*/comparison.json"))]


def load_recorded_runs(root: Path | str) -> Results:
    """The runs recorded by the leaderboards under `root` (e.g. the committed
    ``results/leaderboard``), for judging claims where the run folders are gone. Their
    ``path`` is None (no curves); two leaderboards may hold different runs of one cell (other
    options, same commit), so each run keeps its board's name."""
    folders = leaderboard_folders(root)
    if not folders:
        raise NoRunsError(f"no leaderboards (comparison.json) under {root}")
    runs, older = _leaderboard_runs([f / "comparison.json" for f in folders])
    return Results(runs, [], Path(root), [f for f in folders if f not in older], older)


def _leaderboard_runs(boards: Sequence[Path]) -> tuple[list[RunRecord], list[Path]]:
    runs: list[RunRecord] = []
    older = []
    for board in boards:
        try:
            doc = json.loads(board.read_text())
            if "runs" not in doc and "cells" in doc:
                older.append(board.parent)
                continue
            for rec in doc["runs"]:
                runs.append(RunRecord(**{**rec, "episode_returns": tuple(rec["episode_returns"]),
                                         "command": "", "path": None,
                                         "board": board.parent.name}))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise MarlbenchError(f"unreadable leaderboard {board} (written by `marlbench "
                                 f"compare` of this version?): {exc!r}") from None
    if not runs:
        raise NoRunsError(f"the leaderboards under {boards[0].parent.parent} record no runs")
    return runs, older


def _keep(item, envs, algos, datasets) -> bool:
    return ((not envs or item.env in envs) and (not algos or item.algo in algos)
            and (not datasets or item.dataset in datasets))


def _select(runs: list[RunRecord], envs, algos, datasets) -> list[RunRecord]:
    """Apply the filters; a filter value that matches nothing is an error with a suggestion."""
    for kind, wanted, attr in (("environment", envs, "env"), ("algorithm", algos, "algo"),
                               ("dataset", datasets, "dataset")):
        present = {getattr(r, attr) for r in runs}
        for name in wanted:
            if name not in present:
                raise UnknownNameError(f"{kind} in these results", name, present)
    kept = [r for r in runs if _keep(r, envs, algos, datasets)]
    if not kept:
        raise MarlbenchError("no runs match the filters (--envs, --algos, --datasets together)")
    return kept


ONLINE_METRIC = "train_return"  # online runs (MAPPO, MADS4 fine-tuning) log their rollouts' return


@dataclass(frozen=True)
class LearningCurve:
    """An online learning curve of one (task, algorithm) over its seeds: mean and standard
    deviation of `metric` at each logged point (the MADS4 paper's Fig. 2: "mean and standard
    deviations of average returns ... over 5 independent runs")."""

    task: str
    algo: str
    env_steps: tuple[float, ...]  # mean over seeds of the env steps at each point
    mean: tuple[float, ...]
    std: tuple[float, ...]
    seeds: int


def learning_curves(runs: Sequence[RunRecord], metric: str = ONLINE_METRIC
                    ) -> list[LearningCurve]:
    """One curve per (task, algo) whose runs logged `metric` with `env_steps`, cut to the
    shortest run of the group (runs of one cell share a budget)."""
    groups: dict[tuple[str, str], list[list[tuple[float, float]]]] = {}
    for run in runs:
        rows = [json.loads(line) for line in
                (run.path / "metrics.jsonl").read_text().splitlines() if line.strip()]
        points = [(r["env_steps"], r[metric]) for r in rows
                  if metric in r and "env_steps" in r]
        if points:
            groups.setdefault((run.task, run.algo), []).append(points)
    curves = []
    for (task, algo), series in sorted(groups.items()):
        length = min(len(s) for s in series)
        x = [[p[0] for p in s[:length]] for s in series]
        y = [[p[1] for p in s[:length]] for s in series]
        xs = [sum(col) / len(col) for col in zip(*x)]
        means = [sum(col) / len(col) for col in zip(*y)]
        stds = [(sum((v - m) ** 2 for v in col) / len(col)) ** 0.5
                for col, m in zip(zip(*y), means)]
        curves.append(LearningCurve(task, algo, tuple(xs), tuple(means), tuple(stds),
                                    len(series)))
    return curves
