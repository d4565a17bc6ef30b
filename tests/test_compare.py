"""`marlbench compare`: statistics checked against independent computations, warnings for
incomplete or inconsistent results, and every output format from the CLI.

Results folders here are written by `_write_run` in the layout the runner produces (run.json,
eval.json, metrics.jsonl), so the numbers in them are known exactly.
"""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
import scipy.stats
from click.testing import CliRunner

from marlbench.cli import main
from marlbench.compare import compare, load_results, parse_pairs, stats
from marlbench.compare.render import MWU_MARK, cell_parts, to_markdown
from marlbench.errors import MarlbenchError, UnknownNameError

REFS = {"random": 1.0, "expert": 11.0}
REPS = 2000  # bootstrap resamples in tests: enough for stable intervals, fast


def _write_run(root, env, dataset, algo, seed, episode_returns, *, commit="c0ffee",
               sha="a" * 64, refs=REFS, steps=100):
    cell = root / env / dataset / algo / f"seed-{seed}"
    cell.mkdir(parents=True)
    returns = [float(r) for r in episode_returns]
    (cell / "eval.json").write_text(json.dumps(
        {"episodes": [{"episode": i, "return": r, "length": 500} for i, r in enumerate(returns)]}))
    (cell / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (steps // 2, steps)))
    (cell / "run.json").write_text(json.dumps({
        "algo": algo, "env": env, "dataset": dataset, "seed": seed,
        "eval": {"return_mean": float(np.mean(returns)), "episodes": len(returns)},
        "train": {"steps": steps}, "code_commit": commit,
        "dataset_card": {"sha256": sha, "reference_returns": refs},
        "command": f"marlbench sweep --algos {algo}"}))


# Per-run scores (each run's mean evaluation return) of a 2-task, 3-algorithm grid.
SCORES = {
    ("rware-tiny-2ag", "a"): [8.0, 8.5, 9.0, 8.2, 8.9],
    ("rware-tiny-2ag", "b"): [6.0, 6.4, 5.9, 6.8, 6.1],
    ("rware-tiny-2ag", "c"): [7.9, 8.8, 8.1, 9.2, 8.0],
    ("rware-tiny-4ag", "a"): [3.0, 3.5, 2.8, 3.1, 3.3],
    ("rware-tiny-4ag", "b"): [4.0, 4.2, 3.9, 4.4, 4.1],
    ("rware-tiny-4ag", "c"): [1.0, 1.1, 0.9, 1.2, 1.0],
}


@pytest.fixture
def grid(tmp_path):
    root = tmp_path / "results"
    for (env, algo), runs in SCORES.items():
        for seed, score in enumerate(runs):
            _write_run(root, env, "expert", algo, seed, [score - 0.5, score + 0.5])
    return root


def _holm_by_hand(p):
    """Holm step-down: sort ascending, multiply the i-th smallest by (m - i), enforce
    monotonicity, cap at 1."""
    p = np.asarray(p, float)
    order = np.argsort(p)
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (len(p) - np.arange(len(p)))))
    out = np.empty_like(p)
    out[order] = adjusted
    return out


def test_holm_on_a_known_pvalue_set():
    got = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert got == pytest.approx([0.03, 0.06, 0.06, 0.02])
    got = stats.holm([0.2, math.nan, 0.01])  # nan is left out of the family
    assert got[0] == pytest.approx(0.2) and math.isnan(got[1]) and got[2] == pytest.approx(0.02)


