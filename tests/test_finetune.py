"""MADS4 fine-tuning (paper §4.2, Algorithm 2): exact log-probabilities, frozen parameters, the
critic warm-up, the step-0 policy, and `marlbench finetune` end to end on rware-tiny-2ag."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from marlbench.algorithms.mads4_finetune import MADS4Finetune, MADS4FinetuneConfig
from marlbench.cli import main
from marlbench.config import build_config, to_dict
from marlbench.errors import ConfigError
from marlbench.evaluation import evaluate
from marlbench.runner import load_run

ENV = "rware-tiny-2ag"
# A tiny MADS4 (H = N = 8, one block) trained for 3 steps: enough to be a distinct policy.
TINY_MADS4 = {"d_model": "8", "d_state": "8", "n_layers": "1", "embed_dim": "8",
              "message_dim": "8", "batch_size": "2"}
EVAL = ["--eval-episodes", "2", "--eval-parallel", "2", "--threads", "1", "--quiet"]


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _sets(d: dict) -> list[str]:
    return [x for k, v in d.items() for x in ("--set", f"{k}={v}")]


@pytest.fixture(scope="module")
def offline_run(tiny_expert, tmp_path_factory):
    """A real offline MADS4 run folder, made by `marlbench run`."""
    root = tmp_path_factory.mktemp("results")
    res = invoke("run", "--algo", "mads4", "--env", ENV, "--dataset", str(tiny_expert),
                 "--steps", "3", "--results", str(root), *_sets(TINY_MADS4), *EVAL)
    assert res.exit_code == 0, res.output
    (path,) = (root / ENV).glob("*/mads4/seed-0")
    return path


def _finetuner(offline_run, **overrides) -> MADS4Finetune:
    offline, _, env_spec = load_run(offline_run)
    cfg = build_config(MADS4FinetuneConfig, {"actor": to_dict(offline.config), "n_envs": "1",
                                             "epochs": "1", **overrides})
    torch.manual_seed(0)
    ft = MADS4Finetune(cfg, env_spec.info, torch.device("cpu"), seed=0)
    ft.adopt(offline)
    ft.setup_online(env_spec)
    return ft


def _named(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_config_is_validated():
    with pytest.raises(ConfigError, match="minibatches"):
        build_config(MADS4FinetuneConfig, {"n_envs": "2", "minibatches": "3"})
    with pytest.raises(ConfigError, match="critic_warmup"):
        build_config(MADS4FinetuneConfig, {"critic_warmup": "-1"})


def test_importance_ratio_is_one_before_the_first_gradient_step(offline_run):
    """The convolutional view over the stored episodes recomputes the recurrent view's
    behaviour log-probabilities (messages, return-to-go, previous actions all replayed)."""
    ft = _finetuner(offline_run, critic_warmup="0")
    roll, stats = ft.collect()
    assert roll.valid.all() and roll.obs.shape[0] == 500  # one whole RWARE episode
    with torch.no_grad():
        logp, _ = ft.log_probs(roll, torch.arange(1))
    ratio = (logp - roll.logp).exp()
    assert (ratio - 1).abs().max().item() < 1e-4
    # ... and a wrong replay is visible: previous actions shifted by one more step
    shifted = roll.actions.roll(1, 0)
    with torch.no_grad():
        wrong, _ = ft.log_probs(type(roll)(**{**vars(roll), "actions": shifted}),
                                torch.arange(1))
    assert (wrong - roll.logp).abs().max().item() > 1e-2
    m = ft.update()
    assert m["ratio_dev_max"] < 1e-3 and m["actor_trained"] == 1.0
    assert m["env_steps"] == 1000 and stats["rollout_env_steps_per_s"] > 0  # two rollouts


def test_state_matrix_frozen_the_rest_trains(offline_run):
    ft = _finetuner(offline_run, critic_warmup="0", actor_lr="1e-2")
    before = dict(ft.net.named_parameters())
    before = {k: v.detach().clone() for k, v in before.items()}
    ft.update()
    moved = {k for k, v in ft.net.named_parameters() if not torch.equal(v, before[k])}
    frozen = {k for k in before if k.rsplit(".", 1)[-1] in ("log_neg_re", "im", "P", "log_dt")}
    assert frozen and not (frozen & moved)  # Λ, P (the state matrix A) and Δ stay
    kernel_bc = {k for k in before if k.endswith(("kernel.B", "kernel.C"))}
    assert kernel_bc and kernel_bc <= moved  # the input-dependent B and C train
    assert set(before) - frozen == moved  # and so does everything else
    # Δ is configurable
    ft = _finetuner(offline_run, critic_warmup="0", actor_lr="1e-2", train_dt="true")
    dt = {k: v.detach().clone() for k, v in ft.net.named_parameters() if k.endswith("log_dt")}
    ft.update()
    assert all(not torch.equal(v, dict(ft.net.named_parameters())[k]) for k, v in dt.items())


def test_critic_warmup_leaves_the_actor_bit_identical(offline_run):
    ft = _finetuner(offline_run, critic_warmup="2", actor_lr="1e-2")
    actor, critic = _named(ft.net), _named(ft.critic)
    for _ in range(2):
        assert ft.update()["actor_trained"] == 0.0
    assert all(torch.equal(v, ft.net.state_dict()[k]) for k, v in actor.items())
    assert any(not torch.equal(v, ft.critic.state_dict()[k]) for k, v in critic.items())
    assert ft.update()["actor_trained"] == 1.0
    assert any(not torch.equal(v, ft.net.state_dict()[k]) for k, v in actor.items())


def test_step_zero_is_the_offline_policy(offline_run):
    """Same seed, same evaluation episodes: the fine-tuner starts exactly where the offline
    run's evaluation left off (weights, return scale and return-to-go target)."""
    offline_eval = json.loads((offline_run / "eval.json").read_text())["episodes"]
    ft = _finetuner(offline_run)
    offline, _, env_spec = load_run(offline_run)
    again = evaluate(env_spec, ft.policy(seed=0), len(offline_eval), seed=0, parallel=2)
    assert [r.ret for r in again] == [e["return"] for e in offline_eval]
    assert [r.length for r in again] == [e["length"] for e in offline_eval]
    assert ft.target_return == offline.target_return


