"""From completed runs to a comparison: per-task tables with tests, aggregates, and warnings.

Nothing is dropped or mixed silently: a missing or failed cell, unequal seeds, runs of one task
made from different datasets, and runs from different code commits each produce a warning and
a mark in the tables. Normalised scores use each run's own dataset card (the random and expert
reference returns), so adding an algorithm never changes another algorithm's scores.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from marlbench.compare import stats
from marlbench.compare.results import FailedCell, Results, RunRecord
from marlbench.errors import MarlbenchError, UnknownNameError

PROFILE_POINTS = 101  # tau grid of the performance profile, 0 .. max(1, best score)

# Holm families of the per-task tests. "task": each task's algorithms against its best, the
# question one table row answers (the default); "table": every comparison of the table at once,
# which with few seeds can rarely show anything (5 vs 5 seeds: the smallest exact Mann-Whitney
# p is 0.0079, 0.056 after Holm over 7 comparisons).
HolmFamily = Literal["task", "table"]
HOLM_FAMILIES: tuple[str, ...] = ("task", "table")


@dataclass
class TableCell:
    """One algorithm on one task (a cell of the per-task table): its runs and its test against
    the task's best."""

    task: str
    algo: str
    runs: list[RunRecord]
    best: bool = False
    p_welch: float = math.nan
    p_mwu: float = math.nan
    p_welch_holm: float = math.nan
    p_mwu_holm: float = math.nan
    issues: list[str] = field(default_factory=list)  # provenance problems, shown as a mark

    @property
    def scores(self) -> np.ndarray:
        return np.array([r.return_mean for r in self.runs])

    @property
    def seeds(self) -> list[int]:
        return [r.seed for r in self.runs]

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def mean(self) -> float:
        return float(self.scores.mean())

    @property
    def std(self) -> float:
        return stats.sample_std(self.scores)

    @property
    def normalised(self) -> np.ndarray | None:
        """Per-run normalised scores, or None when a run's card has no usable references."""
        out = []
        for r in self.runs:
            lo, hi = r.references.get("random"), r.references.get("expert")
            if lo is None or hi is None or hi == lo:
                return None
            out.append(float(stats.normalise(r.return_mean, lo, hi)))
        return np.array(out)


@dataclass
class Comparison:
    tasks: list[str]
    algos: list[str]
    cells: dict[tuple[str, str], TableCell]  # (task, algo); absent = missing cell
    results: Results
    aggregate_tasks: list[str] = field(default_factory=list)
    aggregates: dict[str, dict[str, stats.Interval]] = field(default_factory=dict)
    improvements: list[tuple[str, str, stats.Interval]] = field(default_factory=list)
    profile_taus: np.ndarray | None = None
    profiles: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    alpha: float = stats.ALPHA
    reps: int = stats.BOOTSTRAP_REPS
    holm_family: HolmFamily = "task"

    def cell(self, task: str, algo: str) -> TableCell | None:
        return self.cells.get((task, algo))

    def failed(self, task: str, algo: str) -> list[FailedCell]:
        return [f for f in self.results.failed if f.task == task and f.algo == algo]

    def worse_welch(self, cell: TableCell) -> bool:
        return cell.p_welch_holm < self.alpha

    def worse_mwu(self, cell: TableCell) -> bool:
        return cell.p_mwu_holm < self.alpha

    def seeds_label(self, task: str) -> str:
        """'5' when every algorithm has the same number of seeds, else the count per algorithm."""
        counts = {a: self.cells[(task, a)].n if (task, a) in self.cells else 0
                  for a in self.algos}
        if len(set(counts.values())) == 1:
            return str(next(iter(counts.values())))
        return ", ".join(f"{a} {n}" for a, n in counts.items())

    def references(self, task: str) -> dict[str, float]:
        runs = [r for c in self.cells.values() if c.task == task for r in c.runs]
        return runs[0].references if runs else {}

    def dataset_hashes(self, task: str) -> list[str]:
        return sorted({r.dataset_sha256 or "?" for c in self.cells.values() if c.task == task
                       for r in c.runs})


