"""Evaluate finished runs again, without retraining: more episodes, other seeds, and, for
return-conditioned algorithms, other return-to-go targets.

A return-conditioned policy (MADS4, MADT, MADTKD) acts for the return it is told to reach, and
the runs evaluate it at one target (10% above the dataset's best return, MADS4 §5.2). Decision
Transformer's own analysis (Chen et al., NeurIPS 2021, §5.3 and Fig. 4) plots the return reached
against the target asked for; this is that measurement for any saved run. Such an algorithm keeps
its target in ``extra_state()["target_return"]``, in the environment's return units
(`marlbench.api.Algorithm.extra_state`); ``targets`` overrides it.

With the run's own seed, action mode and target, the episodes are the run's own evaluation
episodes, so its recorded summary is reproduced; nothing is written into the run folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from marlbench.errors import MarlbenchError
from marlbench.evaluation import evaluate, summarize
from marlbench.plugins import Registry, registry
from marlbench.progress import Reporter
from marlbench.provenance import code_commit
from marlbench.runner import EVAL_THREADS, CheckedPolicy, load_run, phase_threads


def reevaluate(path: Path | str, targets: Sequence[float | None] = (None,), *,
               episodes: int | None = None, seed: int | None = None,
               greedy: bool | None = None, parallel: int = 10, device: str = "cpu",
               threads: int | None = None, reporter: Reporter | None = None,
               reg: Registry | None = None) -> list[dict[str, Any]]:
    """One row per target: the run, what was evaluated and the evaluation summary.

    Defaults are the run's own: its episode count, seed, action mode (greedy or sampled) and,
    for a target of None, its target return."""
    path = Path(path)
    reg = reg or registry()
    if threads:  # as `run`: an explicit --threads holds for every phase
        torch.set_num_threads(threads)
    algo, algo_spec, env_spec = load_run(path, device, reg)  # checks the run is complete
    recorded = json.loads((path / "run.json").read_text())
    state = algo.extra_state()
    if any(t is not None for t in targets) and "target_return" not in state:
        raise MarlbenchError(f"{algo_spec.name} ({path}) is not return-conditioned: it has no "
                             "target return to change")
    seed = recorded["seed"] if seed is None else seed
    greedy = recorded["eval"].get("actions") == "greedy" if greedy is None else greedy
    episodes = recorded["eval"]["episodes"] if episodes is None else episodes
    rows, evaluator = [], code_commit()
    for target in targets:
        if target is not None:
            algo.load_extra_state({**state, "target_return": float(target)})
        policy = CheckedPolicy(algo.policy(greedy=greedy, seed=seed), env_spec.info,
                               algo_spec.name)
        t0 = time.perf_counter()
        with phase_threads(threads, EVAL_THREADS):
            results = evaluate(env_spec, policy, episodes, seed, parallel, reporter)
        rows.append({
            "run": str(path), "algo": recorded["algo"], "label": recorded.get("label"),
            "env": recorded["env"], "dataset": recorded["dataset"],
            "run_seed": recorded["seed"], "code_commit": recorded.get("code_commit"),
            "evaluated_by": evaluator,  # the code commit of this evaluation
            "eval_seed": seed, "actions": "greedy" if greedy else "sampled",
            "target_return": algo.extra_state().get("target_return"),
            "recorded_target_return": state.get("target_return"),
            "dataset_return_max": (recorded.get("dataset_card") or {}).get("return_max"),
            "eval": summarize(env_spec, results, time.perf_counter() - t0),
        })
    return rows
