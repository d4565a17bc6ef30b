"""The ``marlbench`` command line."""

from __future__ import annotations

import dataclasses
import functools
import sys
import typing
import warnings
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from marlbench import __version__
from marlbench.errors import MarlbenchError
from marlbench.progress import RichReporter



class _Stdout:
    """Tables and data go to stdout (progress and messages to stderr); created per use so the
    terminal width is read when printing."""

    def print(self, *args, **kwargs) -> None:
        Console().print(*args, **kwargs)


stdout = _Stdout()


def _reporter(quiet: bool) -> RichReporter:
    reporter = RichReporter(quiet=quiet)

    def show(message, category, filename, lineno, file=None, line=None):
        reporter.warn(str(message))

    warnings.showwarning = show
    return reporter


def _registry(reporter: RichReporter):
    from marlbench.plugins import registry

    reg = registry()
    for failure in reg.failures:
        reporter.warn(str(failure))
    return reg


def _handle_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MarlbenchError as exc:
            Console(stderr=True).print(f"[bold red]error:[/bold red] {exc}", highlight=False,
                                      soft_wrap=True)
            sys.exit(1)
        except KeyboardInterrupt:
            Console(stderr=True).print("[bold red]interrupted[/bold red]: nothing was published")
            sys.exit(130)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"],
                               "max_content_width": 100})
@click.version_option(__version__, prog_name="marlbench")
def main() -> None:
    """Benchmark suite for offline multi-agent RL: train on datasets, evaluate in real envs."""


# ------------------------------------------------------------------------------------------------
# run
# ------------------------------------------------------------------------------------------------


@main.command()
@click.option("--algo", required=True, help="Algorithm name (see `marlbench plugins`).")
@click.option("--env", required=True, help="Environment task, e.g. rware-tiny-2ag.")
@click.option("--dataset", default=None,
              help="Dataset name (expert, medium, expert-1000ep, ...) or .h5 path; collected "
                   "first if missing. Default: the env's default (RWARE: expert).")
@click.option("--seed", default=0, show_default=True, type=int, help="Training/eval seed.")
@click.option("--steps", default=None, type=int,
              help="Training updates. Default: the algorithm's budget (`marlbench options`).")
@click.option("--eval-episodes", default=30, show_default=True, type=int,
              help="Online evaluation episodes (paper: 30).")
@click.option("--eval-parallel", default=10, show_default=True, type=int,
              help="Evaluation envs stepped in lockstep (batched inference).")
@click.option("--episodes", default=None, type=int,
              help="Dataset size if it must be collected (paper: 1000).")
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cuda:0.")
@click.option("--threads", default=None, type=int, help="torch CPU threads (default: torch's).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override an algorithm option; repeatable.")
@click.option("--results", "results_dir", default=None, type=click.Path(path_type=Path),
              help="Results root [default: $MARLBENCH_RESULTS or ./results].")
@click.option("--datasets", "datasets_dir", default=None, type=click.Path(path_type=Path),
              help="Datasets root [default: $MARLBENCH_DATASETS or ./datasets].")
@click.option("--greedy", is_flag=True,
              help="Evaluate with argmax actions (default: sample from the masked policy).")
