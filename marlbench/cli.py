"""The ``marlbench`` command line."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import shlex
import signal
import sys
import threading
import typing
import warnings
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape as rich_escape
from rich.table import Table

from marlbench import __version__
from marlbench.errors import MarlbenchError
from marlbench.progress import RichReporter


class _Stdout:
    """Tables and data go to stdout (progress and messages to stderr); created per use so the
    terminal width is read when printing. Into a pipe or file (no terminal, no $COLUMNS) tables
    are as wide as their contents: nothing is cut or folded at 80 columns."""

    PIPE_WIDTH = 1000

    def print(self, *args, **kwargs) -> None:
        piped = not sys.stdout.isatty() and not os.environ.get("COLUMNS")
        Console(width=self.PIPE_WIDTH if piped else None).print(*args, **kwargs)


stdout = _Stdout()


def _reporter(quiet: bool) -> RichReporter:
    reporter = RichReporter(quiet=quiet)

    def show(message, category, filename, lineno, file=None, line=None):
        reporter.warn(str(message))

    warnings.showwarning = show
    return reporter


def _registry(reporter: RichReporter, warn: bool = True):
    """The plugin registry; each plugin that failed to load is warned about once (`plugins`
    lists them in a table instead)."""
    from marlbench.plugins import registry

    reg = registry()
    for failure in reg.failures if warn else ():
        reporter.warn(str(failure))
    return reg


def _error_line(message: str) -> None:
    """One line on stderr (newlines in a message are folded, so a script sees one line)."""
    text = " ".join(str(message).split())
    Console(stderr=True).print(f"[bold red]error:[/bold red] {text}", highlight=False,
                               soft_wrap=True, markup=True)


def _handle_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from marlbench.fsutil import describe_os_error

        try:
            return fn(*args, **kwargs)
        except MarlbenchError as exc:
            _error_line(rich_escape(str(exc)))
            sys.exit(1)
        except OSError as exc:  # an I/O failure no step named: still one line with the path
            where = f" {exc.filename}" if exc.filename else ""
            _error_line(rich_escape(f"{click.get_current_context().info_name} failed on"
                                    f"{where}: {describe_os_error(exc)}"))
            sys.exit(1)
        except KeyboardInterrupt:
            Console(stderr=True).print("[bold red]interrupted[/bold red]: nothing was published")
            sys.exit(130)

    return wrapper


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as a KeyboardInterrupt so that every Ctrl-C cleanup path runs.

    A subclass, not KeyboardInterrupt itself: CPython re-raises SIGINT at exit when an exact
    KeyboardInterrupt went unhandled somewhere it ran code, and with the bare class about one
    `marlbench run` in ten (3 of 32 measured) died by SIGINT (status -2) after cleaning up,
    instead of exiting with 130; none of 48 with this class."""


def _interrupt(signum, frame):
    raise Terminated


def _on_sigterm(handler):
    """Install `handler` for SIGTERM (main thread only); returns the previous one."""
    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler)


# click >= 8.2 raises this (a UsageError carrying the help text) for a group called bare.
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


