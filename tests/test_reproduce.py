"""`marlbench reproduce`: shipped presets resolve, a preset grid runs through the sweep, resumes,
keeps variants in their own folders, and prices the cells from measured runs."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from marlbench import reproduce as rp
from marlbench.cli import main
from marlbench.errors import ConfigError, UnknownNameError
from marlbench.plugins import registry
from marlbench.runner import RunOptions

TINY = """
title = "tiny"
paper = "test"
seeds = "0-1"
eval_episodes = 1

[[part]]
name = "base"
feeds = "Table X"
algos = ["bc"]
envs = ["rware-tiny-2ag"]
datasets = ["expert-4ep"]

[[part]]
name = "variant"
feeds = "Fig. Y"
algos = ["bc"]
envs = ["rware-tiny-2ag"]
datasets = ["expert-4ep"]
label = "bc-wide"
set = { hidden = 32 }

[budget.paper.bc]
steps = 7
"""


@pytest.mark.parametrize("name", rp.available())
def test_every_shipped_preset_names_real_algorithms_envs_and_options(reg, name):
    preset = rp.load_preset(name)
    assert preset.parts and preset.title and preset.paper
    for part in preset.parts:
        for algo in part.algos:
            spec = reg.algorithm(algo)  # raises on an unknown name
            for budget in rp.BUDGETS:
                options = rp.cell_options(preset, part, algo, budget, RunOptions())
                from marlbench.config import build_config
                build_config(spec.config_cls, spec.preset, options.overrides)  # valid --set
        for env in part.envs:
            reg.environment(env)
    for claim in preset.claims:  # "best" is judged against the other algorithms of its table
        if claim.kind in ("best", "not_worse"):
            assert claim.rivals and claim.algo not in claim.rivals
    assert {"mads4-table1", "mads4-table2", "mads4-ablations", "mads4-finetune"} <= set(
        rp.available())


def test_bad_presets_fail_with_one_clear_error(tmp_path):
    with pytest.raises(UnknownNameError, match="mads4-table1"):
        rp.load_preset("mads4-tabel1")
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.replace('label = "bc-wide"', 'label = "bc-wide"\nalgo = "x"'))
    with pytest.raises(ConfigError, match="unknown keys \\['algo'\\]"):
        rp.load_preset(str(bad))
    bad.write_text(TINY.replace('algos = ["bc"]\nenvs = ["rware-tiny-2ag"]\n'
                                'datasets = ["expert-4ep"]\nlabel',
                                'algos = ["bc", "bc"]\nenvs = ["rware-tiny-2ag"]\n'
                                'datasets = ["expert-4ep"]\nlabel'))
    with pytest.raises(ConfigError, match="label and several algorithms"):
        rp.load_preset(str(bad))
    bad.write_text(TINY + '[[claim]]\ntext = "t"\nkind = "best"\nalgo = "bc"\npart = "base"\n'
                   'envs = ["rware-tiny-4ag"]\n')
    with pytest.raises(ConfigError, match="\\['rware-tiny-4ag'\\] are not in part 'base'"):
        rp.load_preset(str(bad))
    res = CliRunner().invoke(main, ["reproduce", "nope"])
    assert res.exit_code == 1 and res.output.count("\n") == 1, res.output


def test_a_preset_runs_resumes_and_keeps_variants_apart(tmp_path, tiny_expert):
    preset = tmp_path / "tiny.toml"
    preset.write_text(TINY)
    results = tmp_path / "r"
    cmd = ["reproduce", str(preset), "--steps", "20", "--threads", "1", "--eval-parallel", "1",
           "--results", str(results), "-q"]
    res = CliRunner().invoke(main, cmd, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    algo_dirs = results / "rware-tiny-2ag" / "expert-4ep"
    assert sorted(p.name for p in algo_dirs.iterdir() if p.is_dir()) == ["bc", "bc-wide"]
    for folder, hidden in (("bc", None), ("bc-wide", 32)):
        for seed in (0, 1):
            run = algo_dirs / folder / f"seed-{seed}"
            config = json.loads((run / "config.json").read_text())
            summary = json.loads((run / "run.json").read_text())
            assert summary["eval"]["episodes"] == 1  # the preset's evaluation setting
            assert summary["label"] == (None if folder == "bc" else folder)
            if hidden is not None:
                assert config["hidden"] == hidden
    first = (algo_dirs / "bc" / "seed-0" / "run.json").read_bytes()
    again = CliRunner().invoke(main, cmd, catch_exceptions=False)
    assert "0 done, 0 failed, 4 skipped" in again.output
    assert (algo_dirs / "bc" / "seed-0" / "run.json").read_bytes() == first

    # the dry run prices every cell from the runs just measured, and one more seed is new
    dry = CliRunner().invoke(main, ["reproduce", str(preset), "--dry-run", "--seeds", "0-2",
                                    "--steps", "20", "--results", str(results)],
                             catch_exceptions=False)
    assert dry.exit_code == 0, dry.output
    assert "6 cells: 4 complete, 2 to run" in dry.output
    assert "no measurement" not in dry.output and "measured" in dry.output


def _measured(env, n_agents, per_step, per_episode=1.0):
    return rp.Measured(env=env, n_agents=n_agents, seconds_per_step=per_step,
                       eval_seconds_per_episode=per_episode, steps=100)


# families as EnvSpec declares them; "lbf-x" belongs to rware's family despite its name
FAMILIES = {"rware-a-2ag": "rware", "rware-a-6ag": "rware", "rware-b-4ag": "rware",
            "rware-b-6ag": "rware", "lbf-x-6ag": "rware", "smax-x": "smax", "mpe-z": "mpe"}
_family = FAMILIES.__getitem__


def test_estimates_scale_by_steps_and_agents():
    m = {"bc": [_measured("rware-a-2ag", 2, 0.01)]}
    assert rp.estimate("bc", "rware-a-2ag", 2, 1000, 10, m, _family) == (pytest.approx(20.0),
                                                                          "measured")
    seconds, basis = rp.estimate("bc", "rware-b-4ag", 4, 1000, 10, m, _family)
    assert seconds == pytest.approx(40.0) and basis == "scaled from rware-a-2ag"
    assert rp.estimate("icq", "rware-a-2ag", 2, 1000, 10, m, _family) == (None, "no measurement")
    # a labelled variant with no runs of its own is priced as its algorithm, and says so
    assert rp.estimate("bc-wide", "rware-a-2ag", 2, 1000, 10, m, _family, "bc") == (
        pytest.approx(20.0), "measured (as bc)")
    assert rp.estimate("bc-wide", "rware-a-2ag", 2, 1000, 10, m, _family) == (
        None, "no measurement")


def test_estimates_prefer_the_same_agent_count_then_a_line_in_agents_within_the_family():
    m = {"bc": [_measured("rware-a-2ag", 2, 0.01), _measured("rware-a-6ag", 6, 0.03),
                _measured("smax-x", 6, 1.0)]}
    # another map with as many agents: its cost, unscaled
    assert rp.estimate("bc", "rware-b-6ag", 6, 1000, 0, m, _family) == (
        pytest.approx(30.0), "as rware-a-6ag")
    # between two agent counts: the line through them (10 s at 2 agents, 30 s at 6)
    seconds, basis = rp.estimate("bc", "rware-b-4ag", 4, 1000, 0, m, _family)
    assert seconds == pytest.approx(20.0) and basis == "fitted on rware-a-2ag, rware-a-6ag"
    # a family with no run of its own falls back to every run, scaled in proportion
    only_smax = {"bc": [_measured("smax-x", 2, 0.01)]}
    seconds, basis = rp.estimate("bc", "mpe-z", 4, 1000, 0, only_smax, _family)
    assert seconds == pytest.approx(20.0) and basis == "scaled from smax-x"
    # the family is the one the env declares, not its name's prefix
    assert rp.estimate("bc", "lbf-x-6ag", 6, 1000, 0, m, _family) == (
        pytest.approx(30.0), "as rware-a-6ag")


def test_env_families_come_from_the_registry():
    family_of = rp.env_families(registry())
    assert family_of("rware-tiny-2ag") == "rware"
    assert family_of("no-such-task") == "no-such-task"  # uninstalled: a family of its own


def _runs(task, algo, scores, commit="abc"):
    from marlbench.compare.results import RunRecord

    env, dataset = task.split("/")
    return [RunRecord(env=env, dataset=dataset, algo=algo, seed=i, return_mean=float(s),
                      episode_returns=(float(s),), train_steps=1, code_commit=commit,
                      dataset_sha256=None, references={}, command="", path=None)
            for i, s in enumerate(scores)]


def test_claims_are_judged_by_per_task_tests_in_both_directions():
    from marlbench.compare.claims import Claim, judge

    t1, t2 = "e/a", "e/b"
    runs = (_runs(t1, "x", [10, 10.5, 11, 10.2, 10.8]) + _runs(t1, "y", [5, 5.5, 6, 5.2, 5.8])
            + _runs(t2, "x", [5, 6, 7, 5, 6]) + _runs(t2, "y", [5.5, 6, 6.5, 5, 7]))
    best = judge(Claim("x best", "", "best", algo="x", tasks=(t1, t2)), runs)
    assert [t.outcome for t in best.tasks] == ["holds", "ties"] and best.verdict == "not shown"
    flipped = judge(Claim("y > x", "", "greater", algo="y", other="x", tasks=(t1,)), runs)
    assert flipped.verdict == "not reproduced" and flipped.tasks[0].outcome == "fails"
    similar = judge(Claim("x ~ y", "", "similar", algo="x", other="y", tasks=(t2,)), runs)
    assert similar.verdict == "reproduced"
    not_worse = judge(Claim("x >= y", "", "not_worse", algo="x", tasks=(t1, t2)), runs)
    assert not_worse.verdict == "reproduced"
    missing = judge(Claim("z best", "", "best", algo="z", tasks=(t1,)), runs)
    assert missing.verdict == "not run"


def test_best_is_judged_against_every_rival_not_only_the_runner_up():
    from marlbench.compare.claims import Claim, judge

    t = "e/a"
    tight, noisy_top, tight_above = [10, 10.1, 9.9, 10.05], [14, 2, 26, 14], [12, 12.1, 11.9, 12]
    # the best mean (y) is too noisy to beat x, but w is significantly above it: x fails
    v = judge(Claim("x best", "", "best", algo="x", tasks=(t,)),
              _runs(t, "x", tight) + _runs(t, "y", noisy_top) + _runs(t, "w", tight_above))
    assert (v.tasks[0].outcome, v.tasks[0].opponent) == ("fails", "w")
    assert v.tasks[0].p < 0.05
    # x leads and is significantly above the runner-up, but not above a noisy third: ties
    runner_up, noisy_low = [9, 9.1, 8.9, 9.05], [8, 1, 15, 8]
    v = judge(Claim("x best", "", "best", algo="x", tasks=(t,)),
              _runs(t, "x", tight) + _runs(t, "y", runner_up) + _runs(t, "z", noisy_low))
    assert (v.tasks[0].outcome, v.tasks[0].opponent) == ("ties", "z")
    # above both significantly: holds
    v = judge(Claim("x best", "", "best", algo="x", tasks=(t,)),
              _runs(t, "x", tight) + _runs(t, "y", runner_up) + _runs(t, "z", [8, 8.1, 7.9, 8]))
    assert v.tasks[0].outcome == "holds" and v.verdict == "reproduced"


def test_claims_that_data_can_only_contradict_are_not_corrected():
    from marlbench.compare.claims import Claim, judge

    same, off = [5, 5.2, 4.8, 5.1], [5.35, 5.55, 5.15, 5.45]
    runs = [r for i, t in enumerate(("e/a", "e/b", "e/c"))
            for r in _runs(t, "x", same) + _runs(t, "y", off if i == 0 else same)]
    tasks = ("e/a", "e/b", "e/c")
    similar = judge(Claim("x ~ y", "", "similar", algo="x", other="y", tasks=tasks), runs)
    p = similar.tasks[0].p
    assert 0.05 / 3 < p < 0.05  # significant raw, not after Holm over three tasks
    assert similar.verdict == "not reproduced" and similar.tasks[0].outcome == "fails"
    not_worse = judge(Claim("x >= y", "", "not_worse", algo="x", tasks=tasks), runs)
    assert not_worse.verdict == "not reproduced"
    greater = judge(Claim("y > x", "", "greater", algo="y", other="x", tasks=tasks), runs)
    assert greater.tasks[0].outcome == "ties"  # a claim to show: Holm-corrected


def test_a_finetuned_run_of_another_commits_offline_run_is_left_out():
    from dataclasses import replace

    from marlbench.compare.claims import Claim, judge

    t = "e/a"
    offline = _runs(t, "x", [5, 5.5, 6, 5.2], "new")
    tuned = _runs(t, "x+ft", [9, 9.5, 10, 9.2], "new")
    claim = Claim("ft > offline", "", "greater", algo="x+ft", other="x", tasks=(t,))
    assert judge(claim, offline + [replace(r, source_commit="new") for r in tuned]).verdict \
        == "reproduced"
    mixed = [replace(r, source_commit="old") for r in tuned]
    assert judge(claim, offline + mixed).verdict == "not run"


def test_a_finetuned_run_is_paired_with_the_run_it_continued():
    from dataclasses import replace

    from scipy.stats import ttest_ind, ttest_rel

    from marlbench.compare.claims import Claim, judge

    t = "e/a"
    offline = _runs(t, "x", [2, 6, 4, 8])  # seeds differ a lot, each gains about 1
    tuned = [replace(r, continues=f"x/seed-{r.seed}")
             for r in _runs(t, "x+ft", [3.1, 6.9, 5.0, 9.1])]
    claim = Claim("ft > offline", "", "greater", algo="x+ft", other="x", tasks=(t,))
    task = judge(claim, offline + tuned).tasks[0]
    assert task.paired and task.outcome == "holds"
    assert task.p == pytest.approx(ttest_rel([3.1, 6.9, 5.0, 9.1], [2, 6, 4, 8]).pvalue)
    assert ttest_ind([3.1, 6.9, 5.0, 9.1], [2, 6, 4, 8], equal_var=False).pvalue > 0.5
    unpaired = judge(claim, offline + [replace(r, continues=None) for r in tuned]).tasks[0]
    assert not unpaired.paired and unpaired.outcome == "ties"


def test_a_task_is_judged_on_one_clean_commit_against_the_tables_rivals():
    from marlbench.compare.claims import Claim, judge

    t = "e/a"
    high, low = [10, 10.5, 11, 10.2], [5, 5.5, 6, 5.2]
    runs = (_runs(t, "x", high, "new") + _runs(t, "y", low, "new")
            + _runs(t, "z", [20, 21, 22], "new")  # not in the table: no rival
            + _runs(t, "y", [30, 31, 32], "old")  # another commit: left out
            + _runs(t, "y", [40, 41, 42], "new-dirty"))  # a modified tree: never used
    v = judge(Claim("x best", "", "best", algo="x", tasks=(t,), rivals=("y",)), runs)
    task = v.tasks[0]
    assert (task.commit, task.opponent, task.seeds["y"]) == ("new", "y", 4)
    assert v.verdict == "reproduced" and "z" not in task.means
    # with every algorithm a rival, z (better) makes it fail
    assert judge(Claim("x best", "", "best", algo="x", tasks=(t,)), runs).verdict == \
        "not reproduced"
    # runs of one commit read back from two leaderboards are judged within one of them
    from dataclasses import replace
    boards = [replace(r, board="short") for r in runs if r.code_commit == "new"] + \
        [replace(r, board="long", return_mean=r.return_mean + 100) for r in runs
         if r.code_commit == "new" and r.algo == "y"]
    within = judge(Claim("x > y", "", "greater", algo="x", other="y", tasks=(t,)), boards)
    assert within.tasks[0].board == "short" and within.verdict == "reproduced"
    # boards of one commit that agree (a table finished in two sweeps) are pooled
    split = [replace(r, board="first" if r.algo == "x" else "second") for r in runs
             if r.code_commit == "new"]
    pooled = judge(Claim("x best", "", "best", algo="x", tasks=(t,), rivals=("y",)), split)
    assert pooled.tasks[0].board == "first+second" and pooled.verdict == "reproduced"
    # best of a table needs the whole table
    partial = judge(Claim("x best", "", "best", algo="x", tasks=(t,), rivals=("y", "w")), runs)
    assert partial.verdict == "not run" and partial.tasks[0].missing == ("w",)
    # the commit covering both sides wins over one with more runs of one side only
    lone = _runs(t, "x", high * 3, "lone")
    assert judge(Claim("x > y", "", "greater", algo="x", other="y", tasks=(t,)),
                 runs + lone).tasks[0].commit == "new"
    # the claim's own algorithm must be there: an old commit of its rivals alone is not judged
    only_old = [r for r in runs if r.code_commit == "old"]
    assert judge(Claim("x > y", "", "greater", algo="x", other="y", tasks=(t,)),
                 only_old).verdict == "not run"


def test_speed_claims_are_judged_on_a_clean_bench_runs_repeated_timings():
    from marlbench.compare.claims import Claim, judge

    bench = {"code_commit": "abc", "conditions": "quiet", "models": {
        "s4": {"train_s": [1.0, 1.1, 0.9, 1.0, 1.2],
               "latency_ms": {"500": [0.40, 0.42, 0.41, 0.43, 0.40]}},
        "tf": {"train_s": [2.5, 2.4, 2.6, 2.5, 40.0],  # a stall: one slow repeat, not its size
               "latency_ms": {"500": [0.41, 0.40, 0.42, 0.41, 0.42]}}}}
    train = Claim("s4 trains faster", "", "faster", algo="s4", other="tf", tasks=("train_s",),
                  source="speed.json")
    v = judge(train, [], bench=bench)
    assert v.verdict == "reproduced" and v.tasks[0].seeds == {"s4": 5, "tf": 5}
    assert v.tasks[0].means == {"s4": 1.0, "tf": 2.5}  # medians
    assert "quiet" in v.tasks[0].board and v.tasks[0].commit == "abc"
    slower = judge(Claim("tf trains faster", "", "faster", algo="tf", other="s4",
                         tasks=("train_s",)), [], bench=bench)
    assert slower.verdict == "not reproduced"
    acting = judge(Claim("s4 acts faster", "", "faster", algo="s4", other="tf",
                         tasks=("latency_ms@500",)), [], bench=bench)
    assert acting.verdict == "not shown" and acting.tasks[0].outcome == "ties"
    dirty = judge(train, [], bench={**bench, "code_commit": "abc-dirty"})
    assert judge(train, [], bench=None).verdict == dirty.verdict == "not run"


def test_a_speed_claim_reads_its_bench_file_under_the_results_root(tmp_path):
    preset = tmp_path / "speed.toml"
    preset.write_text(TINY + """