def test_per_task_means_tests_and_holm_match_independent_computation(grid):
    comp = compare(load_results(grid), reps=0)
    whole = compare(load_results(grid), reps=0, holm_family="table")
    family = []
    for env, best in (("rware-tiny-2ag", "a"), ("rware-tiny-4ag", "b")):
        task = f"{env}/expert"
        assert comp.cell(task, best).best
        best_scores = np.array(SCORES[(env, best)])
        for algo in "abc":
            cell, x = comp.cell(task, algo), np.array(SCORES[(env, algo)])
            assert cell.mean == pytest.approx(x.mean())
            assert cell.std == pytest.approx(np.std(x, ddof=1))
            if algo == best:
                assert math.isnan(cell.p_welch)
                continue
            assert cell.p_welch == pytest.approx(
                scipy.stats.ttest_ind(x, best_scores, equal_var=False).pvalue)
            assert cell.p_mwu == pytest.approx(
                scipy.stats.mannwhitneyu(x, best_scores, alternative="two-sided").pvalue)
            family.append(cell)
    assert len(family) == 4
    for attr in ("p_welch", "p_mwu"):
        # default: one Holm family per task (its 2 tests against its best)
        for task_family in (family[:2], family[2:]):
            expected = _holm_by_hand([getattr(c, attr) for c in task_family])
            assert [getattr(c, f"{attr}_holm") for c in task_family] == pytest.approx(expected)
        # holm_family="table": one family across the whole table
        cells = [whole.cell(c.task, c.algo) for c in family]
        expected = _holm_by_hand([getattr(c, attr) for c in cells])
        assert [getattr(c, f"{attr}_holm") for c in cells] == pytest.approx(expected)
    # c on tiny-2ag is close to a: no mark; b is far below: both tests mark it
    assert cell_parts(comp, "rware-tiny-2ag/expert", "c")[2] == ""
    assert cell_parts(comp, "rware-tiny-2ag/expert", "b")[2] == "*†"
    assert cell_parts(comp, "rware-tiny-2ag/expert", "a")[:2] == ("8.52 ± 0.43", True)


def test_complete_separation_over_five_seeds_is_marked_per_task(tmp_path):
    # 3 tasks x 4 algorithms: on each task, "low" lies entirely below the best over 5 seeds
    # (exact two-sided Mann-Whitney p = 2/252 = 0.0079), the others overlap the best.
    root = tmp_path / "r"
    scores = {"best": [10.0, 10.2, 10.4, 10.6, 10.8], "near1": [10.1, 10.3, 10.5, 10.7, 9.9],
              "near2": [10.05, 10.25, 10.45, 10.65, 9.8], "low": [5.0, 5.2, 5.4, 5.6, 5.8]}
    envs = ("rware-tiny-2ag", "rware-tiny-4ag", "rware-small-2ag")
    for env in envs:
        for algo, runs in scores.items():
            for seed, score in enumerate(runs):
                _write_run(root, env, "expert", algo, seed, [score])
    comp = compare(load_results(root), reps=0)
    whole = compare(load_results(root), reps=0, holm_family="table")
    for env in envs:
        task = f"{env}/expert"
        assert comp.cell(task, "low").p_mwu == pytest.approx(2 / 252)
        # 3 comparisons per task: 3 x 0.0079 < 0.05, so the separation shows
        assert comp.cell(task, "low").p_mwu_holm == pytest.approx(3 * 2 / 252)
        assert MWU_MARK in cell_parts(comp, task, "low")[2]
        assert MWU_MARK not in cell_parts(comp, task, "near1")[2]
        # 9 comparisons across the table: 9 x 0.0079 = 0.071, nothing can show
        assert whole.cell(task, "low").p_mwu_holm == pytest.approx(9 * 2 / 252)
        assert MWU_MARK not in cell_parts(whole, task, "low")[2]
    # the header says which family was used
    assert "Holm-adjusted within each task (3 comparisons per task)" in to_markdown(comp)
    assert "Holm-adjusted across the whole table (9 comparisons)" in to_markdown(whole)
    res = _invoke("compare", str(root), "--reps", "0", "--holm-family", "table", "--format",
                  "json")
    assert json.loads(res.output)["holm_family"] == "table"
    res = _invoke("compare", str(root), "--reps", "0", "--format", "markdown")
    assert "5.40 ± 0.32 *†" in res.output and "within each task" in res.output


