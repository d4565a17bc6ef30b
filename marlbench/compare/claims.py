"""The paper's claims, tested on the runs: the reproduction report (``REPRODUCTION.md``).

Each preset (`marlbench.reproduce`) lists the claims its grid can decide, in plain data::

    [[claim]]
    text = "MADS4 is best on every RWARE task"
    paper = "Table 1, §5.2: best on 6/6 tasks, significant"
    kind = "best"            # best | not_worse | greater | similar | faster | untestable
    algo = "mads4"           # best: this one; greater/similar/faster: algo vs other
    other = "ids4"
    part = "table1"          # the tasks: envs x datasets of this part (default: every part's)
    reason = "..."           # untestable: why
    source = "speed/x.json"  # faster: a bench's timings (`--json`), under the results root
    measure = "train_s"      # faster: which timing (train_s, latency_ms@500, ...)

Verdicts, per task then for the claim (Welch's t-test on the run scores, two-sided, Holm-corrected
across the claim's tested tasks, alpha 0.05, as in `compare`; but see ``similar``):

- ``best``: on a task, *holds* when the algorithm has the highest mean and is significantly
  above every other algorithm of its table (an intersection-union test: the largest of those
  p-values decides, against the rival it names); *fails* when another algorithm is
  significantly better (the smallest p-value of the algorithms with a higher mean, Bonferroni
  over them, decides); otherwise *ties*. The claim is *reproduced* when it holds on every
  task, *not reproduced* when it fails on any, and otherwise *not shown*.
- ``not_worse`` ("similar or better"): as ``best``, but a task where no other algorithm is
  significantly better *holds*.
- ``greater``: as ``best``, against one named opponent. Here and for ``similar``, when each
  of the algorithm's runs continued its own run of the opponent (fine-tuned from an offline
  run), the test is a paired t-test.
- ``similar``: *reproduced* when every task has run and none shows a significant difference
  (which, with few seeds, is weak evidence: the report prints the differences), *not
  reproduced* when one does, *not shown* while some task has not run.
- ``similar`` and ``not_worse`` can only be contradicted by data: their p-values are neither
  Holm- nor Bonferroni-corrected, since a correction would make them easier to pass.
- ``faster``: a speed claim, judged on the repeated timings of one bench run written with
  ``--json`` (its single task is the measure): *holds* when the algorithm's median time is
  lower and the Mann-Whitney U test on the repeats is significant (a rank test: on a shared
  machine a stalled repeat counts as one slow repeat, while in a t-test its size would swamp
  the rest). A bench run of a modified tree is not read.
- A task with fewer than 2 runs on either side cannot be tested: *not run*; nor can a claim
  to be best on a task where some algorithm of its table has fewer than 2 runs.

The rivals of ``best`` and ``not_worse`` are the other algorithms of the claim's part (Table 1's
baselines), not whatever else was run on the task. Each task is judged on runs of one clean code
commit (a table's cells must come from one commit). Runs read back from several leaderboards of
one commit are pooled unless two boards record different runs of one cell (e.g. Fig. 2's short
MADS4 runs and Table 1's); then each board is judged apart. Of the groups that hold the claim's
algorithm, the one with the most testable compared algorithms (2 runs or more) wins, then the
most runs, then the newest run folder (runs read back from leaderboards have none: then the
first board in name order). Runs of a modified tree (commit ``-dirty``) are never used, nor
a fine-tuned run that continued a run of another commit.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from marlbench.compare.results import RunRecord
from marlbench.compare.stats import ALPHA, holm, mann_whitney_p, paired_p, welch_p

KINDS = ("best", "not_worse", "greater", "similar", "faster", "untestable")
# Claims that data can only contradict: a multiplicity correction would make them easier to
# pass, so their p-values are not corrected (see the module docstring).
UNCORRECTED = ("similar", "not_worse")


@dataclass(frozen=True)
class Claim:
    text: str
    paper: str
    kind: str
    algo: str | None = None
    other: str | None = None
    tasks: tuple[str, ...] = ()  # env/dataset
    rivals: tuple[str, ...] = ()  # best / not_worse: the part's other algorithms (empty: any)
    reason: str = ""
    source: str = ""  # faster: the bench's --json file, relative to the results root


@dataclass
class TaskVerdict:
    task: str
    outcome: str  # holds | ties | fails | not run
    means: dict[str, float] = field(default_factory=dict)
    seeds: dict[str, int] = field(default_factory=dict)
    opponent: str | None = None  # the rival whose test decides the outcome
    steps: dict[str, str] = field(default_factory=dict)  # training updates of each side's runs
    commit: str | None = None  # the code commit of every run this task was judged on
    board: str = ""  # and their leaderboard, when read back from leaderboards
    missing: tuple[str, ...] = ()  # rivals of the table without 2 runs at that commit
    p: float = math.nan  # the deciding p-value against the opponent, before Holm
    paired: bool = False  # a paired t-test: each run continued its own run of the opponent
    p_holm: float = math.nan


@dataclass
class ClaimVerdict:
    claim: Claim
    verdict: str  # reproduced | not reproduced | not shown | not run | not testable here
    tasks: list[TaskVerdict]


def judge(claim: Claim, runs: Sequence[RunRecord], alpha: float = ALPHA,
          bench: dict | None = None) -> ClaimVerdict:
    """The verdict of one claim on the completed runs (of any algorithms and tasks), or for a
    speed claim on `bench`, the timings its `source` file holds (None: not measured)."""
    if claim.kind == "untestable":
        return ClaimVerdict(claim, "not testable here", [])
    if claim.kind == "faster":
        verdicts = [_timed(claim, measure, bench) for measure in claim.tasks]
    else:
        verdicts = [_task(claim, task, *_one_source(claim, task, runs)) for task in claim.tasks]
    tested = [v for v in verdicts if v.outcome != "not run"]
    raw = [v.p for v in tested]
    for v, p in zip(tested, raw if claim.kind in UNCORRECTED else holm(raw)):
        v.p_holm = float(p)
        v.outcome = _outcome(claim, v, alpha)
    return ClaimVerdict(claim, _overall(verdicts), verdicts)


def _compared(claim: Claim, algo: str) -> bool:
    if algo == claim.algo:
        return True
    if claim.kind in ("best", "not_worse"):
        return not claim.rivals or algo in claim.rivals
    return algo == claim.other


def _one_source(claim: Claim, task: str, runs: Sequence[RunRecord]
                ) -> tuple[tuple[str, str] | None, list[RunRecord]]:
    """The (commit, leaderboard) this task is judged on, and the compared algorithms' runs
    there."""
    by_commit: dict[str, list[RunRecord]] = {}
    for r in runs:
        if r.task == task and _compared(claim, r.algo) and _one_clean_commit(r):
            by_commit.setdefault(r.code_commit, []).append(r)
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for commit, group in by_commit.items():
        cells: dict[tuple[str, int], set[tuple[float, int]]] = {}
        for r in group:
            cells.setdefault((r.algo, r.seed), set()).add((r.return_mean, r.train_steps))
        if all(len(v) == 1 for v in cells.values()):  # the boards agree: pool them, once each
            once = {(r.algo, r.seed): r for r in group}
            boards = "+".join(sorted({r.board for r in group if r.board}))
            groups[(commit, boards)] = list(once.values())
        else:
            for r in group:
                groups.setdefault((commit, r.board), []).append(r)

    def coverage(key: tuple[str, str]) -> tuple[bool, int, int, float]:
        group = groups[key]
        per_algo = Counter(r.algo for r in group)
        testable = sum(n >= 2 for n in per_algo.values())
        newest = max((r.path.stat().st_mtime for r in group if r.path is not None), default=0.0)
        return claim.algo in per_algo, testable, len(group), newest

    if not groups:
        return None, []
    source = max(groups, key=coverage)
    return source, groups[source]


def _one_clean_commit(r: RunRecord) -> bool:
    """A run of a committed tree, and a fine-tuned run only when it continued a run of its own
    commit (else its result mixes two code versions)."""
    clean = bool(r.code_commit) and not r.code_commit.endswith("-dirty")
    return clean and r.source_commit in (None, r.code_commit)


def _task(claim: Claim, task: str, source: tuple[str, str] | None,
          group: Sequence[RunRecord]) -> TaskVerdict:
    commit, board = source or (None, "")
    present: dict[str, np.ndarray] = {}
    steps: dict[str, set[int]] = {}
    for r in group:
        present[r.algo] = np.append(present.get(r.algo, np.empty(0)), r.return_mean)
        steps.setdefault(r.algo, set()).add(r.train_steps)
    v = TaskVerdict(task, "not run", {a: float(s.mean()) for a, s in present.items()},
                    {a: len(s) for a, s in present.items()},
                    steps={a: "/".join(map(str, sorted(n))) for a, n in steps.items()},
                    commit=commit, board=board)
    mine = present.get(claim.algo)
    if claim.kind in ("best", "not_worse"):
        rivals = {a: s for a, s in present.items() if a != claim.algo and len(s) >= 2}
        v.missing = tuple(a for a in claim.rivals if a not in rivals)
        if mine is None or len(mine) < 2 or not rivals or v.missing:  # best of a whole table
            return v
        v.opponent, v.p = _deciding_rival(mine, rivals, correct=claim.kind == "best")
    else:
        if mine is None or len(mine) < 2 or len(present.get(claim.other, ())) < 2:
            return v
        v.opponent = claim.other
        pairs = _continued_pairs(group, claim.algo, claim.other)
        v.paired = pairs is not None
        v.p = paired_p(*pairs) if pairs is not None else welch_p(mine, present[claim.other])
    v.outcome = "tested"
    return v


def _continued_pairs(group: Sequence[RunRecord], algo: str, other: str
                     ) -> tuple[np.ndarray, np.ndarray] | None:
    """When every run of `algo` continued its own run of `other` (a fine-tuned run and the
    offline run it started from), the two as matched arrays: a paired test then removes the
    seed's share of the variance. None otherwise."""
    mine = [r for r in group if r.algo == algo]
    theirs = {f"{r.algo}/seed-{r.seed}": r for r in group if r.algo == other}
    sources = [r.continues for r in mine]
    if len(mine) < 2 or len(set(sources)) < len(sources) or not all(
            s in theirs for s in sources):
        return None
    return (np.array([r.return_mean for r in mine]),
            np.array([theirs[s].return_mean for s in sources]))


