"""Text renderings of a `Comparison`: terminal tables, Markdown, LaTeX, CSV, JSON, marl-eval JSON.

Every format shows the same numbers and the same marks: bold for the best mean of a task,
`*` / `†` for an algorithm significantly below it (Welch's t-test / Mann-Whitney U,
Holm-adjusted per task or across the table, as the legend says), `⚠` for a cell with a
provenance problem, and the warnings in full.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from collections.abc import Sequence

from rich.table import Table

from marlbench.compare.analysis import Comparison
from marlbench.compare.results import RunRecord
from marlbench.compare.stats import AGGREGATES, CONFIDENCE

WELCH_MARK, MWU_MARK, ISSUE_MARK = "*", "†", "⚠"


def _num(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _p(p: float) -> str:
    if not math.isfinite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _interval(iv) -> str:
    if not math.isfinite(iv.low):
        return f"{iv.point:.2f}"
    return f"{iv.point:.2f} [{iv.low:.2f}, {iv.high:.2f}]"


def cell_parts(comp: Comparison, task: str, algo: str) -> tuple[str, bool, str]:
    """(text, bold, marks) of one per-task cell."""
    cell = comp.cell(task, algo)
    if cell is None:
        return ("failed" if comp.failed(task, algo) else "missing"), False, ISSUE_MARK
    marks = ((WELCH_MARK if comp.worse_welch(cell) else "")
             + (MWU_MARK if comp.worse_mwu(cell) else "")
             + (ISSUE_MARK if cell.issues else ""))
    return f"{cell.mean:.2f} ± {_num(cell.std)}", cell.best, marks


def legend(comp: Comparison) -> str:
    tests = (f" {WELCH_MARK} / {MWU_MARK}: below the best with p < {comp.alpha} (Welch's t-test "
             f"/ Mann–Whitney U, two-sided), {holm_scope(comp)}."
             if _family_sizes(comp) else "")
    return (f"Mean ± std (over seeds) of each run's mean evaluation return. Bold: the best mean "
            f"on the task.{tests} {ISSUE_MARK}: see the warnings.")


def holm_scope(comp: Comparison) -> str:
    """Which p-values were Holm-corrected together, e.g. 'Holm-adjusted within each task (6
    comparisons per task)'."""
    sizes = _family_sizes(comp)
    if comp.holm_family == "table":
        return f"Holm-adjusted across the whole table ({sum(sizes)} comparisons)"
    lo, hi = min(sizes, default=0), max(sizes, default=0)
    count = f"{hi}" if lo == hi else f"{lo}-{hi}"
    return f"Holm-adjusted within each task ({count} comparison{'s' if hi != 1 else ''} per task)"


def _family_sizes(comp: Comparison) -> list[int]:
    """Comparisons per task (the tested cells: every present cell but the best)."""
    return [n for n in (sum(1 for c in comp.cells.values() if c.task == t and not c.best)
                        for t in comp.tasks) if n]


def _pvalue_rows(comp: Comparison) -> list[list[str]]:
    rows = []
    for task in comp.tasks:
        best = next(c for c in (comp.cell(task, a) for a in comp.algos) if c and c.best)
        for algo in comp.algos:
            cell = comp.cell(task, algo)
            if cell is None or cell.best:
                continue
            rows.append([task, algo, best.algo, f"{cell.mean - best.mean:+.2f}",
                         f"{cell.n} vs {best.n}", _p(cell.p_welch), _p(cell.p_welch_holm),
                         _p(cell.p_mwu), _p(cell.p_mwu_holm)])
    return rows


_PVALUE_HEADER = ["task", "algorithm", "best", "Δ mean", "seeds", "Welch p", "Welch p (Holm)",
                  "MWU p", "MWU p (Holm)"]


def _task_rows(comp: Comparison) -> list[list[str]]:
    rows = []
    for task in comp.tasks:
        refs = comp.references(task)
        rows.append([task, _num(refs.get("random", math.nan)), _num(refs.get("expert", math.nan)),
                     ", ".join(h[:12] for h in comp.dataset_hashes(task)),
                     "yes" if task in comp.aggregate_tasks else "no"])
    return rows


_TASK_HEADER = ["task", "random return", "expert return", "dataset sha256", "in aggregate"]