def _normalised(env, algo):
    return (np.array(SCORES[(env, algo)]) - REFS["random"]) / (REFS["expert"] - REFS["random"])


def test_aggregates_match_hand_computation(grid):
    comp = compare(load_results(grid), pairs=[("a", "c")], reps=REPS)
    envs = ("rware-tiny-2ag", "rware-tiny-4ag")
    for algo in "abc":
        per_task = [_normalised(e, algo) for e in envs]
        flat = np.sort(np.concatenate(per_task))
        iqm = flat[2:8].mean()  # 10 scores: drop the lowest 2 and the highest 2 (25%, floored)
        assert comp.aggregates[algo]["IQM"].point == pytest.approx(iqm)
        means = [t.mean() for t in per_task]
        assert comp.aggregates[algo]["mean"].point == pytest.approx(np.mean(means))
        assert comp.aggregates[algo]["median"].point == pytest.approx(np.median(means))
        gap = np.mean([np.mean([max(1 - s, 0) for s in t]) for t in per_task])
        assert comp.aggregates[algo]["optimality gap"].point == pytest.approx(gap)
        for iv in comp.aggregates[algo].values():
            assert iv.low <= iv.point <= iv.high
    # probability of improvement by counting pairs of runs, ties half, averaged over tasks
    (x, y, iv), = comp.improvements
    by_hand = np.mean([np.mean([[1.0 if a > b else 0.5 if a == b else 0.0
                                 for b in _normalised(e, "c")] for a in _normalised(e, "a")])
                       for e in envs])
    assert (x, y) == ("a", "c") and iv.point == pytest.approx(by_hand)
    # performance profile: fraction of runs above tau per task, averaged over tasks
    point, low, high = comp.profiles["b"]
    for i in (0, 30, 60):
        tau = comp.profile_taus[i]
        expected = np.mean([np.mean(_normalised(e, "b") > tau) for e in envs])
        assert point[i] == pytest.approx(expected)
        assert low[i] <= point[i] <= high[i]


def test_bootstrap_is_stratified_by_task():
    # Constant within each task, different across tasks: resampling runs within tasks can
    # never change the mean, so a stratified interval has zero width; pooling would not.
    tasks = [np.zeros(4), np.ones(4)]
    iv = stats.bootstrap_interval(stats.mean, tasks, reps=REPS, seed=0)
    assert iv.point == iv.low == iv.high == 0.5
    varied = [np.array([0.1, 0.5, 0.9, 0.3]), np.array([0.2, 0.4, 0.8, 1.0])]
    a = stats.bootstrap_interval(stats.iqm, varied, reps=REPS, seed=1)
    b = stats.bootstrap_interval(stats.iqm, varied, reps=REPS, seed=1)
    assert a == b and a.low < a.point < a.high


def test_normalised_scores_do_not_depend_on_which_algorithms_are_compared(tmp_path):
    root = tmp_path / "r"
    for seed, score in enumerate([4.0, 5.0, 6.0]):
        _write_run(root, "rware-tiny-2ag", "expert", "bc", seed, [score])
    alone = compare(load_results(root), reps=REPS).aggregates["bc"]
    for seed, score in enumerate([100.0, 200.0, 300.0]):  # a far better newcomer
        _write_run(root, "rware-tiny-2ag", "expert", "new", seed, [score])
    together = compare(load_results(root), reps=REPS).aggregates["bc"]
    assert together == alone
    assert alone["mean"].point == pytest.approx((5.0 - 1.0) / 10.0)