def _deciding_rival(mine: np.ndarray, rivals: dict[str, np.ndarray],
                    correct: bool) -> tuple[str, float]:
    """Against every rival at once. Ahead of all: to be significantly above each of them, the
    largest p must be small (intersection-union), so that rival decides. Behind some: one of
    those significantly above is enough to fail, so the smallest of their p-values decides,
    Bonferroni-corrected over them when `correct`."""
    p = {a: welch_p(mine, s) for a, s in rivals.items()}
    above = [a for a, s in rivals.items() if s.mean() >= mine.mean()]
    if not above:
        worst = max(p, key=lambda a: p[a] if math.isfinite(p[a]) else math.inf)
        return worst, p[worst]
    best = min(above, key=lambda a: p[a] if math.isfinite(p[a]) else math.inf)
    if not correct or not math.isfinite(p[best]):
        return best, p[best]
    return best, min(1.0, p[best] * len(above))


def _timings(bench: dict, model: str, measure: str) -> np.ndarray:
    """The repeated timings of `measure` ("train_s", "latency_ms@500") of one bench model."""
    name, _, at = measure.partition("@")
    values = bench.get("models", {}).get(model, {}).get(name)
    if isinstance(values, dict):
        values = values.get(at)
    return np.asarray(values if values is not None else [], dtype=float)