class _OneLineErrors(click.Group):
    """Usage errors (a bad option value, a missing option) as one line on stderr, like every
    other error, instead of click's usage block."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        # SIGTERM (kill, timeout, a scheduler) cleans up like Ctrl-C: staging removed, locks
        # released, one line. The previous handler is restored for in-process callers.
        previous = _on_sigterm(_interrupt)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NO_ARGS_IS_HELP as exc:  # a bare group (`marlbench`): its help, as click shows
            exc.show()
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            _error_line(rich_escape(exc.format_message()) + hint)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            _error_line("aborted")
            sys.exit(1)
        finally:
            _on_sigterm(previous)
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"],
                                                   "max_content_width": 100})
@click.version_option(__version__, prog_name="marlbench")
def main() -> None:
    """Benchmark suite for offline multi-agent RL: train on datasets, evaluate in real envs."""


# ------------------------------------------------------------------------------------------------
# run
# ------------------------------------------------------------------------------------------------


def run_options(datasets_flags: tuple[str, ...] | None, **help_text: str):
    """The options `run`, `sweep`, `reproduce` and `finetune` share, as one decorator; the
    command receives them as keyword arguments that `_options` turns into one `RunOptions`.

    `datasets_flags`: the flags of the datasets root (`sweep` uses --datasets for names), or
    None for a command without a dataset (no --episodes, no datasets root). `help_text`
    replaces an option's help, by parameter name.
    """
    def option(name, *flags, **kw):
        kw["help"] = help_text.get(name, kw["help"])
        return click.option(*flags, name, **kw)

    shared = [
        option("steps", "--steps", default=None, type=int,
               help="Training updates. Default: the algorithm's budget "
                    "(`marlbench options ALGO`)."),
        option("eval_episodes", "--eval-episodes", default=30, show_default=True, type=int,
               help="Online evaluation episodes per cell (paper: 30)."),
        option("eval_parallel", "--eval-parallel", default=10, show_default=True, type=int,
               help="Evaluation envs stepped in lockstep (batched inference)."),
        option("device", "--device", default="cpu", show_default=True,
               help="torch device, e.g. cuda:0."),
        option("threads", "--threads", default=None, type=int,
               help="torch CPU threads [run: 1 for evaluation; for training 1 on machines "
                    "of <= 2 cores, else torch's default; sweep: CPU cores / --jobs]."),
        option("sets", "--set", multiple=True, metavar="KEY=VALUE",
               help="Override an algorithm option (of every algorithm in a sweep); "
                    "repeatable."),
        option("results_dir", "--results", default=None, type=click.Path(path_type=Path),
               help="Results root [default: $MARLBENCH_RESULTS or ./results]."),
        option("greedy", "--greedy", is_flag=True,
               help="Evaluate with argmax actions (default: sample from the masked policy)."),
        option("quiet", "--quiet", "-q", is_flag=True, help="No progress bars (for scripts)."),
    ]
    if datasets_flags is not None:
        shared[3:3] = [
            option("episodes", "--episodes", default=None, type=int,
                   help="Dataset size if it must be collected (paper: 1000)."),
            option("datasets_dir", *datasets_flags, default=None,
                   type=click.Path(path_type=Path),
                   help="Datasets root [default: $MARLBENCH_DATASETS or ./datasets]."),
        ]

    def decorate(fn):
        for opt in reversed(shared):
            fn = opt(fn)
        return fn

    return decorate


_OPTION_PARAMS = {"steps": "steps", "eval_episodes": "eval_episodes",
                  "eval_parallel": "eval_parallel", "episodes": "episodes", "device": "device",
                  "threads": "threads", "sets": "overrides", "results_dir": "results_root",
                  "datasets_dir": "datasets_root", "greedy": "greedy"}


def _options(params: dict, cls=None, **extra):
    """One `RunOptions` (or `cls`, a subclass) from the shared options, popped from `params`,
    plus `extra` fields; values are checked on creation."""
    from marlbench.config import parse_assignments
    from marlbench.runner import RunOptions

    values = {field: params.pop(name) for name, field in _OPTION_PARAMS.items()
              if name in params}
    values["overrides"] = parse_assignments(values["overrides"])
    return (cls or RunOptions)(**values, **extra)


def log_option(fn):
    """``--log``: experiment trackers (marlbench.loggers) for `run`, `sweep` and `finetune`."""
    return click.option(
        "--log", "log", default=None, metavar="NAMES",
        help="Experiment trackers, comma-separated: tensorboard, wandb, mlflow, csv (each "
             "but csv an extra). They write under <results>/logs [or $MARLBENCH_LOG_DIR].")(fn)


def _enable_loggers(reg, log: str | None) -> None:
    """Check --log (unknown name, missing extra: one line) and select those trackers."""
    from marlbench.loggers import enable

    enable(reg, log)


@main.command()
@click.option("--algo", required=True, help="Algorithm name (see `marlbench plugins`).")
@click.option("--env", required=True, help="Environment task, e.g. rware-tiny-2ag.")
@click.option("--dataset", default=None,
              help="Dataset name (expert, medium, expert-1000ep, ...) or .h5 path; collected "
                   "first if missing. Default: the env's default (RWARE: expert).")
@click.option("--seed", default=0, show_default=True, type=int, help="Training/eval seed.")
@run_options(("--datasets",))
@click.option("--overwrite", is_flag=True, help="Replace an existing result of this cell.")
@click.option("--label", default=None,
              help="Results folder (and compare column) for this run instead of the algorithm's "
                   "name, e.g. mads4-random for --set order=random.")
@log_option
@_handle_errors
def run(algo, env, dataset, seed, overwrite, label, quiet, log, **params) -> None:
    """Train ALGO on a dataset of ENV, evaluate it online, write results/<env>/<dataset>/..."""
    from marlbench.runner import RunRequest
    from marlbench.runner import run as run_cell

    options = _options(params, overwrite=overwrite, label=label)
    req = RunRequest.of(options, algo=algo, env=env, dataset=dataset, seed=seed)
    reporter = _reporter(quiet)
    reg = _registry(reporter)
    _enable_loggers(reg, log)
    summary = run_cell(req, reporter, reg)
    ev, card = summary["eval"], summary["dataset_card"]
    line = (f"{summary['algo']} on {summary['env']}/{summary['dataset']} seed {seed}: "
            f"return {ev['return_mean']:.2f} ± {ev['return_std']:.2f} over {ev['episodes']} "
            "episodes" + (f" (dataset {card['return_mean']:.2f})" if card else ""))
    if ev.get("win_rate") is not None:
        line += f", win rate {ev['win_rate']:.2f}"
    stdout.print(line, highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------------------------------
# finetune (MADS4's second stage)
# ------------------------------------------------------------------------------------------------


@main.command()
@click.option("--from", "source", required=True, type=click.Path(path_type=Path),
              help="A complete offline run: RESULTS/<env>/<dataset>/mads4/seed-K (or ids4, "
                   "mads4-dec).")
@click.option("--from-scratch", "scratch", is_flag=True,
              help="Same loop from a random initialisation (the paper's Fig. 2 baseline); "
                   "writes <algo>+scratch instead of <algo>+ft.")
@click.option("--env", default=None, help="Check that --from is a run of this env.")
@click.option("--seed", default=None, type=int, help="Seed [default: the offline run's].")
@run_options(None,
             steps="Updates (one episode per env each). Default: `marlbench options mads4+ft`.",
             eval_episodes="Online evaluation episodes after fine-tuning (paper: 30).",
             threads="torch CPU threads.",
             sets="Override a fine-tuning option (`marlbench options mads4+ft`); repeatable.",
             results_dir="Results root [default: the one the offline run is in].")
@click.option("--overwrite", is_flag=True, help="Replace an existing result of this cell.")
@log_option
@_handle_errors
def finetune(source, scratch, env, seed, overwrite, quiet, log, **params) -> None:
    """Fine-tune an offline MADS4 run on-policy (paper §4.2, Algorithm 2); writes
    <env>/<dataset>/mads4+ft/seed-K/ next to it (mads4+scratch with --from-scratch)."""
    from marlbench.finetune import FinetuneRequest
    from marlbench.finetune import finetune as finetune_cell

    req = _options(params, FinetuneRequest, source=source, scratch=scratch, env=env, seed=seed,
                   overwrite=overwrite)
    reporter = _reporter(quiet)
    reg = _registry(reporter)
    _enable_loggers(reg, log)
    summary = finetune_cell(req, reporter, reg)
    ev, start = summary["eval"], summary["finetuned_from"]["eval"] or {}
    line = (f"{summary['algo']} on {summary['env']}/{summary['dataset']} seed "
            f"{summary['seed']}: return {ev['return_mean']:.2f} ± {ev['return_std']:.2f} over "
            f"{ev['episodes']} episodes")
    if "return_mean" in start:
        line += f" (offline run {start['return_mean']:.2f})"
    stdout.print(line, highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------------------------------
# evaluate (a finished run, again)
# ------------------------------------------------------------------------------------------------


def _float_list(ctx, param, value: str | None) -> list[float] | None:
    if value is None:
        return None
    try:
        values = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) for v in values):
        raise click.BadParameter(f"expected comma-separated finite numbers, got {value!r}")
    return values


def _run_folders(paths: tuple[Path, ...]) -> list[Path]:
    """Each path is a run (seed-K with run.json) or a folder whose seed-* runs are taken."""
    from marlbench.runner import is_complete

    runs = []
    for path in paths:
        if is_complete(path):
            runs.append(path)
            continue
        found = sorted((p for p in path.glob("seed-*") if is_complete(p)),
                       key=lambda p: (len(p.name), p.name))  # seed-2 before seed-10
        if not found:
            raise MarlbenchError(f"{path} is neither a completed run (no run.json) nor a "
                                 "folder of seed-* runs")
        runs.extend(found)
    return runs


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--target-return", "targets", default=None, callback=_float_list,
              metavar="R1,R2,...",
              help="Return-to-go targets to evaluate at (return-conditioned algorithms: MADS4, "
                   "MADT, MADTKD), in the env's return units [default: the run's own].")
@click.option("--eval-episodes", "episodes", default=None, type=int,
              help="Evaluation episodes [default: the run's].")
@click.option("--seed", default=None, type=int,
              help="Evaluation seed [default: the run's; same seed, same episodes].")
@click.option("--greedy/--sampled", default=None,
              help="Argmax or sampled actions [default: as the run was evaluated].")
@click.option("--eval-parallel", "parallel", default=10, show_default=True, type=int,
              help="Evaluation envs stepped in lockstep (batched inference).")
@click.option("--device", default="cpu", show_default=True, help="torch device, e.g. cuda:0.")
@click.option("--threads", default=None, type=int, help="torch CPU threads [default: 1].")
@click.option("--json", "json_out", default=None, type=click.Path(path_type=Path),
              help="Also write every row, with its episodes' summary, to this JSON file.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars (for scripts).")
@_handle_errors
def evaluate(runs, targets, episodes, seed, greedy, parallel, device, threads, json_out,
             quiet) -> None:
    """Evaluate finished RUNS again without retraining (nothing is written into them): more
    episodes, another seed, or return targets other than the one trained for. A RUN is a
    results folder <env>/<dataset>/<algo>/seed-K, or its parent to take every seed."""
    from marlbench.config import check_seed
    from marlbench.fsutil import write_json
    from marlbench.reevaluate import reevaluate
    from marlbench.runner import RunOptions

    RunOptions(eval_parallel=parallel, threads=threads, device=device,  # checks the values
               **({} if episodes is None else {"eval_episodes": episodes}))
    if seed is not None:
        check_seed(seed)
    if json_out is not None and json_out.is_dir():
        raise MarlbenchError(f"--json {json_out} is a folder, not a file")
    folders = _run_folders(runs)
    reporter = _reporter(quiet)
    reg = _registry(reporter)
    rows = []
    for folder in folders:
        rows += reevaluate(folder, targets or [None], episodes=episodes, seed=seed,
                           greedy=greedy, parallel=parallel, device=device, threads=threads,
                           reporter=reporter, reg=reg)
    t = Table(title="Evaluation", title_justify="left")
    for col in ("run", "target return", "episodes", "return", "win rate"):
        t.add_column(col, justify="left" if col == "run" else "right")
    for r in rows:
        ev, target = r["eval"], r["target_return"]
        t.add_row(rich_escape(r["run"]), "-" if target is None else f"{target:.3g}",
                  str(ev["episodes"]), f"{ev['return_mean']:.3f} ± {ev['return_std']:.3f}",
                  "-" if ev["win_rate"] is None else f"{ev['win_rate']:.2f}")
    stdout.print(t)
    if json_out is not None:
        write_json(json_out, rows)


# ------------------------------------------------------------------------------------------------
# plugins / options
# ------------------------------------------------------------------------------------------------


@main.command()
@click.option("--all", "show_all", is_flag=True, help="List every environment task.")
@_handle_errors
def plugins(show_all: bool) -> None:
    """List registered algorithms and environments and which plugin provides them."""
    reporter = _reporter(False)
    reg = _registry(reporter, warn=False)  # failures: in the table below
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
    for spec, origin in reg.environments.values():
        groups.setdefault((str(origin), spec.family), []).append(spec)
    for (origin, family), specs in sorted(groups.items()):
        names = [s.name for s in specs]
        shown = ", ".join(names) if show_all or len(names) <= 8 else (
            ", ".join(n for n in names if "paper task" in _desc(reg, n))
            or ", ".join(names[:6])) + f" ... ({len(names)} tasks; --all lists them)"
        qualities = ", ".join(reg.recipes_for(specs[0]))
        t.add_row(origin, family, shown, qualities or "-")
    stdout.print(t)
    _print_loggers(reg)
    if reg.failures:
        t = Table(title="Plugins that failed to load", title_justify="left")
        for col in ("plugin", "distribution", "error"):
            t.add_column(col)
        for f in reg.failures:
            t.add_row(f.plugin, f.distribution, f.error)
        stdout.print(t)


def _print_loggers(reg) -> None:
    """The experiment trackers `--log` accepts, and whether each one's extra is installed."""
    from marlbench.loggers import available, check

    t = Table(title="Loggers (--log)", title_justify="left")
    for col in ("name", "installed", "description"):
        t.add_column(col)
    for name, spec in sorted(available(reg).items()):
        try:
            check(reg, [name])
            installed = "yes"
        except MarlbenchError:
            installed = f"no: pip install 'marlbench[{spec.extra}]'" if spec.extra else "no"
        t.add_row(name, installed, spec.description)
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
    """Generate, import, export, list, inspect and verify offline datasets."""


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

    root = store.root_dir(datasets_dir)
    if root.exists() and not root.is_dir():
        raise MarlbenchError(f"cannot list the datasets folder {root}: it is a file, not a "
                             "folder")
    t = Table(title=f"Datasets in {root}", title_justify="left")
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
    """A dataset file path, or ENV/NAME under the datasets root; an unknown ENV or NAME is
    reported with the closest existing ones."""
    from marlbench.data import store
    from marlbench.errors import UnknownNameError

    path = Path(target)
    if path.is_dir():
        raise MarlbenchError(f"{path} is a folder, not a dataset file")
    if path.exists() or target.endswith((".h5", ".hdf5")):
        return path
    env, sep, name = target.partition("/")
    if not sep or not env or not name or "/" in name:
        raise MarlbenchError(f"{target!r} is neither a dataset file nor ENV/NAME (e.g. "
                             "rware-tiny-2ag/expert)")
    path = store.dataset_path(env, name, datasets_dir)
    if path.exists():
        return path
    root = store.root_dir(datasets_dir)
    envs = sorted(p.name for p in root.glob("*") if p.is_dir()) if root.is_dir() else []
    if not envs:
        raise MarlbenchError(f"no dataset {path}: the datasets folder {root} holds no "
                             "datasets (see `marlbench datasets collect`)")
    if env not in envs:
        raise UnknownNameError(f"env in {root} (no folder {root / env})", env, envs)
    names = [p.stem for p in (root / env).glob("*.h5")]
    raise UnknownNameError(f"dataset of {env} (no file {path})", name, names)


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
            stdout.print(f"[red]FAIL[/red] {rich_escape(' '.join(str(exc).split()))}",
                         highlight=False, soft_wrap=True)
    if failed:
        raise MarlbenchError(f"{failed} of {len(targets)} datasets failed verification")


