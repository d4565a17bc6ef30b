"""Writing a comparison to a folder: every text format, the plots, and the leaderboard."""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path

from marlbench.compare import render
from marlbench.compare.analysis import Comparison
from marlbench.fsutil import write_text

LEADERBOARD = "leaderboard.md"


# Options that say where files live or how much is printed, not what is computed: whoever
# reproduces the runs uses their own folders (and committed reports name no local paths).
_LOCAL_OPTIONS = {"run": {"--datasets", "--results"},
                  "sweep": {"--datasets-root", "--results"},
                  "finetune": {"--results"},
                  "compare": set()}
_LOCAL_FLAGS = {"-q", "--quiet"}


def portable(command: str) -> str:
    """`command` without its folder options and verbosity flags."""
    words = shlex.split(command)
    local = _LOCAL_OPTIONS.get(words[1] if len(words) > 1 else "", set())
    kept, skip_value = [], False
    for word in words:
        if skip_value:
            skip_value = False
        elif word in _LOCAL_FLAGS:
            pass
        elif word.split("=", 1)[0] in local:
            skip_value = "=" not in word
        else:
            kept.append(word)
    return shlex.join(kept)


def reproduce_commands(comp: Comparison, compare_command: str) -> list[str]:
    """The commands that made the runs (as recorded in their run.json, made portable) and this
    comparison."""
    seen = dict.fromkeys(portable(r.command) for r in comp.results.runs if r.command)
    return [*seen, portable(compare_command)]


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
    curves = render.online_curves_csv(comp)
    if curves:  # online runs (MADS4 fine-tuning, MAPPO): their learning curves as data
        files["online_curves.csv"] = curves
    for name, text in files.items():
        write_text(out / name, text)
    return [out / name for name in files] + [out / name for name, _ in figures]