[[claim]]
text = "bc trains faster than its wide variant"
kind = "faster"
algo = "bc"
other = "bc-wide"
source = "speed/bench.json"
measure = "train_s"
""")
    assert rp.load_preset(str(preset)).claims[0].tasks == ("train_s",)
    results = tmp_path / "results"
    (results / "speed").mkdir(parents=True)
    (results / "speed" / "bench.json").write_text(json.dumps(
        {"code_commit": "abc", "conditions": "loaded", "models": {
            "bc": {"train_s": [1.0, 1.1, 1.2, 1.1]},
            "bc-wide": {"train_s": [3.0, 3.1, 3.3, 3.2]}}}))
    text = rp.report([rp.load_preset(str(preset))], results)
    assert "| train_s | abc (speed/bench.json, loaded) | bc | 1.10 | bc-wide | 3.15 | 4 vs 4 |" \
        in text and "**reproduced**" in text
    (results / "speed" / "bench.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a bench result"):
        rp.report([rp.load_preset(str(preset))], results)
    preset.write_text(preset.read_text().replace('measure = "train_s"\n', ""))
    with pytest.raises(ConfigError, match="needs algo, other, source and measure"):
        rp.load_preset(str(preset))


def test_the_report_command_judges_every_preset_on_the_runs(tmp_path):
    out = tmp_path / "REPRODUCTION.md"
    res = CliRunner().invoke(main, ["reproduce", "--report", str(out), "--results",
                                    str(tmp_path / "none")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    text = out.read_text()
    for name in rp.available():
        assert f"## {name}" in text
    assert "**not testable here**" in text and "SMAX has no colossus" in text
    assert any("S4 trains cheaper than a transformer" in line and line.endswith("**not run** |")
               for line in text.splitlines())  # no bench file under that root
    mixed = tmp_path / "mixed"  # run folders and a stray leaderboard under one root
    (mixed / "rware-tiny-2ag/expert/bc/seed-0").mkdir(parents=True)
    (mixed / "rware-tiny-2ag/expert/bc/seed-0/run.json").write_text("{}")
    (mixed / "cmp").mkdir()
    (mixed / "cmp/comparison.json").write_text("{}")
    res = CliRunner().invoke(main, ["reproduce", "--report", str(out), "--results", str(mixed)])
    assert res.exit_code == 1 and "holds both run folders and leaderboards (cmp)" in res.output


TWO_STAGE = """
title = "two stages"
seeds = "0"
eval_episodes = 1

