"""PNG figures of a `Comparison` (matplotlib, no display needed).

per_task.png             mean return per task and algorithm, 95% t-interval over seeds
aggregate.png            IQM / mean / median / optimality gap with bootstrap intervals
performance_profile.png  fraction of runs above each normalised score, with bootstrap bands
training_curves.png      training loss per task: mean over seeds, band from min to max
online_curves.png        online learning curves (return of the training rollouts vs env steps)
                         of online runs, e.g. MADS4 fine-tuned vs from scratch (the MADS4
                         paper's Fig. 2): mean over seeds, band ± one standard deviation
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from marlbench.compare.analysis import Comparison  # noqa: E402
from marlbench.compare.stats import AGGREGATES, CONFIDENCE, mean_interval  # noqa: E402
from marlbench.fsutil import atomic_path  # noqa: E402

DPI = 120


def write_plots(comp: Comparison, out: Path) -> list[tuple[str, str]]:
    """Write every figure that has data into `out`; returns (file name, caption) pairs."""
    written = [("per_task.png", _per_task(comp, out / "per_task.png")),
               ("training_curves.png", _training_curves(comp, out / "training_curves.png")),
               ("online_curves.png", online_curves(comp, out / "online_curves.png"))]
    if comp.aggregates:
        written += [("aggregate.png", _aggregate(comp, out / "aggregate.png")),
                    ("performance_profile.png", _profile(comp, out / "performance_profile.png"))]
    return [(name, caption) for name, caption in written if caption]


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def _colours(comp: Comparison) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10")
    return {a: cmap(i % 10) for i, a in enumerate(comp.algos)}


def _per_task(comp: Comparison, path: Path) -> str:
    colours, k = _colours(comp), len(comp.algos)
    width = 0.8 / k
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(comp.tasks) * k), 3.6))
    for j, algo in enumerate(comp.algos):
        xs, means, errs = [], [], [[], []]
        for i, task in enumerate(comp.tasks):
            cell = comp.cell(task, algo)
            if cell is None:
                continue
            lo, hi = mean_interval(cell.scores)
            xs.append(i + (j - (k - 1) / 2) * width)
            means.append(cell.mean)
            errs[0].append(0.0 if math.isnan(lo) else cell.mean - lo)
            errs[1].append(0.0 if math.isnan(hi) else hi - cell.mean)
        ax.bar(xs, means, width, yerr=errs, capsize=3, label=algo, color=colours[algo])
    ax.set_xticks(range(len(comp.tasks)), comp.tasks, rotation=20, ha="right")
    ax.set_ylabel("mean evaluation return")
    ax.set_title(f"Return per task ({CONFIDENCE:.0%} t-interval over seeds)")
    ax.legend(fontsize="small")
    _save(fig, path)
    return "Mean evaluation return per task with 95% t-intervals over seeds"


def _aggregate(comp: Comparison, path: Path) -> str:
    colours = _colours(comp)
    fig, axes = plt.subplots(1, len(AGGREGATES), layout="constrained",
                             figsize=(3.2 * len(AGGREGATES), 1.4 + 0.45 * len(comp.algos)))
    for ax, metric in zip(axes, AGGREGATES):
        for y, algo in enumerate(comp.algos):
            iv = comp.aggregates[algo][metric]
            if math.isfinite(iv.low):
                ax.barh(y, iv.high - iv.low, left=iv.low, height=0.6, color=colours[algo],
                        alpha=0.75)
            ax.plot([iv.point, iv.point], [y - 0.3, y + 0.3], color="black", lw=1.5)
        ax.set_yticks(range(len(comp.algos)), comp.algos if ax is axes[0] else [])
        ax.set_title(metric)
        ax.set_xlabel("normalised score")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"Aggregates over {len(comp.aggregate_tasks)} task(s), "
                 f"{CONFIDENCE:.0%} stratified-bootstrap intervals", fontsize="medium")
    _save(fig, path)
    return "Aggregate normalised scores with 95% stratified-bootstrap intervals"


def _profile(comp: Comparison, path: Path) -> str:
    colours = _colours(comp)
    fig, ax = plt.subplots(figsize=(5.0, 3.6))
    taus = comp.profile_taus
    for algo, (point, low, high) in comp.profiles.items():
        ax.plot(taus, point, label=algo, color=colours[algo])
        if np.isfinite(low).all():
            ax.fill_between(taus, low, high, color=colours[algo], alpha=0.2)
    ax.set_xlabel("normalised score τ")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title("Performance profile")
    _save(fig, path)
    return "Performance profile with 95% stratified-bootstrap bands"


def _training_curves(comp: Comparison, path: Path) -> str:
    colours, n = _colours(comp), len(comp.tasks)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    drawn = False
    for ax, task in zip(axes.flat, comp.tasks):
        for algo in comp.algos:
            cell = comp.cell(task, algo)
            curves = [c for c in (r.curve("loss") for r in cell.runs) if c] if cell else []
            if not curves:
                continue
            length = min(len(c) for c in curves)  # runs of one cell share a budget (warned)
            steps = [s for s, _ in curves[0][:length]]
            values = np.array([[v for _, v in c[:length]] for c in curves])
            ax.plot(steps, values.mean(0), label=algo, color=colours[algo])
            ax.fill_between(steps, values.min(0), values.max(0), color=colours[algo], alpha=0.2)
            drawn = True
        ax.set_title(task, fontsize="medium")
        ax.set_xlabel("training step")
        ax.set_ylabel("loss")
        ax.grid(alpha=0.3)
    if not drawn:
        plt.close(fig)
        return ""
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize="small")
    _save(fig, path)
    return "Training loss (mean over seeds, band: min to max)"


def online_curves(comp: Comparison, path: Path) -> str:
    """Fig. 2 of the MADS4 paper for any online runs: per task, each algorithm's return of its
    training rollouts against env steps, mean over seeds with a ± 1 std band."""
    from marlbench.compare.results import learning_curves

    curves = learning_curves(comp.results.runs)
    if not curves:
        return ""
    colours, tasks = _colours(comp), sorted({c.task for c in curves})
    cols = min(3, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.2 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        for c in (c for c in curves if c.task == task):
            x, m, s = np.array(c.env_steps), np.array(c.mean), np.array(c.std)
            colour = colours.get(c.algo)
            ax.plot(x, m, label=f"{c.algo} ({c.seeds} seeds)", color=colour)
            ax.fill_between(x, m - s, m + s, color=colour, alpha=0.2)
        ax.set_title(task, fontsize="medium")
        ax.set_xlabel("environment steps")
        ax.set_ylabel("return (training rollouts)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(tasks):]:
        ax.set_visible(False)
    _save(fig, path)
    return "Online learning curves: return of the training rollouts (mean over seeds, ± 1 std)"
