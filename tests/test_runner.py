"""The runner end to end on real RWARE: results layout, determinism, safety of results."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from marlbench.api import AlgorithmSpec, hookimpl
from marlbench.errors import MarlbenchError, TrainingDiverged
from marlbench.evaluation import evaluate
from marlbench.plugins import build_registry
from marlbench.runner import RunRequest, cell_dir, load_run, run

FAST = dict(steps=30, eval_episodes=2, eval_parallel=2, log_every=10)


def _req(tmp_path, datasets_root, **kw):
    args = dict(algo="bc", env="rware-tiny-2ag", dataset="expert-4ep",
                results_root=tmp_path / "res", datasets_root=datasets_root, **FAST)
    args.update(kw)
    return RunRequest(**args)


def test_run_writes_a_complete_cell(tmp_path, datasets_root, tiny_expert):
    summary = run(_req(tmp_path, datasets_root))
    cell = cell_dir(tmp_path / "res", "rware-tiny-2ag", "expert-4ep", "bc", 0)
    assert sorted(p.name for p in cell.iterdir()) == [
        "config.json", "eval.json", "metrics.jsonl", "model.safetensors", "run.json"]
    rows = [json.loads(line) for line in (cell / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30] and all("loss" in r for r in rows)
    ev = json.loads((cell / "eval.json").read_text())
    assert len(ev["episodes"]) == 2
    assert summary["eval"]["return_mean"] == pytest.approx(
        np.mean([e["return"] for e in ev["episodes"]]))
    assert summary["dataset_card"]["sha256"] and summary["parameters"] > 0
    assert summary["inference_latency"]["median_ms"] > 0
    # nothing but the published cell (and its lock file, kept by design) is left behind
    assert sorted(p.name for p in cell.parent.iterdir()) == [".seed-0.lock", "seed-0"]


def test_same_seed_same_evaluation_and_checkpoint_round_trip(tmp_path, datasets_root,
                                                             tiny_expert):
    a = run(_req(tmp_path, datasets_root, results_root=tmp_path / "a"))
    b = run(_req(tmp_path, datasets_root, results_root=tmp_path / "b"))
    ea = json.loads((cell_dir(tmp_path / "a", "rware-tiny-2ag", "expert-4ep", "bc", 0)
                     / "eval.json").read_text())["episodes"]
    eb = json.loads((cell_dir(tmp_path / "b", "rware-tiny-2ag", "expert-4ep", "bc", 0)
                     / "eval.json").read_text())["episodes"]
    assert [e["return"] for e in ea] == [e["return"] for e in eb]
    assert a["train"]["final_metrics"] == b["train"]["final_metrics"]
    # reloading the checkpoint reproduces the evaluation exactly
    algo, _, spec = load_run(cell_dir(tmp_path / "a", "rware-tiny-2ag", "expert-4ep", "bc", 0))
    again = evaluate(spec, algo.policy(seed=0), 2, seed=0, parallel=2)
    assert [r.ret for r in again] == [e["return"] for e in ea]


def test_existing_results_are_not_overwritten(tmp_path, datasets_root, tiny_expert):
    run(_req(tmp_path, datasets_root))
    with pytest.raises(MarlbenchError, match="already exist.*--overwrite"):
        run(_req(tmp_path, datasets_root))
    run(_req(tmp_path, datasets_root, overwrite=True, seed=0))


class _Diverging:
    """An algorithm whose loss turns NaN at step 25, for the divergence path."""

    @staticmethod
    def make():
        from marlbench.algorithms.bc import BC

        class Diverging(BC):
            def update(self):
                self.n = getattr(self, "n", 0) + 1
                out = super().update()
                return {**out, "loss": float("nan") if self.n >= 25 else out["loss"]}

        plugin = types.SimpleNamespace()

        @hookimpl
        def marlbench_algorithms():
            return [AlgorithmSpec(name="diverging", cls=Diverging)]

        plugin.marlbench_algorithms = marlbench_algorithms
        return build_registry(extra_plugins=[("diverging", plugin)])


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path, datasets_root,
                                                                 tiny_expert):
    reg = _Diverging.make()
    with pytest.raises(TrainingDiverged, match="non-finite at training step 25"):
        run(_req(tmp_path, datasets_root, algo="diverging", steps=40), reg=reg)
    cell = cell_dir(tmp_path / "res", "rware-tiny-2ag", "expert-4ep", "diverging", 0)
    assert not cell.exists()
    failed = cell.with_name("seed-0.failed")
    assert (failed / "model.last-good.safetensors").exists()
    assert not (failed / "run.json").exists()
    assert all(torch.isfinite(t).all() for t in load_file(
        failed / "model.last-good.safetensors").values())