[[part]]
name = "pretrain"
algos = ["mads4"]
envs = ["rware-tiny-2ag"]
datasets = ["expert-4ep"]
set = { d_model = 8, d_state = 8, n_layers = 1, embed_dim = 8, message_dim = 8, batch_size = 2 }

[[part]]
name = "finetune"
stage = "finetune"
from = "pretrain"
algos = ["mads4"]
steps = 1
set = { n_envs = 1, epochs = 1, critic_warmup = 1 }

[[claim]]
text = "fine-tuning helps"
kind = "greater"
algo = "mads4+ft"
other = "mads4"
part = "finetune"
"""


def test_a_finetune_part_continues_the_offline_runs_with_its_own_options(tmp_path, tiny_expert):
    preset = tmp_path / "two.toml"
    preset.write_text(TWO_STAGE)
    results = tmp_path / "r"
    res = CliRunner().invoke(main, ["reproduce", str(preset), "--steps", "2", "--threads", "1",
                                    "--eval-parallel", "1", "--results", str(results), "-q"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    task = results / "rware-tiny-2ag" / "expert-4ep"
    ft = json.loads((task / "mads4+ft" / "seed-0" / "run.json").read_text())
    assert ft["finetuned_from"]["path"] == str((task / "mads4" / "seed-0").resolve())
    assert ft["train"]["steps"] == 1  # the part's steps, not the offline --steps
    assert json.loads((task / "mads4+ft" / "seed-0" / "config.json").read_text())["n_envs"] == 1
    report = tmp_path / "R.md"
    CliRunner().invoke(main, ["reproduce", str(preset), "--report", str(report), "--results",
                              str(results)], catch_exceptions=False)
    assert "| two | fine-tuning helps |" in report.read_text()  # 1 seed each: not run
    assert "**not run**" in report.read_text()


def test_a_fresh_install_prices_cells_from_the_shipped_reference_runs(tmp_path):
    shipped = rp.measurements(tmp_path / "empty")  # no local runs: the packaged figures
    assert shipped, "presets/cell_costs.json holds no reference runs"
    algo, rows = next(iter(shipped.items()))
    seconds, basis = rp.estimate(algo, rows[0].env, rows[0].n_agents, 1000, 30, shipped,
                                 rp.env_families(registry()))
    assert seconds is not None and seconds > 0 and basis == "measured"