@datasets.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--format", "fmt", required=True,
              help="Source format: ogmarl-vault (OG-MARL/flashbax vault, needs the `vault` "
                   "extra), pymarl-npy (PyMARL/AlberDICE .npy dump), madt (MADT episode "
                   "pickles).")
@click.option("--env", required=True,
              help="Env task the data belongs to; shapes are checked against it.")
@click.option("--name", default=None,
              help="Dataset name [default: from the source path, e.g. ogmarl-5m_vs_6m-good].")
@click.option("--quality", default="imported", show_default=True,
              help="Quality label for the card (e.g. expert, good).")
@click.option("--allow-pickle", is_flag=True,
              help="Let the madt format unpickle its files (a pickle can run any code).")
@click.option("--datasets", "datasets_dir", default=None, type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True)
@click.option("--quiet", "-q", is_flag=True)
@_handle_errors
def datasets_import(path, fmt, env, name, quality, allow_pickle, datasets_dir, overwrite,
                    quiet) -> None:
    """Convert a published dataset at PATH into a marlbench dataset of ENV."""
    from marlbench import catalog
    from marlbench.data import importers, store
    from marlbench.data.importers.common import check_dims
    from marlbench.errors import DatasetError, UnknownNameError

    reporter = _reporter(quiet)
    if fmt not in importers.IMPORTERS:  # before the registry loads: a typo fails fast
        raise UnknownNameError("dataset format", fmt, importers.IMPORTERS)
    reg = _registry(reporter)
    spec = reg.environment(env)
    source = importers.open_source(fmt, path, allow_pickle=allow_pickle)
    check_dims(source, spec)  # before anything is converted
    name = name or importers.default_name(fmt, path)
    if store.is_path(name) or not name.strip():
        raise DatasetError(f"--name {name!r} must be a plain name, not a path")
    out = store.dataset_path(spec.name, name, datasets_dir)
    if out.exists() and not overwrite:
        raise DatasetError(f"{out} already exists (use --overwrite to replace it, or --name)")
    card = importers.write_dataset(
        source, spec, out, quality=quality, reporter=reporter,
        references=lambda: catalog.reference_returns(reg, spec, reporter))
    stdout.print(f"{out}: {card['episodes']} episodes, {card['steps']} steps, return "
                 f"{card['return_mean']:.2f} ± {card['return_std']:.2f}, sha256 "
                 f"{card['sha256']} (source sha256 {card['source_sha256']})", highlight=False,
                 soft_wrap=True)
    stdout.print(f"train on it: marlbench run --env {spec.name} --dataset {name} --algo bc",
                 highlight=False, soft_wrap=True)