def _aggregate_rows(comp: Comparison) -> list[list[str]]:
    return [[algo, *(_interval(comp.aggregates[algo][m]) for m in AGGREGATES)]
            for algo in comp.algos if algo in comp.aggregates]


def _improvement_rows(comp: Comparison) -> list[list[str]]:
    return [[x, y, _interval(iv)] for x, y, iv in comp.improvements]


# ------------------------------------------------------------------------------------------------
# Markdown (the leaderboard)
# ------------------------------------------------------------------------------------------------


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def to_markdown(comp: Comparison, plots: Sequence[tuple[str, str]] = (),
                reproduce: Sequence[str] = ()) -> str:
    """The README-ready leaderboard. `plots`: (file, caption); `reproduce`: shell commands."""
    runs = comp.results.runs
    out = ["# marlbench leaderboard", "",
           f"{len(runs)} runs: {len(comp.algos)} algorithm(s) × {len(comp.tasks)} task(s); "
           f"a task is an environment and its dataset. Every number below is computed by "
           f"`marlbench compare` from the results folder.", "",
           _provenance_line(comp), ""]
    if comp.warnings:
        out += ["> **Warnings**", ">"] + [f"> - {w}" for w in comp.warnings] + [""]
    out += ["## Returns per task", "", legend(comp), ""]
    rows = []
    for task in comp.tasks:
        row = [task, comp.seeds_label(task)]
        for algo in comp.algos:
            text, bold, marks = cell_parts(comp, task, algo)
            row.append((f"**{text}**" if bold else text) + (f" {marks}" if marks else ""))
        rows.append(row)
    out += [_md_table(["task", "seeds", *comp.algos], rows), ""]
    pvals = _pvalue_rows(comp)
    if pvals:
        out += ["## Tests against the best", "",
                "Each algorithm against the best mean of its task; p-values are two-sided, "
                f"{holm_scope(comp)}, separately for each test.", "",
                _md_table(_PVALUE_HEADER, pvals), ""]
    out += ["## Normalised scores", "",
            "Score = (return − random) / (expert − random), with the random and expert "
            "reference returns fixed in each task's dataset card (not the min/max of the "
            "algorithms compared here).", "", _md_table(_TASK_HEADER, _task_rows(comp)), ""]
    if comp.aggregates:
        out += [f"Aggregates over {len(comp.aggregate_tasks)} task(s), point estimate "
                f"[{CONFIDENCE:.0%} stratified-bootstrap interval, {comp.reps:,} resamples]. "
                "Higher is better except the optimality gap.", "",
                _md_table(["algorithm", *AGGREGATES], _aggregate_rows(comp)), ""]
    if comp.improvements:
        out += ["Probability of improvement (a run of X beats a run of Y on the same task):",
                "", _md_table(["X", "Y", "P(X > Y)"], _improvement_rows(comp)), ""]
    if plots:
        out += ["## Plots", ""]
        for name, caption in plots:
            out += [f"![{caption}]({name})", ""]
    if reproduce:
        out += ["## Reproduce", "", "```bash", *reproduce, "```", ""]
    return "\n".join(out)


def _provenance_line(comp: Comparison) -> str:
    commits = Counter(r.code_commit or "unknown" for r in comp.results.runs)
    listing = ", ".join(f"`{c[:12]}{'-dirty' if c.endswith('-dirty') else ''}` ({n} runs)"
                        for c, n in commits.most_common())
    return f"Code commit{'s' if len(commits) > 1 else ''} of the runs: {listing}."


# ------------------------------------------------------------------------------------------------
# LaTeX
# ------------------------------------------------------------------------------------------------


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                "^": r"\textasciicircum{}", "±": r"$\pm$", "Δ": r"$\Delta$",
                "†": r"\textdagger{}", ISSUE_MARK: "!"}


def _tex(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)


def _tex_table(caption: str, header: Sequence[str], rows: Sequence[Sequence[str]],
               escape: bool = True) -> str:
    esc = _tex if escape else (lambda s: s)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{_tex(caption)}}}",
             r"\begin{tabular}{l" + "c" * (len(header) - 1) + "}", r"\toprule",
             " & ".join(_tex(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(c) for c in r) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)


