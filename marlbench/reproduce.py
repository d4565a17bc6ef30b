"""`marlbench reproduce PRESET`: a paper's benchmark as one resumable command.

A preset is a plain TOML file shipped in ``marlbench/presets/`` (or any path): a list of
*parts*, each a grid of algorithms x envs x datasets x seeds that feeds one table or figure of
the paper, with options for every cell of the part (``set``), a results ``label`` for variants
(so `compare` gives them their own column), and per-algorithm training budgets (``cpu``: the
algorithms' defaults; ``paper``: the budgets the papers report, for GPU users). Offline parts
run through the sweep machinery (`marlbench.sweep.plan` / `sweep`: locked, resumable cells on
any executor); ``stage = "finetune"`` parts continue every complete offline run of their
``from`` part with MADS4's second stage (`marlbench.finetune`).

The cost estimate of ``--dry-run`` comes from measured cells only: completed runs of the same
algorithm (and label) under the results root, on the same env when there is one, otherwise on
another env scaled by the ratio of agents (the per-step work of every algorithm here grows
with the agent count), each scaled by its training steps. Cells with no measurement are
counted and reported as such, never guessed.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from marlbench.compare.claims import KINDS, Claim
from marlbench.errors import ConfigError, UnknownNameError
from marlbench.runner import EVAL_EPISODES, RunOptions, results_root

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

BUDGETS = ("cpu", "paper")
_CLAIM_KEYS = {"text", "paper", "kind", "algo", "other", "part", "envs", "reason", "source",
               "measure"}
_PART_KEYS = {"name", "feeds", "algos", "envs", "datasets", "set", "label", "stage", "from",
              "scratch", "steps"}


@dataclass(frozen=True)
class Part:
    """One grid of a preset and the table or figure of the paper it feeds."""

    name: str
    feeds: str
    algos: tuple[str, ...]
    envs: tuple[str, ...] = ()
    datasets: tuple[str, ...] = ()
    overrides: dict[str, Any] = field(default_factory=dict)  # `set`: --set for every cell
    label: str | None = None  # results folder instead of the algorithm's name (one algo only)
    stage: str = "offline"  # or "finetune": continue the runs of part `source`
    source: str | None = None  # `from`: the offline part a finetune part continues
    scratch: bool = False  # finetune part: random initialisation instead (Fig. 2 baseline)
    steps: int | None = None  # finetune part: updates per run


@dataclass(frozen=True)
class Preset:
    name: str
    title: str
    paper: str
    seeds: str
    eval_episodes: int
    parts: tuple[Part, ...]
    budgets: dict[str, dict[str, dict[str, Any]]]  # budget -> algo -> config overrides
    claims: tuple[Claim, ...] = ()  # what the paper says this grid shows (REPRODUCTION.md)


def available() -> list[str]:
    """Names of the presets shipped with marlbench."""
    folder = resources.files("marlbench") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_preset(name: str) -> Preset:
    """A shipped preset by name, or a preset file by path; one clear error otherwise."""
    path = Path(name)
    if path.suffix == ".toml" and path.is_file():
        text, label = path.read_text(), path.stem
    else:
        if name not in available():
            raise UnknownNameError("preset", name, available())
        text = (resources.files("marlbench") / "presets" / f"{name}.toml").read_text()
        label = name
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"preset {name}: {exc}") from None
    return _parse(label, data)


def _parse(name: str, data: dict[str, Any]) -> Preset:
    def need(d: dict, key: str, where: str):
        if key not in d:
            raise ConfigError(f"preset {name}: {where} has no {key!r}")
        return d[key]

    parts = []
    for i, p in enumerate(need(data, "part", "the file")):
        where = f"part {i + 1}"
        unknown = sorted(set(p) - _PART_KEYS)
        if unknown:
            raise ConfigError(f"preset {name}: {where} has unknown keys {unknown}")
        part = Part(name=need(p, "name", where), feeds=p.get("feeds", ""),
                    algos=tuple(need(p, "algos", where)), envs=tuple(p.get("envs", ())),
                    datasets=tuple(p.get("datasets", ())), overrides=dict(p.get("set", {})),
                    label=p.get("label"), stage=p.get("stage", "offline"),
                    source=p.get("from"), scratch=bool(p.get("scratch", False)),
                    steps=p.get("steps"))
        if part.stage not in ("offline", "finetune"):
            raise ConfigError(f"preset {name}: {where} stage must be offline or finetune")
        if part.label and len(part.algos) != 1:
            raise ConfigError(f"preset {name}: {where} has a label and several algorithms")
        if part.stage == "offline" and not part.envs:
            raise ConfigError(f"preset {name}: {where} has no envs")
        if part.stage == "finetune" and part.source not in {q.name for q in parts}:
            raise ConfigError(f"preset {name}: {where} continues unknown part {part.source!r}")
        parts.append(part)
    budgets = {b: dict(data.get("budget", {}).get(b, {})) for b in BUDGETS}
    claims = tuple(_claim(name, i, c, parts) for i, c in enumerate(data.get("claim", ())))
    return Preset(name=name, title=need(data, "title", "the file"), paper=data.get("paper", ""),
                  seeds=str(data.get("seeds", "0-4")),
                  eval_episodes=int(data.get("eval_episodes", 30)), parts=tuple(parts),
                  budgets=budgets, claims=claims)


def _claim(preset: str, i: int, c: dict[str, Any], parts: list[Part]) -> Claim:
    """A claim's tasks are the envs x datasets of its part (a finetune part: its source's)."""
    where = f"preset {preset}: claim {i + 1}"
    unknown = sorted(set(c) - _CLAIM_KEYS)
    if unknown or c.get("kind") not in KINDS or "text" not in c:
        raise ConfigError(f"{where} needs text and a kind in {KINDS} (unknown keys: {unknown})")
    tasks: tuple[str, ...] = ()
    rivals: tuple[str, ...] = ()
    if c["kind"] == "faster":
        if not all(c.get(k) for k in ("algo", "other", "source", "measure")):
            raise ConfigError(f"{where} (faster) needs algo, other, source and measure")
        tasks = (c["measure"],)
    elif c["kind"] != "untestable":
        by_name = {p.name: p for p in parts}
        part = by_name.get(c.get("part", ""))
        pairwise = c["kind"] in ("greater", "similar")
        if part is None or not c.get("algo") or (pairwise and not c.get("other")):
            raise ConfigError(f"{where} needs an existing part, algo (and other unless kind "
                              "is best or not_worse)")
        while part.stage == "finetune":
            part = by_name[part.source]
        envs = c.get("envs", part.envs)
        if not set(envs) <= set(part.envs):
            raise ConfigError(f"{where}: envs {sorted(set(envs) - set(part.envs))} are not in "
                              f"part {part.name!r} ({', '.join(part.envs)})")
        tasks = tuple(f"{e}/{d}" for e in envs for d in (part.datasets or ("expert",)))
        if not pairwise:  # best / not_worse: against the other algorithms of its table
            rivals = tuple(a for a in (part.label,) if a) or part.algos
    return Claim(text=c["text"], paper=c.get("paper", ""), kind=c["kind"], algo=c.get("algo"),
                 other=c.get("other"), tasks=tasks,
                 rivals=tuple(a for a in rivals if a != c.get("algo")), reason=c.get("reason", ""),
                 source=c.get("source", ""))


# ------------------------------------------------------------------------------------------------
# Planning
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    """The cells of one offline part (sweep tasks) or one finetune part (source folders)."""

    part: Part
    tasks: list  # marlbench.cells.CellTask (offline) or FinetuneCell (finetune)


@dataclass(frozen=True)
class FinetuneCell:
    source: Path  # the offline run it continues
    target: Path  # where its results go

    @property
    def path(self) -> Path:
        return self.target


def cell_options(preset: Preset, part: Part, algo: str, budget: str, base: RunOptions
                 ) -> RunOptions:
    """The options of one algorithm's cells in a part: budget, then the part's `set`, then the
    user's --set (last wins)."""
    if budget not in BUDGETS:
        raise UnknownNameError("budget", budget, BUDGETS)
    overrides = {**preset.budgets[budget].get(algo, {}), **part.overrides, **base.overrides}
    # the preset's evaluation setting unless --eval-episodes was changed from the default
    eval_episodes = (preset.eval_episodes if base.eval_episodes == EVAL_EPISODES
                     else base.eval_episodes)
    return replace(base, overrides=overrides, label=part.label, eval_episodes=eval_episodes)