@datasets.command("export")
@click.argument("target")
@click.option("--format", "fmt", required=True, help="Target format: ogmarl-vault.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Folder that receives <vault-name>/<uid>/ (OG-MARL's rel_dir).")
@click.option("--vault-name", default=None, help="[default: <env>.vlt]")
@click.option("--uid", default=None, help="[default: the dataset name]")
@click.option("--datasets", "datasets_dir", default=None, type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True)
@click.option("--quiet", "-q", is_flag=True)
@_handle_errors
def datasets_export(target, fmt, out_dir, vault_name, uid, datasets_dir, overwrite,
                    quiet) -> None:
    """Write TARGET (a file path or ENV/NAME) in another format, e.g. an OG-MARL vault."""
    from marlbench.data import importers
    from marlbench.data.schema import read_card

    export = importers.exporter(fmt)
    for opt, value in (("--vault-name", vault_name), ("--uid", uid)):
        if value is not None and (not value.strip() or "/" in value or os.sep in value
                                  or value in (".", "..")):
            raise MarlbenchError(f"{opt} {value!r} must be a plain folder name")
    path = _dataset_file(target, datasets_dir)
    card = read_card(path)
    final = export(path, out_dir, vault_name=vault_name or f"{card['env']}.vlt",
                   uid=uid or path.stem, overwrite=overwrite, reporter=_reporter(quiet))
    stdout.print(f"{final}: {card['episodes']} episodes, {card['steps']} steps "
                 f"(dataset sha256 {card['sha256']})", highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------------------------------
# sweep
# ------------------------------------------------------------------------------------------------


@main.command()
@click.option("--algos", required=True, help="Comma-separated algorithms, e.g. mads4,ids4,bc.")
@click.option("--envs", required=True, help="Comma-separated env tasks.")
@click.option("--datasets", "dataset_names", default=None,
              help="Comma-separated dataset names (collected first if missing). Default: each "
                   "env's default (RWARE: expert).")
@click.option("--seeds", default="0-4", show_default=True,
              help="Seeds, e.g. 0-4 or 0,2,5-7 (paper: 5 seeds).")
@click.option("--jobs", "-j", default=1, show_default=True, type=int,
              help="Cells run at once, each in its own process (with --executor ray and no "
                   "--address: the local Ray cluster's size).")
@click.option("--executor", default="local", show_default=True,
              type=click.Choice(["local", "ray"]),
              help="Where cells run: local processes, or Ray tasks (extra 'ray').")
@click.option("--address", default=None, metavar="HOST:PORT",
              help="With --executor ray: the Ray cluster to use (results and datasets folders "
                   "must be on a filesystem its nodes share). Default: start a local one.")
@run_options(("--datasets-root",))
@click.option("--dry-run", is_flag=True, help="List the cells and whether they are complete.")
@log_option
@_handle_errors
def sweep(algos, envs, dataset_names, seeds, jobs, executor, address, dry_run, quiet, log,
          **params) -> None:
    """Run every (algorithm, env, dataset, seed) cell; complete cells are skipped, so a killed
    sweep resumes where it stopped. A failing cell is recorded and the others go on."""
    from marlbench.executors import make_executor
    from marlbench.runner import is_complete
    from marlbench.sweep import parse_names, parse_seeds, plan
    from marlbench.sweep import sweep as run_sweep

    options = _options(params)
    seed_list = parse_seeds(seeds)
    # validates --jobs, and that a Ray cluster answers, before any work
    executor = make_executor(executor, jobs, options.threads, address)
    reporter = _reporter(quiet)
    reg = _registry(reporter)
    _enable_loggers(reg, log)
    tasks = plan(reg, parse_names(algos), parse_names(envs), parse_names(dataset_names),
                 seed_list, options, reporter, collect=not dry_run)
    if dry_run:
        t = Table(title=f"{len(tasks)} cells", title_justify="left")
        for col in ("algorithm", "env", "dataset", "seed", "state"):
            t.add_column(col)
        for task in tasks:
            c = task.cell
            t.add_row(c.algo, c.env, c.dataset, str(c.seed),
                      "complete" if is_complete(task.path) else "to run")
        stdout.print(t)
        return
    reporter.info(f"{len(tasks)} cells, {executor.describe()}")
    summary = run_sweep(tasks, executor, reporter)
    _print_sweep_summary(summary)
    if summary.failed:
        raise MarlbenchError(f"{len(summary.failed)} of {len(tasks)} cells failed; their "
                             "errors are in seed-<k>.error.json next to each cell. Re-run the "
                             "same command to retry them.")


def _print_sweep_summary(summary) -> None:
    ran = [o for o in summary.outcomes if o.status != "skipped"]
    if ran:
        t = Table(title="Cells run", title_justify="left")
        for col in ("cell", "status", "return", "seconds", "error"):
            t.add_column(col)
        for o in ran:
            t.add_row(str(o.cell), o.status,
                      "-" if o.return_mean is None else f"{o.return_mean:.2f}",
                      f"{o.seconds:.0f}", o.error or "")
        stdout.print(t)
    stdout.print(f"sweep: {summary.count('done')} done, {summary.count('failed')} failed, "
                 f"{summary.count('skipped')} skipped (already complete) in "
                 f"{summary.seconds:.0f} s", highlight=False)


# ------------------------------------------------------------------------------------------------
# reproduce
# ------------------------------------------------------------------------------------------------


@main.command()
@click.argument("preset", required=False)
@click.option("--seeds", default=None, help="Seeds [default: the preset's, paper: 0-4].")
@click.option("--budget", default="cpu", show_default=True, type=click.Choice(["cpu", "paper"]),
              help="cpu: the algorithms' default budgets; paper: the papers' budgets (GPU).")
@click.option("--jobs", "-j", default=1, show_default=True, type=int,
              help="Offline cells run at once (as in sweep).")
@click.option("--executor", default="local", show_default=True,
              type=click.Choice(["local", "ray"]), help="Where offline cells run (as in sweep).")
@click.option("--address", default=None, metavar="HOST:PORT",
              help="With --executor ray: the cluster to use.")
@run_options(("--datasets-root",))
@click.option("--dry-run", is_flag=True,
              help="List the cells, which are complete, and the estimated cost.")
@click.option("--report", "report_path", default=None, type=click.Path(path_type=Path),
              help="Write the reproduction report (every claim of PRESET, or of every preset, "
                   "judged on the runs under --results, or on those recorded by the "
                   "leaderboards when --results is a folder of compare outputs such as "
                   "results/leaderboard) to this file; runs nothing.")
@log_option
@_handle_errors
def reproduce(preset, seeds, budget, jobs, executor, address, dry_run, report_path, quiet, log,
              **params) -> None:
    """Run a paper's benchmark PRESET (see `marlbench reproduce` for the list) through the
    sweep machinery: resumable, locked cells; then `marlbench compare`."""
    from marlbench import reproduce as rp
    from marlbench.executors import make_executor
    from marlbench.sweep import parse_seeds

    if report_path is not None:
        from marlbench.fsutil import io_step, write_text

        presets = [rp.load_preset(n) for n in ([preset] if preset else rp.available())]
        text = rp.report(presets, params["results_dir"])
        with io_step("write the reproduction report", report_path):
            write_text(report_path, text)
        stdout.print(f"wrote {report_path}", highlight=False)
        return
    if preset is None:
        t = Table(title="presets (marlbench reproduce PRESET)", title_justify="left")
        for col in ("preset", "what", "parts"):
            t.add_column(col)
        for name in rp.available():
            p = rp.load_preset(name)
            t.add_row(name, p.title, ", ".join(part.name for part in p.parts))
        stdout.print(t)
        return
    spec = rp.load_preset(preset)
    options = _options(params)
    seed_list = parse_seeds(seeds or spec.seeds)
    if address is not None and executor != "ray":  # also refused by a dry run
        raise MarlbenchError("--address applies to --executor ray only")
    executor_obj = None if dry_run else make_executor(executor, jobs, options.threads, address)
    reporter = _reporter(quiet)
    reg = _registry(reporter)
    _enable_loggers(reg, log)
    planned = rp.plan_preset(reg, spec, seed_list, budget, options, reporter,
                             collect=not dry_run)
    if dry_run:
        _print_reproduce_plan(reg, spec, planned, options, jobs)
        return
    from marlbench.sweep import sweep as run_sweep

    offline = [t for item in planned if item.part.stage == "offline" for t in item.tasks]
    reporter.info(f"{spec.name}: {len(offline)} offline cells, {executor_obj.describe()}")
    summary = run_sweep(offline, executor_obj, reporter)
    _print_sweep_summary(summary)
    failed = len(summary.failed) + _reproduce_finetune(planned, options, reporter, reg)
    if failed:
        raise MarlbenchError(f"{failed} cells of {spec.name} failed; re-run the same command "
                             "to retry them")


def _reproduce_finetune(planned, options, reporter, reg) -> int:
    """Finetune parts, one cell after another (each continues a complete offline run)."""
    from dataclasses import fields

    from marlbench.finetune import FinetuneRequest, finetune
    from marlbench.runner import RunOptions, is_complete

    failed = 0
    for item in planned:
        if item.part.stage != "finetune":
            continue
        for cell in item.tasks:
            if is_complete(cell.target):
                continue
            if not is_complete(cell.source):
                reporter.warn(f"{cell.target}: its offline run {cell.source} is not complete")
                failed += 1
                continue
            # the run options of the offline cells, but the fine-tuner's own steps and `set`
            shared = {f.name: getattr(options, f.name) for f in fields(RunOptions)}
            req = FinetuneRequest(**{**shared, "steps": item.part.steps,
                                     "overrides": dict(item.part.overrides), "label": None,
                                     "log_every": 1},
                                  source=cell.source, scratch=item.part.scratch)
            try:
                result = finetune(req, reporter, reg)
            except MarlbenchError as exc:
                reporter.warn(f"{cell.target} failed: {exc}")
                failed += 1
                continue
            reporter.info(f"{cell.target}: return {result['eval']['return_mean']:.2f}")
    return failed


def _print_reproduce_plan(reg, spec, planned, options, jobs) -> None:
    from marlbench import reproduce as rp
    from marlbench.runner import is_complete

    measured, family_of = rp.measurements(options.results_root), rp.env_families(reg)
    t = Table(title=f"{spec.title} ({spec.paper})", title_justify="left")
    for col in ("part", "feeds", "algorithm", "env", "dataset", "seed", "state", "estimate",
                "basis"):
        t.add_column(col)
    total, unknown, to_run, complete = 0.0, 0, 0, 0
    for item in planned:
        part = item.part
        for task in item.tasks:
            done = is_complete(task.path)
            complete += done
            if item.part.stage == "offline":
                c = task.cell
                folder, env, dataset, seed = task.path.parent.name, c.env, c.dataset, c.seed
                steps, episodes = rp.cell_steps(reg, task), task.options.eval_episodes
            else:
                folder = task.target.parent.name
                env, dataset = task.target.parts[-4], task.target.parts[-3]
                seed = int(task.target.name.split("-")[1])
                steps, episodes = rp.finetune_steps(reg, part), options.eval_episodes
            n_agents = reg.environment(env).info.n_agents
            variant_of = task.cell.algo if part.stage == "offline" and part.label else None
            seconds, basis = rp.estimate(folder, env, n_agents, steps, episodes, measured,
                                         family_of, variant_of)
            if not done:
                to_run += 1
                if seconds is None:
                    unknown += 1
                else:
                    total += seconds
            t.add_row(part.name, part.feeds, folder, env, dataset, str(seed),
                      "complete" if done else "to run", rp.describe_cost(seconds), basis)
    stdout.print(t)
    line = (f"{len([1 for i in planned for _ in i.tasks])} cells: {complete} complete, "
            f"{to_run} to run; estimated {total / 3600:.1f} core-hours for "
            f"{to_run - unknown} measured cells (~{total / 3600 / max(jobs, 1):.1f} h with "
            f"--jobs {jobs})")
    if unknown:
        line += (f"; {unknown} cells have no measurement yet (no completed run of their "
                 "algorithm under the results folder)")
    stdout.print(line, highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------------------------------
# compare
# ------------------------------------------------------------------------------------------------

COMPARE_FORMATS = ("table", "markdown", "latex", "csv", "json", "marl-eval")


@main.command()
@click.argument("results_dir", required=False, type=click.Path(path_type=Path))
@click.option("--envs", default=None,
              help="Only these env tasks (comma-separated; also their row order).")
@click.option("--algos", default=None,
              help="Only these algorithms (comma-separated; also their column order).")
@click.option("--datasets", "dataset_names", default=None,
              help="Only these datasets (comma-separated), e.g. expert.")
@click.option("--pairs", default=None,
              help="Probability of improvement for X:Y pairs, e.g. mads4:bc,mads4:ids4. "
                   "Default: the best algorithm by IQM against each other.")
@click.option("--format", "fmt", type=click.Choice(COMPARE_FORMATS), default="table",
              show_default=True, help="What to print on stdout.")
@click.option("--out", "out_dir", default=None, type=click.Path(path_type=Path),
              help="Also write every format, PNG plots and leaderboard.md into this folder.")
@click.option("--reps", default=50_000, show_default=True, type=int,
              help="Bootstrap resamples for the intervals (rliable's default).")
@click.option("--seed", default=0, show_default=True, type=int, help="Bootstrap seed.")
@click.option("--alpha", default=0.05, show_default=True, type=float,
              help="Significance level after Holm correction.")
@click.option("--holm-family", type=click.Choice(["task", "table"]), default="task",
              show_default=True,
              help="Holm-correct each task's tests together (task) or every test of the "
                   "table together (table).")
@click.option("--no-plots", is_flag=True, help="With --out: skip the PNG figures.")
@_handle_errors
def compare(results_dir, envs, algos, dataset_names, pairs, fmt, out_dir, reps, seed, alpha,
            holm_family, no_plots) -> None:
    """Compare the runs under RESULTS_DIR [default: $MARLBENCH_RESULTS or ./results]: per-task
    tables with significance tests, normalised aggregates with intervals, plots."""
    import json

    from marlbench import compare as cmp
    from marlbench.compare import render
    from marlbench.runner import results_root
    from marlbench.sweep import parse_names

    if not 0 < alpha < 1:
        raise MarlbenchError(f"--alpha must be between 0 and 1 (got {alpha})")
    if reps < 0:
        raise MarlbenchError(f"--reps must be non-negative (got {reps})")
    from marlbench.config import check_seed

    check_seed(seed)
    pair_list = cmp.parse_pairs(pairs)
    for x, y in pair_list:
        if x == y:
            raise MarlbenchError(f"--pairs {x}:{y} compares {x} with itself")
    if out_dir is not None:
        from marlbench.fsutil import check_writable_dir

        check_writable_dir(out_dir, "report")
    reporter = _reporter(False)
    root = results_root(results_dir)
    algo_list, env_list = parse_names(algos), parse_names(envs)
    results = cmp.load_results(root, env_list, algo_list, parse_names(dataset_names))
    comp = cmp.compare(results, pair_list, algo_list, reps=reps, seed=seed,
                       alpha=alpha, holm_family=holm_family, env_order=env_list)
    for warning in comp.warnings:
        reporter.warn(warning)
    if fmt == "table":
        for table in render.rich_tables(comp):
            stdout.print(table)
    else:
        text = {"markdown": lambda: render.to_markdown(comp),
                "latex": lambda: render.to_latex(comp),
                "csv": lambda: render.to_csv(comp),
                "json": lambda: render.to_json(comp),
                "marl-eval": lambda: json.dumps(render.to_marl_eval(comp), indent=2)}[fmt]()
        click.echo(text, nl=not text.endswith("\n"))
    if out_dir is not None:
        files = cmp.write_report(comp, out_dir, _command_given(), plots=not no_plots)
        reporter.info(f"wrote {len(files)} files to {out_dir} (leaderboard: "
                      f"{out_dir / cmp.report.LEADERBOARD})")


def _command_given() -> str:
    """The current command as typed: its name and the parameters given on the command line."""
    ctx = click.get_current_context()
    words = ["marlbench", ctx.info_name]
    for param in ctx.command.params:
        if ctx.get_parameter_source(param.name) is not click.core.ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[param.name]
        if not isinstance(param, click.Option):
            words.append(str(value))
        elif param.is_flag:
            words.append(param.opts[0])
        else:
            words += [param.opts[0], str(value)]
    return shlex.join(words)


if __name__ == "__main__":
    main()