def compare(results: Results, pairs: Sequence[tuple[str, str]] = (),
            algo_order: Sequence[str] = (), reps: int = stats.BOOTSTRAP_REPS,
            seed: int = 0, alpha: float = stats.ALPHA,
            holm_family: HolmFamily = "task", env_order: Sequence[str] = ()) -> Comparison:
    """Build every table of `marlbench compare` from `results`. `holm_family`: Holm-correct
    each task's tests together ("task") or every test of the table together ("table").
    `algo_order` / `env_order` put those columns / rows first, in that order (a paper's
    table order: tiny before small, 2 agents before 6); the rest follow by name."""
    if holm_family not in HOLM_FAMILIES:
        raise MarlbenchError(f"unknown Holm family {holm_family!r}: use "
                             f"{' or '.join(HOLM_FAMILIES)}")
    groups: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for r in results.runs:
        groups[(r.task, r.algo)].append(r)
    present = {a for _, a in groups}
    algos = [a for a in algo_order if a in present] + sorted(present - set(algo_order))
    rank = {env: i for i, env in enumerate(env_order)}
    tasks = sorted({t for t, _ in groups},
                   key=lambda t: (rank.get(t.split("/")[0], len(rank)), t))
    cells = {key: TableCell(*key, sorted(runs, key=lambda r: r.seed))
             for key, runs in groups.items()}
    comp = Comparison(tasks, algos, cells, results, alpha=alpha, reps=reps,
                      holm_family=holm_family)
    _test_against_best(comp)
    _check_coverage(comp)
    _check_provenance(comp)
    _aggregate(comp, pairs, reps, seed)
    return comp


# ------------------------------------------------------------------------------------------------
# Per task
# ------------------------------------------------------------------------------------------------


def _test_against_best(comp: Comparison) -> None:
    """Bold the best mean per task and test every other algorithm against it; Holm-correct
    each test's p-values within each task, or across the whole table (`comp.holm_family`)."""
    families: list[list[TableCell]] = []
    for task in comp.tasks:
        present = [comp.cells[(task, a)] for a in comp.algos if (task, a) in comp.cells]
        best = max(present, key=lambda c: c.mean)
        best.best = True
        tested = [c for c in present if c is not best]
        for cell in tested:
            cell.p_welch = stats.welch_p(cell.scores, best.scores)
            cell.p_mwu = stats.mann_whitney_p(cell.scores, best.scores)
        families.append(tested)
    if comp.holm_family == "table":
        families = [[c for family in families for c in family]]
    for family in families:
        for attr in ("p_welch", "p_mwu"):
            adjusted = stats.holm([getattr(c, attr) for c in family])
            for cell, p in zip(family, adjusted):
                setattr(cell, f"{attr}_holm", float(p))


def _check_coverage(comp: Comparison) -> None:
    for task in comp.tasks:
        for algo in comp.algos:
            failed = comp.failed(task, algo)
            for f in failed:
                comp.warnings.append(f"failed cell: {algo} on {task} seed {f.seed}: {f.error}")
            if (task, algo) not in comp.cells:
                comp.warnings.append(f"missing cell: {algo} has no completed run on {task}"
                                     + (" (every seed failed)" if failed else ""))
        present = [comp.cells[(task, a)] for a in comp.algos if (task, a) in comp.cells]
        all_seeds = sorted({s for c in present for s in c.seeds})
        for cell in present:
            missing = [s for s in all_seeds if s not in cell.seeds]
            if missing:
                comp.warnings.append(
                    f"unequal seeds on {task}: {cell.algo} has {cell.n} "
                    f"({_ints(cell.seeds)}), missing seed(s) {_ints(missing)} that other "
                    "algorithms have")
        for cell in present:
            if len({r.train_steps for r in cell.runs}) > 1:
                cell.issues.append("budget")
                steps = _ints(r.train_steps for r in cell.runs)
                comp.warnings.append(f"{cell.algo} on {task}: runs trained for different "
                                     f"numbers of steps ({steps})")
            episodes = {len(r.episode_returns) for r in cell.runs}
            if len(episodes) > 1:
                cell.issues.append("episodes")
                comp.warnings.append(f"{cell.algo} on {task}: runs evaluated on different "
                                     f"numbers of episodes ({_ints(episodes)})")


