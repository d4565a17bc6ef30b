"""The paper's claims, tested on the runs: the reproduction report (``REPRODUCTION.md``).

Each preset (`marlbench.reproduce`) lists the claims its grid can decide, in plain data::

    [[claim]]
    text = "MADS4 is best on every RWARE task"
    paper = "Table 1, §5.2: best on 6/6 tasks, significant"
    kind = "best"            # best | not_worse | greater | similar | untestable
    algo = "mads4"           # best: this one; greater/similar: algo vs other
    other = "ids4"
    part = "table1"          # the tasks: envs x datasets of this part (default: every part's)
    reason = "..."           # untestable: why

Verdicts, per task then for the claim (Welch's t-test on the run scores, two-sided, Holm-corrected
across the claim's tasks, alpha 0.05, as in `compare`):

- ``best``: on a task, *holds* when the algorithm has the highest mean and is significantly
  above the runner-up; *ties* when it leads or trails without a significant difference;
  *fails* when another algorithm is significantly better. The claim is *reproduced* when it
  holds on every task, *not reproduced* when it fails on any, and otherwise *not shown*.
- ``not_worse`` ("similar or better"): as ``best``, but a task where no other algorithm is
  significantly better *holds*.
- ``greater``: as ``best``, against one named opponent.
- ``similar``: *reproduced* when no task shows a significant difference (which, with few seeds,
  is weak evidence: the report prints the differences), *not reproduced* otherwise.
- A task with fewer than 2 runs on either side cannot be tested: *not run*.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from marlbench.compare.results import RunRecord
from marlbench.compare.stats import ALPHA, holm, welch_p

KINDS = ("best", "not_worse", "greater", "similar", "untestable")


@dataclass(frozen=True)
class Claim:
    text: str
    paper: str
    kind: str
    algo: str | None = None
    other: str | None = None
    tasks: tuple[str, ...] = ()  # env/dataset
    reason: str = ""


@dataclass
class TaskVerdict:
    task: str
    outcome: str  # holds | ties | fails | not run
    means: dict[str, float] = field(default_factory=dict)
    seeds: dict[str, int] = field(default_factory=dict)
    opponent: str | None = None
    p: float = math.nan  # raw Welch p against the opponent
    p_holm: float = math.nan


@dataclass
class ClaimVerdict:
    claim: Claim
    verdict: str  # reproduced | not reproduced | not shown | not run | not testable here
    tasks: list[TaskVerdict]


def judge(claim: Claim, runs: Sequence[RunRecord], alpha: float = ALPHA) -> ClaimVerdict:
    """The verdict of one claim on the completed runs (of any algorithms and tasks)."""
    if claim.kind == "untestable":
        return ClaimVerdict(claim, "not testable here", [])
    scores: dict[tuple[str, str], np.ndarray] = {}
    for r in runs:
        key = (r.task, r.algo)
        scores[key] = np.append(scores.get(key, np.empty(0)), r.return_mean)
    verdicts = [_task(claim, task, scores) for task in claim.tasks]
    tested = [v for v in verdicts if v.outcome != "not run"]
    for v, p in zip(tested, holm([v.p for v in tested])):
        v.p_holm = float(p)
        v.outcome = _outcome(claim, v, alpha)
    return ClaimVerdict(claim, _overall(verdicts), verdicts)


def _task(claim: Claim, task: str, scores) -> TaskVerdict:
    present = {algo: s for (t, algo), s in scores.items() if t == task}
    v = TaskVerdict(task, "not run", {a: float(s.mean()) for a, s in present.items()},
                    {a: len(s) for a, s in present.items()})
    mine = present.get(claim.algo)
    if claim.kind in ("best", "not_worse"):
        rivals = {a: s for a, s in present.items() if a != claim.algo and len(s) >= 2}
        if mine is None or len(mine) < 2 or not rivals:
            return v
        v.opponent = max(rivals, key=lambda a: rivals[a].mean())  # the strongest other
    else:
        if mine is None or len(mine) < 2 or len(present.get(claim.other, ())) < 2:
            return v
        v.opponent = claim.other
    v.outcome = "tested"
    v.p = welch_p(mine, present[v.opponent])
    return v


def _outcome(claim: Claim, v: TaskVerdict, alpha: float) -> str:
    significant = math.isfinite(v.p_holm) and v.p_holm < alpha
    if claim.kind == "similar":
        return "fails" if significant else "holds"
    ahead = v.means[claim.algo] > v.means[v.opponent]
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
                commits: Sequence[str]) -> str:
    """REPRODUCTION.md: one summary table of every claim, then the per-task evidence."""
    lines = ["# Reproduction report", "",
             f"Written by `marlbench reproduce --report` from the completed runs under "
             f"`{source}` (code commits: {', '.join(commits) or 'none'}). {DATA_CAVEAT}", "",
             "Tests: Welch's t-test on the run scores (mean evaluation return per seed), "
             f"two-sided, Holm-corrected across each claim's tasks, alpha {ALPHA}. A task "
             "*holds* when the claim's direction is significant, *ties* when the data show no "
             "significant difference, *fails* when the opposite is significant.", "",
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
            lines += ["| task | claim's algorithm | mean | opponent | mean | seeds | "
                      "p (Welch) | p (Holm) | outcome |", "|---|---|---|---|---|---|---|---|---|"]
            for t in v.tasks:
                a, o = v.claim.algo, t.opponent or v.claim.other or "-"
                lines.append(
                    f"| {t.task} | {a} | {_num(t.means.get(a))} | {o} | "
                    f"{_num(t.means.get(o))} | {t.seeds.get(a, 0)} vs {t.seeds.get(o, 0)} | "
                    f"{_p(t.p)} | {_p(t.p_holm)} | {t.outcome} |")
    return "\n".join(lines) + "\n"


def _summary(v: ClaimVerdict) -> str:
    if v.claim.kind == "untestable":
        return v.claim.reason
    counts = {o: sum(t.outcome == o for t in v.tasks) for o in ("holds", "ties", "fails",
                                                                "not run")}
    return ", ".join(f"{o} on {n}/{len(v.tasks)}" for o, n in counts.items() if n)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _p(p: float) -> str:
    return "-" if not math.isfinite(p) else f"{p:.3f}"