def test_incomplete_and_inconsistent_results_warn_and_are_marked(tmp_path):
    root = tmp_path / "r"
    for seed in range(5):
        _write_run(root, "rware-tiny-2ag", "expert", "a", seed, [8.0 + seed / 10])
        _write_run(root, "rware-tiny-4ag", "expert", "a", seed, [3.0 + seed / 10],
                   sha="b" * 64 if seed == 4 else "a" * 64)
    for seed in range(3):  # b: fewer seeds on one task, nothing on the other
        _write_run(root, "rware-tiny-2ag", "expert", "b", seed, [6.0 + seed / 10],
                   commit="deadbeef-dirty" if seed == 2 else "c0ffee")
    (root / "rware-tiny-4ag/expert/b").mkdir(parents=True)
    (root / "rware-tiny-4ag/expert/b/seed-0.error.json").write_text(
        json.dumps({"error": "RuntimeError: out of memory"}))
    comp = compare(load_results(root), reps=REPS)
    text = "\n".join(comp.warnings)
    assert "unequal seeds on rware-tiny-2ag/expert: b has 3 (0, 1, 2), missing seed(s) 3, 4" in text
    assert ("missing cell: b has no completed run on rware-tiny-4ag/expert (every seed failed)"
            in text)
    assert "failed cell: b on rware-tiny-4ag/expert seed 0: RuntimeError: out of memory" in text
    assert "rware-tiny-4ag/expert: runs were trained on 2 different datasets" in text
    assert "runs come from 2 code commits" in text and "uncommitted changes" in text
    assert "rware-tiny-4ag/expert is left out of the aggregate scores" in text
    assert comp.aggregate_tasks == ["rware-tiny-2ag/expert"]
    assert comp.seeds_label("rware-tiny-2ag/expert") == "a 5, b 3"
    md = to_markdown(comp)
    assert "| rware-tiny-4ag/expert | a 5, b 0 | **3.20 ± 0.16** ⚠ | failed ⚠ |" in md
    assert "6.10 ± 0.10 *" in md and "⚠" in md.split("| rware-tiny-2ag/expert |")[1]
    assert md.count("> - ") == len(comp.warnings)


def test_bad_filters_and_pairs_are_one_line_errors(grid):
    with pytest.raises(UnknownNameError, match="Did you mean 'rware-tiny-2ag'"):
        load_results(grid, envs=["rware-tiny-2a"])
    with pytest.raises(MarlbenchError, match="bad --pairs item"):
        parse_pairs("a-b")
    with pytest.raises(UnknownNameError, match="algorithm in --pairs"):
        compare(load_results(grid), pairs=[("a", "zz")], reps=0)
    with pytest.raises(MarlbenchError, match="no completed runs"):
        load_results(grid / "rware-tiny-2ag" / "expert" / "a" / "seed-0")