def plan_preset(reg, preset: Preset, seeds: list[int], budget: str, base: RunOptions,
                reporter=None, collect: bool = True) -> list[Planned]:
    """Every part's cells; names, options and datasets checked (and collected) first."""
    from marlbench.sweep import plan

    planned: list[Planned] = []
    by_name: dict[str, Planned] = {}
    for part in preset.parts:
        if part.stage == "offline":
            tasks = []
            for algo in part.algos:
                options = cell_options(preset, part, algo, budget, base)
                tasks += plan(reg, [algo], list(part.envs), list(part.datasets), seeds,
                              options, reporter, collect=collect)
        else:
            tasks = []
            for src in by_name[part.source].tasks:
                algo_dir = src.path.parent
                ft = reg.stage_of(src.cell.algo, part.scratch).name
                tasks.append(FinetuneCell(src.path, algo_dir.parent / ft / src.path.name))
        item = Planned(part, tasks)
        planned.append(item)
        by_name[part.name] = item
    return planned


# ------------------------------------------------------------------------------------------------
# Cost estimate (from measured cells only)
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    env: str
    n_agents: int
    seconds_per_step: float  # training
    eval_seconds_per_episode: float
    steps: int


def measurements(root: Path | None) -> dict[str, list[Measured]]:
    """Completed runs under the results root, by results folder name (algorithm or label);
    for a folder with none, the reference runs shipped in ``presets/cell_costs.json``."""
    found: dict[str, list[Measured]] = {}
    base = results_root(root)
    for run_json in base.glob("*/*/*/seed-*/run.json"):
        try:
            m = measured_run(json.loads(run_json.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # an unreadable run is compare's business, not the estimate's
        found.setdefault(run_json.parent.parent.name, []).append(m)
    shipped = json.loads((resources.files("marlbench") / "presets" / COSTS).read_text())
    for folder, rows in shipped["runs"].items():
        if folder not in found:
            found[folder] = [Measured(**row) for row in rows]
    return found


COSTS = "cell_costs.json"


def measured_run(summary: dict[str, Any]) -> Measured:
    """The cost figures of one run.json."""
    train, ev = summary["train"], summary["eval"]
    return Measured(env=summary["env"], n_agents=int(summary["environment"]["n_agents"]),
                    seconds_per_step=float(train["seconds"]) / max(int(train["steps"]), 1),
                    eval_seconds_per_episode=float(ev["seconds"]) / max(int(ev["episodes"]), 1),
                    steps=int(train["steps"]))


def estimate(folder: str, env: str, n_agents: int, steps: int, eval_episodes: int,
             measured: dict[str, list[Measured]], family_of: Callable[[str], str],
             algo: str | None = None) -> tuple[float | None, str]:
    """(seconds, basis) of one cell; None when nothing of this algorithm was measured. A
    labelled variant (`folder` != `algo`) with no runs of its own is costed as its algorithm
    (its options may change the cost: the basis says so).

    An unmeasured task is priced from the algorithm's runs on its own family (`family_of`:
    an env name's EnvSpec.family, e.g. rware, smax):
    a task with as many agents costs the same per step (RWARE's observations do not grow with
    the map); between or beyond measured agent counts the cost is the least-squares line in the
    agent count (the per-agent work plus a fixed part); with one agent count only, it scales in
    proportion. Another family's runs are a last resort, scaled in proportion."""
    runs, like = measured.get(folder, []), ""
    if not runs and algo and algo != folder and measured.get(algo):
        runs, like = measured[algo], f" (as {algo})"
    if not runs:
        return None, "no measurement"
    same = [m for m in runs if m.env == env]
    if same:
        return _cost(same, steps, eval_episodes), "measured" + like
    family = [m for m in runs if family_of(m.env) == family_of(env)]
    peers = [m for m in family if m.n_agents == n_agents]
    if peers:
        return _cost(peers, steps, eval_episodes), f"as {_envs(peers)}" + like
    counts = sorted({m.n_agents for m in family})
    if len(counts) >= 2:
        by_count = [[m for m in family if m.n_agents == c] for c in counts]
        per_count = [_cost(group, steps, eval_episodes) for group in by_count]
        slope, intercept = np.polyfit(counts, per_count, 1)
        seconds = slope * n_agents + intercept
        if seconds <= 0:  # a noisy line extrapolated below zero: scale the nearest count
            near = min(range(len(counts)), key=lambda i: abs(counts[i] - n_agents))
            seconds = per_count[near] * n_agents / counts[near]
        return float(seconds), f"fitted on {_envs(family)}" + like
    use = family or runs
    scale = n_agents / statistics.median(m.n_agents for m in use)
    return scale * _cost(use, steps, eval_episodes), f"scaled from {_envs(use)}" + like


def env_families(reg) -> Callable[[str], str]:
    """env name -> its EnvSpec.family; a task no longer installed is a family of its own."""
    def family_of(env: str) -> str:
        installed = reg.environments.get(env)
        return installed[0].family if installed else env
    return family_of


def _envs(runs: list[Measured]) -> str:
    return ", ".join(sorted({m.env for m in runs}))


def _cost(runs: list[Measured], steps: int, eval_episodes: int) -> float:
    """Median measured training and evaluation time of `runs`, at this budget."""
    per_step = statistics.median(m.seconds_per_step for m in runs)
    per_episode = statistics.median(m.eval_seconds_per_episode for m in runs)
    return per_step * steps + per_episode * eval_episodes


def cell_steps(reg, task) -> int:
    """Training steps a cell will run (the option, else its config's `steps`)."""
    from marlbench.config import build_config

    if task.options.steps is not None:
        return task.options.steps
    spec = reg.algorithm(task.cell.algo)
    return int(build_config(spec.config_cls, spec.preset, task.options.overrides).steps)


def finetune_steps(reg, part: Part) -> int:
    if part.steps is not None:
        return part.steps
    spec = reg.stage_of(part.algos[0], part.scratch)
    return int(spec.config_cls().steps)


def describe_cost(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


# ------------------------------------------------------------------------------------------------
# The reproduction report
# ------------------------------------------------------------------------------------------------


def report(presets: list[Preset], root: Path | None) -> str:
    """REPRODUCTION.md for `presets`, judged on the completed runs under the results root (or
    on those recorded by the leaderboards in it: `load_results`)."""
    from marlbench.compare import claims
    from marlbench.compare.results import leaderboard_folders, load_recorded_runs, load_results
    from marlbench.errors import NoRunsError

    base = results_root(root)
    boards_here = leaderboard_folders(base)
    if boards_here and any(base.glob("*/*/*/seed-*/run.json")):
        raise ConfigError(f"{base} holds both run folders and leaderboards "
                          f"({', '.join(b.name for b in boards_here)}): point --results at the "
                          "runs' root or at a folder of leaderboards only")
    try:
        results = load_recorded_runs(base) if boards_here else load_results(base)
        runs = results.runs
        boards = [b.name for b in results.boards]
        older = [b.name for b in results.older_boards]
    except NoRunsError:  # no completed runs yet: every claim is "not run"
        runs, boards, older = [], [], []
    sections = [(p.name, [claims.judge(c, runs, bench=_bench(base, c)) for c in p.claims])
                for p in presets]
    return claims.to_markdown(sections, base.name, boards, older)


def _bench(base: Path, claim: Claim) -> dict | None:
    """A speed claim's bench timings (its `source` under the results root), if measured."""
    if claim.kind != "faster" or not (base / claim.source).is_file():
        return None
    try:
        return json.loads((base / claim.source).read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{base / claim.source}: not a bench result ({exc})") from None