def _check_provenance(comp: Comparison) -> None:
    for task in comp.tasks:
        hashes = comp.dataset_hashes(task)
        if len(hashes) > 1:
            for cell in (c for c in comp.cells.values() if c.task == task):
                cell.issues.append("dataset")
            comp.warnings.append(f"{task}: runs were trained on {len(hashes)} different datasets "
                                 f"(sha256 {', '.join(h[:12] for h in hashes)}); the cells are "
                                 "not comparable")
    commits = Counter(r.code_commit or "unknown" for r in comp.results.runs)
    if len(commits) > 1:
        main, _ = commits.most_common(1)[0]
        for cell in comp.cells.values():
            if any((r.code_commit or "unknown") != main for r in cell.runs):
                cell.issues.append("commit")
        listing = ", ".join(f"{c[:12]}{'-dirty' if c.endswith('-dirty') else ''} ({n} runs)"
                            for c, n in commits.most_common())
        comp.warnings.append(f"runs come from {len(commits)} code commits: {listing}; marked "
                             f"cells differ from the most common one")
    mixed = [r for r in comp.results.runs
             if r.source_commit is not None and r.source_commit != r.code_commit]
    if mixed:
        comp.warnings.append(f"{len(mixed)} fine-tuned runs continued runs of another code "
                             f"commit (e.g. {mixed[0].algo} seed {mixed[0].seed} on "
                             f"{mixed[0].task}: {(mixed[0].source_commit or '')[:12]}); their "
                             "results mix two code versions")
    dirty = sum(n for c, n in commits.items() if c.endswith("-dirty"))
    if dirty:
        comp.warnings.append(f"{dirty} of {len(comp.results.runs)} runs were made from a working "
                             "tree with uncommitted changes (commit '-dirty'): the commit does "
                             "not pin their code")


# ------------------------------------------------------------------------------------------------
# Aggregates over tasks (normalised scores)
# ------------------------------------------------------------------------------------------------


def _aggregate(comp: Comparison, pairs: Sequence[tuple[str, str]], reps: int,
               seed: int) -> None:
    for x, y in pairs:
        for name in (x, y):
            if name not in comp.algos:
                raise UnknownNameError("algorithm in --pairs", name, comp.algos)
    usable = []
    for task in comp.tasks:
        cells = [comp.cell(task, a) for a in comp.algos]
        if any(c is None for c in cells):
            comp.warnings.append(f"{task} is left out of the aggregate scores: not every "
                                 "algorithm has runs on it")
        elif any(c.normalised is None for c in cells):
            comp.warnings.append(f"{task} is left out of the aggregate scores: its dataset card "
                                 "has no random/expert reference returns to normalise with")
        else:
            usable.append(task)
    comp.aggregate_tasks = usable
    if not usable:
        comp.warnings.append("no task can be aggregated; only per-task tables are reported")
        return
    if any(comp.cells[(t, a)].n < 2 for t in usable for a in comp.algos):
        comp.warnings.append("some aggregated cells have a single seed: bootstrap intervals "
                             "need at least 2 runs per task and are left empty")
    scores = {a: [comp.cells[(t, a)].normalised for t in usable] for a in comp.algos}
    for algo in comp.algos:
        comp.aggregates[algo] = {name: stats.bootstrap_interval(fn, scores[algo], reps, seed)
                                 for name, fn in stats.AGGREGATES.items()}
    if not pairs and len(comp.algos) > 1:  # default: the top algorithm by IQM against each other
        top = max(comp.algos, key=lambda a: comp.aggregates[a]["IQM"].point)
        pairs = [(top, a) for a in comp.algos if a != top]
    comp.improvements = [(x, y, stats.probability_of_improvement(scores[x], scores[y], reps,
                                                                 seed)) for x, y in pairs]
    top_score = max(float(np.max(s)) for v in scores.values() for s in v)
    comp.profile_taus = np.linspace(0.0, max(1.0, top_score), PROFILE_POINTS)
    comp.profiles = {a: stats.performance_profile(scores[a], comp.profile_taus, reps, seed)
                     for a in comp.algos}


def parse_pairs(text: str | None) -> list[tuple[str, str]]:
    """'mads4:bc,ids4:bc' -> [('mads4', 'bc'), ('ids4', 'bc')]."""
    pairs = []
    for item in filter(None, (p.strip() for p in (text or "").split(","))):
        x, sep, y = item.partition(":")
        if not sep or not x or not y:
            raise MarlbenchError(f"bad --pairs item {item!r}: use X:Y, e.g. mads4:bc")
        pairs.append((x.strip(), y.strip()))
    return pairs


def _ints(values) -> str:
    return ", ".join(str(v) for v in sorted(values))