def to_latex(comp: Comparison) -> str:
    """booktabs tables (needs \\usepackage{booktabs}); marks as superscripts."""
    tex_marks = {WELCH_MARK: r"$^{*}$", MWU_MARK: r"$^{\dagger}$", ISSUE_MARK: r"$^{!}$"}
    rows = []
    for task in comp.tasks:
        row = [_tex(task), _tex(comp.seeds_label(task))]
        for algo in comp.algos:
            text, bold, marks = cell_parts(comp, task, algo)
            text = _tex(text)
            row.append((rf"\textbf{{{text}}}" if bold else text)
                       + "".join(tex_marks[m] for m in marks))
        rows.append(row)
    parts = [f"% generated by marlbench compare; {len(comp.warnings)} warning(s)"]
    parts += [f"% warning: {w}" for w in comp.warnings]
    parts.append(_tex_table(legend(comp), ["task", "seeds", *comp.algos], rows, escape=False))
    if _pvalue_rows(comp):
        parts.append(_tex_table(f"p-values against the best of each task (two-sided; "
                                f"{holm_scope(comp)})", _PVALUE_HEADER, _pvalue_rows(comp)))
    if comp.aggregates:
        parts.append(_tex_table(
            f"Normalised scores over {len(comp.aggregate_tasks)} tasks, point estimate and "
            f"{CONFIDENCE:.0%} stratified-bootstrap interval",
            ["algorithm", *AGGREGATES], _aggregate_rows(comp)))
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------------
# CSV / JSON
# ------------------------------------------------------------------------------------------------


def cell_records(comp: Comparison) -> list[dict]:
    """One record per (task, algorithm), missing cells included (n = 0)."""
    out = []
    for task in comp.tasks:
        for algo in comp.algos:
            cell = comp.cell(task, algo)
            env, dataset = task.split("/", 1)
            rec = {"task": task, "env": env, "dataset": dataset, "algorithm": algo,
                   "n_seeds": cell.n if cell else 0,
                   "seeds": cell.seeds if cell else [],
                   "failed_seeds": [f.seed for f in comp.failed(task, algo)],
                   "mean": cell.mean if cell else None, "std": cell.std if cell else None,
                   "best": bool(cell and cell.best)}
            for key in ("p_welch", "p_welch_holm", "p_mwu", "p_mwu_holm"):
                rec[key] = getattr(cell, key) if cell else None
            rec["holm_family"] = comp.holm_family
            norm = cell.normalised if cell else None
            rec["normalised_mean"] = float(norm.mean()) if norm is not None else None
            rec["issues"] = cell.issues if cell else ["missing"]
            out.append(rec)
    return out


def to_csv(comp: Comparison) -> str:
    records = cell_records(comp)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    for rec in records:
        writer.writerow({k: ";".join(map(str, v)) if isinstance(v, list) else
                         ("" if v is None else v) for k, v in rec.items()})
    return buf.getvalue()


def aggregate_csv(comp: Comparison) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["algorithm", "metric", "point", "low", "high", "tasks"])
    for algo, metrics in comp.aggregates.items():
        for name, iv in metrics.items():
            writer.writerow([algo, name, iv.point, iv.low, iv.high, len(comp.aggregate_tasks)])
    for x, y, iv in comp.improvements:
        writer.writerow([x, f"P(>{y})", iv.point, iv.low, iv.high, len(comp.aggregate_tasks)])
    return buf.getvalue()