@click.option("--overwrite", is_flag=True, help="Replace an existing result of this cell.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars (for scripts).")
@_handle_errors
def run(algo, env, dataset, seed, steps, eval_episodes, eval_parallel, episodes, device,
        threads, sets, results_dir, datasets_dir, greedy, overwrite, quiet) -> None:
    """Train ALGO on a dataset of ENV, evaluate it online, write results/<env>/<dataset>/..."""
    from marlbench.config import parse_assignments
    from marlbench.runner import RunRequest
    from marlbench.runner import run as run_cell

    reporter = _reporter(quiet)
    reg = _registry(reporter)
    req = RunRequest(algo=algo, env=env, dataset=dataset, seed=seed, steps=steps,
                     eval_episodes=eval_episodes, eval_parallel=eval_parallel,
                     episodes=episodes, device=device, overrides=parse_assignments(sets),
                     results_root=results_dir, datasets_root=datasets_dir,
                     overwrite=overwrite, threads=threads, greedy=greedy)
    summary = run_cell(req, reporter, reg)
    ev, card = summary["eval"], summary["dataset_card"]
    line = (f"{summary['algo']} on {summary['env']}/{summary['dataset']} seed {seed}: "
            f"return {ev['return_mean']:.2f} ± {ev['return_std']:.2f} over {ev['episodes']} "
            f"episodes (dataset {card['return_mean']:.2f})")
    if ev.get("win_rate") is not None:
        line += f", win rate {ev['win_rate']:.2f}"
    stdout.print(line, highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------------------------------
# plugins / options
# ------------------------------------------------------------------------------------------------


@main.command()
@click.option("--all", "show_all", is_flag=True, help="List every environment task.")
@_handle_errors
def plugins(show_all: bool) -> None:
    """List registered algorithms and environments and which plugin provides them."""
    reporter = _reporter(False)
    reg = _registry(reporter)
    t = Table(title="Algorithms", title_justify="left")
    for col in ("name", "execution", "global state", "plugin", "description"):
        t.add_column(col)
    for name, (spec, origin) in sorted(reg.algorithms.items()):
        t.add_row(name, spec.execution, "yes" if spec.uses_global_state else "no", str(origin),
                  spec.description)
    stdout.print(t)
    t = Table(title="Environments", title_justify="left")
    for col in ("plugin", "family", "tasks", "datasets"):
        t.add_column(col)
    groups: dict[tuple[str, str], list] = {}
    for name, (spec, origin) in reg.environments.items():
        groups.setdefault((str(origin), spec.family), []).append(spec)
    for (origin, family), specs in sorted(groups.items()):
        names = [s.name for s in specs]
        shown = ", ".join(names) if show_all or len(names) <= 8 else (
            ", ".join(n for n in names if "paper task" in _desc(reg, n))
            or ", ".join(names[:6])) + f" ... ({len(names)} tasks; --all lists them)"
        qualities = ", ".join(reg.recipes_for(specs[0]))
        t.add_row(origin, family, shown, qualities or "-")
    stdout.print(t)
    if reg.failures:
        t = Table(title="Plugins that failed to load", title_justify="left")
        for col in ("plugin", "distribution", "error"):
            t.add_column(col)
        for f in reg.failures:
            t.add_row(f.plugin, f.distribution, f.error)
        stdout.print(t)


def _desc(reg, name: str) -> str:
    return reg.environments[name][0].description


@main.command()
@click.argument("algo")
@_handle_errors
def options(algo: str) -> None:
    """Show ALGO's options (for --set) with their defaults."""
    reg = _registry(_reporter(False))
    spec = reg.algorithm(algo)
    hints = typing.get_type_hints(spec.config_cls)
    t = Table(title=f"{algo} options ({spec.config_cls.__qualname__})", title_justify="left")
    for col in ("option", "type", "default", "preset"):
        t.add_column(col)
    for f in dataclasses.fields(spec.config_cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        t.add_row(f.name, _type_name(hints[f.name]), repr(default),
                  repr(spec.preset[f.name]) if f.name in spec.preset else "")
    stdout.print(t)
    stdout.print(f"Defaults and their sources: {spec.cls.__module__} ({spec.paper})")


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


# ------------------------------------------------------------------------------------------------
# datasets
# ------------------------------------------------------------------------------------------------


@main.group()
def datasets() -> None:
    """Generate, list, inspect and verify offline datasets."""


@datasets.command("collect")
@click.option("--env", required=True)
@click.option("--quality", required=True, help="Recipe, e.g. expert, medium, poor, random.")
@click.option("--episodes", default=None, type=int, help="Default: the recipe's (200).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", "out_path", default=None, type=click.Path(path_type=Path),
              help="Output file [default: <datasets>/<env>/<name>.h5].")
@click.option("--datasets", "datasets_dir", default=None, type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True)
@click.option("--quiet", "-q", is_flag=True)
@_handle_errors
def datasets_collect(env, quality, episodes, seed, out_path, datasets_dir, overwrite, quiet):
    """Collect a dataset with a behaviour policy (deterministic given --seed)."""
    from marlbench.catalog import collect_dataset

    reporter = _reporter(quiet)
    reg = _registry(reporter)
    spec = reg.environment(env)
    path, card = collect_dataset(reg, spec, quality, episodes=episodes, seed=seed,
                                 root=datasets_dir, out=out_path, overwrite=overwrite,
                                 reporter=reporter)
    stdout.print(f"{path}: {card['episodes']} episodes, {card['steps']} steps, return "
              f"{card['return_mean']:.2f} ± {card['return_std']:.2f}, sha256 {card['sha256']}",
              highlight=False)



@datasets.command("list")
@click.option("--datasets", "datasets_dir", default=None, type=click.Path(path_type=Path))
@_handle_errors
def datasets_list(datasets_dir) -> None:
    """List datasets under the datasets root with their cards."""
    from marlbench.data import store
    from marlbench.data.schema import read_card

    t = Table(title=f"Datasets in {store.root_dir(datasets_dir)}", title_justify="left")
    for col in ("env", "name", "episodes", "steps", "return mean ± std", "max", "win rate",
                "sha256"):
        t.add_column(col)
    for path in store.list_files(datasets_dir):
        try:
            c = read_card(path)
        except MarlbenchError as exc:
            t.add_row(path.parent.name, path.stem, "-", "-", f"[red]{exc}[/red]", "", "", "")
            continue
        wr = c.get("win_rate")
        t.add_row(path.parent.name, path.stem, str(c["episodes"]), str(c["steps"]),
                  f"{c['return_mean']:.2f} ± {c['return_std']:.2f}", f"{c['return_max']:.2f}",
                  "-" if wr is None else f"{wr:.2f}", c["sha256"][:12])
    stdout.print(t)


def _dataset_file(target: str, datasets_dir) -> Path:
    from marlbench.data import store

    path = Path(target)
    if path.exists() or target.endswith((".h5", ".hdf5")):
        return path
    env, _, name = target.partition("/")
    return store.dataset_path(env, name, datasets_dir)


@datasets.command("info")
@click.argument("target")
@click.option("--datasets", "datasets_dir", default=None, type=click.Path(path_type=Path))
@_handle_errors
def datasets_info(target, datasets_dir) -> None:
    """Print the card of TARGET (a file path or ENV/NAME)."""
    from marlbench.data.schema import read_card

    card = read_card(_dataset_file(target, datasets_dir))
    t = Table(show_header=False)
    for k, v in card.items():
        t.add_row(k, str(v))
    stdout.print(t)


@datasets.command("verify")
@click.argument("targets", nargs=-1, required=True)
@click.option("--datasets", "datasets_dir", default=None, type=click.Path(path_type=Path))
@_handle_errors
def datasets_verify(targets, datasets_dir) -> None:
    """Recompute the sha256 of each TARGET's arrays and check it against its card."""
    from marlbench.data.schema import read_arrays

    failed = 0
    for target in targets:
        path = _dataset_file(target, datasets_dir)
        try:
            card, _ = read_arrays(path, verify=True)
            stdout.print(f"[green]ok[/green]   {path}  sha256 {card['sha256']}", highlight=False)
        except MarlbenchError as exc:
            failed += 1
            stdout.print(f"[red]FAIL[/red] {exc}", highlight=False)
    if failed:
        raise MarlbenchError(f"{failed} of {len(targets)} datasets failed verification")


if __name__ == "__main__":
    main()