def test_scratch_keeps_normalisers_not_weights(offline_run):
    offline, _, _ = load_run(offline_run)
    ft = _finetuner(offline_run, init="scratch")
    src = offline.net.state_dict()
    ours = ft.net.state_dict()
    assert torch.equal(ours["obs_norm.mean"], src["obs_norm.mean"])
    assert not torch.equal(ours["proj.0.weight"], src["proj.0.weight"])


def test_finetune_cli_end_to_end(offline_run):
    root = offline_run.parents[3]
    args = ["finetune", "--from", str(offline_run), "--steps", "2",
            *_sets({"n_envs": 1, "epochs": 1, "critic_warmup": 1}), *EVAL]
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    dataset = offline_run.parts[-3]
    cell = root / ENV / dataset / "mads4+ft" / "seed-0"
    assert sorted(p.name for p in cell.iterdir()) == [
        "config.json", "eval.json", "metrics.jsonl", "model.safetensors", "run.json"]
    rows = [json.loads(x) for x in (cell / "metrics.jsonl").read_text().splitlines()]
    assert [r["env_steps"] for r in rows] == [500, 1000]
    assert [r["actor_trained"] for r in rows] == [0.0, 1.0]
    summary = json.loads((cell / "run.json").read_text())
    assert summary["algo"] == "mads4+ft"
    assert summary["finetuned_from"]["path"] == str(offline_run.resolve())
    assert summary["dataset_card"] == json.loads(
        (offline_run / "run.json").read_text())["dataset_card"]
    config = json.loads((cell / "config.json").read_text())
    assert config["init"] == "pretrained" and config["actor"]["d_model"] == 8
    # the fine-tuned run reloads into the same evaluation
    algo, _, spec = load_run(cell)
    episodes = json.loads((cell / "eval.json").read_text())["episodes"]
    again = evaluate(spec, algo.policy(seed=0), 2, seed=0, parallel=2)
    assert [r.ret for r in again] == [e["return"] for e in episodes]
    # the baseline writes its own folder; a second fine-tune of the same cell is refused
    res = invoke(*args, "--from-scratch")
    assert res.exit_code == 0, res.output
    scratch = json.loads((root / ENV / dataset / "mads4+scratch/seed-0/config.json")
                         .read_text())
    assert scratch["init"] == "scratch"
    res = invoke(*args)
    assert res.exit_code == 1 and "already exist" in res.output
    # Fig. 2 from the tool: both curves, as a figure and as data
    out = root.parent / "report"
    res = invoke("compare", str(root), "--out", str(out), "--reps", "100")
    assert res.exit_code == 0, res.output
    lines = (out / "online_curves.csv").read_text().splitlines()
    curve = [r for r in lines[1:] if ",mads4+ft," in r]
    assert [r.split(",")[4] for r in curve] == ["500", "1000"]
    assert any(",mads4+scratch," in r for r in lines)
    assert (out / "online_curves.png").stat().st_size > 0


def _one_line_error(res, *needles):
    assert res.exit_code == 1, res.output
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    for needle in needles:
        assert needle in res.output, res.output


def test_bad_sources_are_one_line_errors(offline_run, tmp_path, tiny_expert):
    run = lambda src, *more: invoke("finetune", "--from", str(src), "--steps", "1",  # noqa
                                    "--results", str(tmp_path / "out"), *more, *EVAL)
    _one_line_error(run(tmp_path / "nowhere"), "does not exist")
    incomplete = tmp_path / "incomplete" / ENV / "expert" / "mads4" / "seed-0"
    shutil.copytree(offline_run, incomplete)
    (incomplete / "run.json").unlink()
    _one_line_error(run(incomplete), "not a complete run")
    _one_line_error(run(offline_run, "--env", "rware-tiny-4ag"), "rware-tiny-4ag")
    # a run of another algorithm
    res = invoke("run", "--algo", "bc", "--env", ENV, "--dataset", str(tiny_expert),
                 "--steps", "2", "--results", str(tmp_path / "bc"), *EVAL)
    assert res.exit_code == 0, res.output
    (bc,) = (tmp_path / "bc" / ENV).glob("*/bc/seed-0")
    _one_line_error(run(bc), "bc", "mads4")
    # a MADS4 checkpoint whose run.json claims another env
    other = tmp_path / "other" / "rware-tiny-4ag" / "expert" / "mads4" / "seed-0"
    shutil.copytree(offline_run, other)
    summary = json.loads((other / "run.json").read_text())
    (other / "run.json").write_text(json.dumps({**summary, "env": "rware-tiny-4ag"}))
    _one_line_error(run(other), "rware-tiny")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("run.json"))