def _timed(claim: Claim, measure: str, bench: dict | None) -> TaskVerdict:
    """One measure of a speed claim; a bench run of a modified tree counts as not run."""
    v = TaskVerdict(measure, "not run")
    commit = (bench or {}).get("code_commit") or ""
    if not commit or commit.endswith("-dirty"):
        return v
    v.commit = commit
    v.board = f"{claim.source}, {bench.get('conditions', 'conditions not stated')}"
    mine, theirs = _timings(bench, claim.algo, measure), _timings(bench, claim.other, measure)
    v.means = {a: float(np.median(t)) for a, t in ((claim.algo, mine), (claim.other, theirs))
               if len(t)}  # medians: see the module docstring
    v.seeds = {claim.algo: len(mine), claim.other: len(theirs)}
    if len(mine) < 2 or len(theirs) < 2:
        return v
    v.opponent, v.outcome, v.p = claim.other, "tested", mann_whitney_p(mine, theirs)
    return v


def _outcome(claim: Claim, v: TaskVerdict, alpha: float) -> str:
    significant = math.isfinite(v.p_holm) and v.p_holm < alpha
    if claim.kind == "similar":
        return "fails" if significant else "holds"
    mine, theirs = v.means[claim.algo], v.means[v.opponent]
    ahead = mine < theirs if claim.kind == "faster" else mine > theirs  # timings: lower wins
    if claim.kind == "not_worse":
        return "fails" if significant and not ahead else "holds"
    if not significant:
        return "ties"
    return "holds" if ahead else "fails"


