"""Writing a comparison to a folder: every text format, the plots, and the leaderboard."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from marlbench.compare import render
from marlbench.compare.analysis import Comparison
from marlbench.fsutil import write_text

LEADERBOARD = "leaderboard.md"


def reproduce_commands(comp: Comparison, compare_command: str) -> list[str]:
    """The commands that made the runs (as recorded in their run.json) and this comparison."""
    seen = dict.fromkeys(r.command for r in comp.results.runs if r.command)
    return [*seen, compare_command]


def write_report(comp: Comparison, out: Path | str, compare_command: str,
                 plots: bool = True) -> list[Path]:
    """Write leaderboard.md, .tex, .csv, .json, marl-eval JSON and PNG plots into `out`."""
    from marlbench.compare.plots import write_plots  # matplotlib only when plotting

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures: Sequence[tuple[str, str]] = write_plots(comp, out) if plots else ()
    files = {
        LEADERBOARD: render.to_markdown(comp, figures, reproduce_commands(comp, compare_command)),
        "leaderboard.tex": render.to_latex(comp),
        "per_task.csv": render.to_csv(comp),
        "aggregate.csv": render.aggregate_csv(comp),
        "comparison.json": render.to_json(comp),
        "marl_eval.json": json.dumps(render.to_marl_eval(comp), indent=2) + "\n",
    }
    for name, text in files.items():
        write_text(out / name, text)
    return [out / name for name in files] + [out / name for name, _ in figures]