def _finite(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def run_record(run: RunRecord) -> dict:
    """Everything of a run that a verdict needs, so a committed leaderboard can be re-judged
    without its (uncommitted) run folders: `load_results` reads these back."""
    return {"env": run.env, "dataset": run.dataset, "algo": run.algo, "seed": run.seed,
            "return_mean": run.return_mean, "episode_returns": list(run.episode_returns),
            "train_steps": run.train_steps, "code_commit": run.code_commit,
            "dataset_sha256": run.dataset_sha256, "references": run.references,
            "source_commit": run.source_commit, "continues": run.continues}


def to_json(comp: Comparison) -> str:
    doc = {
        "tasks": comp.tasks, "algorithms": comp.algos, "alpha": comp.alpha,
        "holm_family": comp.holm_family,
        "cells": cell_records(comp),
        "runs": [run_record(r) for r in comp.results.runs],
        "references": {t: comp.references(t) for t in comp.tasks},
        "aggregate_tasks": comp.aggregate_tasks,
        "aggregates": {a: {m: iv.to_dict() for m, iv in ms.items()}
                       for a, ms in comp.aggregates.items()},
        "probability_of_improvement": [{"x": x, "y": y, **iv.to_dict()}
                                       for x, y, iv in comp.improvements],
        "performance_profile": None if comp.profile_taus is None else {
            "tau": comp.profile_taus.tolist(),
            **{a: {"point": p.tolist(), "low": lo.tolist(), "high": hi.tolist()}
               for a, (p, lo, hi) in comp.profiles.items()}},
        "confidence": CONFIDENCE, "bootstrap_resamples": comp.reps,
        "warnings": comp.warnings,
    }
    return json.dumps(_finite(doc), indent=2) + "\n"


MARL_EVAL_ENV = "marlbench"  # one marl-eval environment holding every <env>/<dataset> task


def to_marl_eval(comp: Comparison) -> dict:
    """The marl-eval raw-data layout: environment -> task -> algorithm -> run -> step -> metrics.

    Offline runs are evaluated once, after training, so each run has one step (its training
    budget as `step_count`) and the same episodes as `absolute_metrics`. `return` is raw;
    `normalised_return` uses the dataset card's fixed references, for users who prefer those
    to marl-eval's own min-max normalisation.
    """
    tasks: dict[str, dict] = {}
    for cell in comp.cells.values():
        runs = tasks.setdefault(cell.task, {}).setdefault(cell.algo, {})
        for run in cell.runs:
            metrics = {"return": list(run.episode_returns)}
            lo, hi = run.references.get("random"), run.references.get("expert")
            if lo is not None and hi is not None and hi != lo:
                metrics["normalised_return"] = [(r - lo) / (hi - lo) for r in run.episode_returns]
            runs[f"run_{run.seed}"] = {"step_0": {"step_count": run.train_steps, **metrics},
                                       "absolute_metrics": metrics}
    return {MARL_EVAL_ENV: tasks}


# ------------------------------------------------------------------------------------------------
# Terminal
# ------------------------------------------------------------------------------------------------


def rich_tables(comp: Comparison) -> list[Table]:
    t = Table(title="Returns per task", title_justify="left", caption=legend(comp),
              caption_justify="left")
    for col in ("task", "seeds", *comp.algos):
        t.add_column(col)
    for task in comp.tasks:
        row = [task, comp.seeds_label(task)]
        for algo in comp.algos:
            text, bold, marks = cell_parts(comp, task, algo)
            row.append((f"[bold]{text}[/bold]" if bold else text)
                       + (f" [yellow]{marks}[/yellow]" if marks else ""))
        t.add_row(*row)
    tables = [t]
    if _pvalue_rows(comp):
        tables.append(_simple_table(f"Tests against the best (two-sided, {holm_scope(comp)})",
                                    _PVALUE_HEADER, _pvalue_rows(comp)))
    if comp.aggregates:
        tables.append(_simple_table(
            f"Normalised scores over {len(comp.aggregate_tasks)} task(s) "
            f"[{CONFIDENCE:.0%} stratified-bootstrap interval]",
            ["algorithm", *AGGREGATES], _aggregate_rows(comp)))
    if comp.improvements:
        tables.append(_simple_table("Probability of improvement", ["X", "Y", "P(X > Y)"],
                                    _improvement_rows(comp)))
    return tables


def _simple_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Table:
    t = Table(title=title, title_justify="left")
    for col in header:
        t.add_column(col)
    for r in rows:
        t.add_row(*r)
    return t


def online_curves_csv(comp: Comparison) -> str:
    """The online learning curves (`online_curves.png`) as rows: task, algo, seeds, point,
    env_steps, mean and std of the training-rollout return; empty without online runs."""
    from marlbench.compare.results import learning_curves

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    curves = learning_curves(comp.results.runs)
    if not curves:
        return ""
    w.writerow(["task", "algo", "seeds", "point", "env_steps", "return_mean", "return_std"])
    for c in curves:
        for i, (x, m, sd) in enumerate(zip(c.env_steps, c.mean, c.std)):
            w.writerow([c.task, c.algo, c.seeds, i + 1, f"{x:g}", f"{m:.6g}", f"{sd:.6g}"])
    return buf.getvalue()