def _overall(verdicts: list[TaskVerdict]) -> str:
    outcomes = [v.outcome for v in verdicts]
    if not outcomes or all(o == "not run" for o in outcomes):
        return "not run"
    if "fails" in outcomes:
        return "not reproduced"
    if all(o == "holds" for o in outcomes):
        return "reproduced"
    return "not shown"


# ------------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------------

DATA_CAVEAT = (
    "Our datasets are not the paper's: RWARE data come from marlbench's scripted planner "
    "(the paper used AlberDICE's MAT-trained sets) and SMAC is SMAX, its JAX re-implementation "
    "(no 2c_vs_64zg, corridor approximated). Absolute returns are therefore not comparable; the "
    "verdicts compare orderings and their significance.")


def to_markdown(sections: Sequence[tuple[str, list[ClaimVerdict]]], source: str,
                boards: Sequence[str] = (), older_boards: Sequence[str] = ()) -> str:
    """REPRODUCTION.md: one summary table of every claim, then the per-task evidence."""
    commits = sorted({t.commit for _, verdicts in sections for v in verdicts for t in v.tasks
                      if t.commit and t.outcome != "not run"})
    where = (f"the runs recorded by the leaderboards under `{source}` ({', '.join(boards)})"
             if boards else f"the completed runs under `{source}`")
    unread = (f" Leaderboards written before compare recorded their runs are not read: "
              f"{', '.join(older_boards)}." if older_boards else "")
    lines = ["# Reproduction report", "",
             f"Written by `marlbench reproduce --report` from {where} (code commits judged "
             f"on: {', '.join(c[:12] for c in commits) or 'none'}).{unread} {DATA_CAVEAT}", "",
             "Tests: Welch's t-test on the run scores (mean evaluation return per seed; a "
             "paired t-test where each run continued its own run of the opponent, marked "
             "*paired*), "
             f"two-sided, Holm-corrected across each claim's tested tasks, alpha {ALPHA}. A "
             "task *holds* when the claim's direction is significant, *ties* when the data "
             "show no significant difference, *fails* when the opposite is significant. A claim "
             "to be *best* is tested against every other algorithm of its table, once the whole "
             "table has run (2 seeds or more each): it holds when it is significantly above "
             "each (the largest p decides; the opponent shown is that rival) and fails when one "
             "is significantly above it (the smallest p among the algorithms with a higher "
             "mean, times their number). *Similar* and *not worse* can only be contradicted by "
             "data, so their p-values are not corrected (a correction would make them easier "
             "to pass), and with few seeds their *reproduced* means no more than *not "
             "contradicted*. Columns "
             "*updates* give each side's training updates. Each task is judged on the runs of "
             "one clean code commit (column *commit*, with the leaderboards it was read from: "
             "those of one commit are pooled unless they record different runs of one cell); "
             "runs of modified trees are left out, and fine-tuned runs of another commit's "
             "offline runs. A speed claim is judged on one bench run's "
             "repeated timings (seconds or milliseconds, lower wins) by their medians and the "
             "Mann-Whitney U test (a stalled repeat on a shared machine counts as one slow "
             "repeat); the machine's conditions (quiet or loaded) are printed with it.", "",
             "| preset | claim | paper | ours | verdict |", "|---|---|---|---|---|"]
    for preset, verdicts in sections:
        for v in verdicts:
            lines.append(f"| {preset} | {v.claim.text} | {v.claim.paper} | {_summary(v)} | "
                         f"**{v.verdict}** |")
    for preset, verdicts in sections:
        lines += ["", f"## {preset}"]
        for v in verdicts:
            lines += ["", f"### {v.claim.text}", "", f"Paper: {v.claim.paper}.", ""]
            if v.claim.kind == "untestable":
                lines.append(f"Not testable here: {v.claim.reason}")
                continue
            timed = v.claim.kind == "faster"
            task, source, mean, n, test = (
                ("measure", "bench run (conditions)", "median", "repeats", "Mann-Whitney")
                if timed else ("task", "commit", "mean", "seeds", "Welch, deciding rival"
                               if v.claim.kind in ("best", "not_worse") else "Welch"))
            updates = "" if timed else " updates |"
            lines += [f"| {task} | {source} | claim's algorithm | {mean} | opponent | {mean} "
                      f"| {n} |{updates} p ({test}) | p (Holm) | outcome |",
                      "|---" * (10 if timed else 11) + "|"]
            for t in v.tasks:
                a, o = v.claim.algo, t.opponent or v.claim.other or "-"
                steps = "" if timed else (f" {t.steps.get(a, '-')} vs "
                                          f"{t.steps.get(o, '-')} |")
                lines.append(
                    f"| {t.task} | {_source(t)} | {a} | "
                    f"{_num(t.means.get(a))} | {o} | {_num(t.means.get(o))} | "
                    f"{t.seeds.get(a, 0)} vs {t.seeds.get(o, 0)} |{steps} {_p(t.p)}"
                    f"{' (paired)' if t.paired else ''} | "
                    f"{_adjusted(v.claim, t)} | {t.outcome}{_missing(t)} |")
    return "\n".join(lines) + "\n"


def _summary(v: ClaimVerdict) -> str:
    if v.claim.kind == "untestable":
        return v.claim.reason
    counts = {o: sum(t.outcome == o for t in v.tasks) for o in ("holds", "ties", "fails",
                                                                "not run")}
    return ", ".join(f"{o} on {n}/{len(v.tasks)}" for o, n in counts.items() if n)


def _source(t: TaskVerdict) -> str:
    if not t.commit:
        return "-"
    return f"{t.commit[:12]} ({t.board})" if t.board else t.commit[:12]


def _adjusted(claim: Claim, t: TaskVerdict) -> str:
    if claim.kind in UNCORRECTED and math.isfinite(t.p):
        return "not corrected"
    return _p(t.p_holm)


def _missing(t: TaskVerdict) -> str:
    return f" (no {', '.join(t.missing)})" if t.missing else ""


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _p(p: float) -> str:
    return "-" if not math.isfinite(p) else f"{p:.3f}"