def _invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_cli_prints_and_writes_every_format(grid, tmp_path):
    out = tmp_path / "board"
    base = ["compare", str(grid), "--reps", str(REPS), "--algos", "c,a,b"]
    res = _invoke(*base, "--out", str(out), "--pairs", "a:b,c:b")
    assert res.exit_code == 0, res.output
    assert "Returns per task" in res.output and "Probability of improvement" in res.output
    for name in ("leaderboard.md", "leaderboard.tex", "per_task.csv", "aggregate.csv",
                 "comparison.json", "marl_eval.json"):
        assert (out / name).stat().st_size > 0, name
    for name in ("per_task.png", "aggregate.png", "performance_profile.png",
                 "training_curves.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    board = (out / "leaderboard.md").read_text()
    assert "| task | seeds | c | a | b |" in board  # --algos sets the column order
    rows = _invoke(*base, "--envs", "rware-tiny-4ag,rware-tiny-2ag", "--format", "markdown")
    table = rows.output.split("## Returns per task")[1]
    assert table.index("rware-tiny-4ag/expert") < table.index("rware-tiny-2ag/expert")  # rows
    assert "![Performance profile" in board and "marlbench sweep --algos a" in board
    assert "marlbench compare" in board.split("## Reproduce")[1]
    marl_eval = json.loads((out / "marl_eval.json").read_text())
    run = marl_eval["marlbench"]["rware-tiny-4ag/expert"]["b"]["run_3"]
    assert run["step_0"]["step_count"] == 100
    assert run["absolute_metrics"]["return"] == pytest.approx([3.9, 4.9])

    outputs = {fmt: _invoke(*base, "--format", fmt) for fmt in
               ("markdown", "latex", "csv", "json", "marl-eval")}
    assert all(r.exit_code == 0 for r in outputs.values())
    assert "| rware-tiny-2ag/expert | 5 |" in outputs["markdown"].output
    assert r"\begin{tabular}" in outputs["latex"].output and r"\textbf{" in outputs["latex"].output
    rows = list(csv.DictReader(io.StringIO(outputs["csv"].output)))
    assert len(rows) == 6 and {r["algorithm"] for r in rows} == {"a", "b", "c"}
    doc = json.loads(outputs["json"].output)
    assert doc["aggregates"]["a"]["IQM"]["low"] <= doc["aggregates"]["a"]["IQM"]["point"]
    assert json.loads(outputs["marl-eval"].output) == marl_eval


def test_a_leaderboard_records_its_runs_for_later_verdicts(grid, tmp_path):
    from marlbench.compare.results import load_recorded_runs, load_results

    boards = tmp_path / "boards"
    for name, algos in (("one", "a,b"), ("two", "b,c")):  # overlapping: b is in both
        res = _invoke("compare", str(grid), "--reps", "0", "--algos", algos, "--out",
                      str(boards / name))
        assert res.exit_code == 0, res.output
    key = lambda r: (r.task, r.algo, r.seed)  # noqa: E731
    direct = sorted(load_results(grid).runs, key=key)
    recorded = sorted((r for r in load_recorded_runs(boards).runs
                       if r.board == "one" or r.algo == "c"),
                      key=key)  # each board keeps its own runs: b is in both
    assert [(key(r), r.return_mean, r.episode_returns, r.code_commit, r.references)
            for r in recorded] == [(key(r), r.return_mean, r.episode_returns, r.code_commit,
                                    r.references) for r in direct]
    assert len(load_recorded_runs(boards / "one").runs) == 20
    older = boards / "older"  # written before compare recorded runs: named, not read
    older.mkdir()
    (older / "comparison.json").write_text(json.dumps({"cells": []}))
    again = load_recorded_runs(boards)
    assert again.older_boards == [older] and len(again.runs) == len(direct) + 10
    assert again.boards == [boards / "one", boards / "two"]
    # compare itself reads run folders only: a folder of leaderboards has none
    assert "no completed runs" in _invoke("compare", str(boards)).output
    (boards / "two" / "comparison.json").write_text("{}")
    with pytest.raises(MarlbenchError, match="unreadable leaderboard"):
        load_recorded_runs(boards)


def test_cli_reports_bad_input_in_one_line(grid, tmp_path):
    res = _invoke("compare", str(grid), "--algos", "aa", "--reps", "0")
    assert res.exit_code == 1 and "unknown algorithm in these results 'aa'" in res.output
    res = _invoke("compare", str(tmp_path / "nowhere"))
    assert res.exit_code == 1 and "does not exist" in res.output


def test_reproduce_commands_drop_local_folders_and_verbosity():
    from marlbench.compare.report import portable

    run = ("marlbench run --algo mads4 --env rware-tiny-2ag --dataset expert --seed 1 "
           "--threads 1 --datasets /data/ds --results=/scratch/res -q")
    assert portable(run) == ("marlbench run --algo mads4 --env rware-tiny-2ag --dataset expert "
                             "--seed 1 --threads 1")
    sweep = ("marlbench sweep --algos bc --envs smax-3m --datasets good,poor --seeds 0-2 "
             "--datasets-root /data/ds --results /scratch/res --quiet")
    # `--datasets` names datasets in a sweep (kept); its folder option is --datasets-root
    assert portable(sweep) == ("marlbench sweep --algos bc --envs smax-3m --datasets good,poor "
                               "--seeds 0-2")
    assert portable("marlbench compare results --out 'my board'") == (
        "marlbench compare results --out 'my board'")
