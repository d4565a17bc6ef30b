"""Online evaluation of a policy in the real environment.

Evaluation episodes run in lockstep batches of `parallel` envs so batched policies (S4 in its
recurrent view, transformers with a cache) amortise their per-step cost. Episode e of a run with
seed s resets its env from a seed derived from (s, e), so the same seed gives the same episodes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from marlbench.api import EnvSpec, Policy
from marlbench.progress import Reporter

_EVAL_STREAM = 7  # separates evaluation seeds from dataset-collection seeds


def eval_seed(seed: int, episode: int) -> int:
    ss = np.random.SeedSequence(seed, spawn_key=(_EVAL_STREAM, episode))
    return int(ss.generate_state(1, dtype=np.uint32)[0])


@dataclass
class EpisodeResult:
    episode: int
    env_seed: int
    ret: float
    length: int
    won: bool | None = None
    extra: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["return"] = d.pop("ret")
        extra = d.pop("extra")
        return {**d, **extra}


def evaluate(spec: EnvSpec, policy: Policy, episodes: int, seed: int, parallel: int = 10,
             reporter: Reporter | None = None,
             on_episode: Callable[[EpisodeResult], None] | None = None) -> list[EpisodeResult]:
    reporter = reporter or Reporter()
    parallel = max(1, min(parallel, episodes))
    envs = [spec.factory() for _ in range(parallel)]
    results: list[EpisodeResult] = []
    try:
        with reporter.task(f"evaluate {spec.name}", total=episodes) as task:
            for first in range(0, episodes, parallel):
                ids = list(range(first, min(first + parallel, episodes)))
                for r in _run_batch(spec, envs[:len(ids)], policy, ids, seed):
                    results.append(r)
                    task.advance()
                    task.note(f"mean return {np.mean([x.ret for x in results]):.2f}")
                    if on_episode:
                        on_episode(r)
    finally:
        for env in envs:
            env.close()
    return results


def summarize(spec: EnvSpec, episodes: list[EpisodeResult], seconds: float) -> dict[str, Any]:
    """The evaluation summary a run records (`eval.json`, `run.json`): return statistics, the
    win rate where the env reports wins, and each of the env's rescaled returns."""
    returns = np.array([e.ret for e in episodes])
    wins = [e.won for e in episodes if e.won is not None]
    return {
        "episodes": len(episodes), "return_mean": float(returns.mean()),
        "return_std": float(returns.std()), "return_min": float(returns.min()),
        "return_max": float(returns.max()),
        "win_rate": float(np.mean(wins)) if wins else None,
        **{f"{name}_mean": float(np.mean([e.extra[name] for e in episodes]))
           for name in spec.return_scales},
        "seconds": round(seconds, 2),
    }


def _run_batch(spec: EnvSpec, envs, policy: Policy, ids: list[int],
               seed: int) -> list[EpisodeResult]:
    k = len(ids)
    seeds = [eval_seed(seed, e) for e in ids]
    first = [env.reset(seed=s) for env, s in zip(envs, seeds)]
    obs = np.stack([f[0] for f in first])
    state = np.stack([f[1] for f in first])
    avail = np.stack([f[2] for f in first])
    policy.reset(k)
    active = np.ones(k, dtype=bool)
    returns, lengths = np.zeros(k), np.zeros(k, dtype=np.int64)
    done: dict[int, EpisodeResult] = {}
    while active.any():
        actions = np.asarray(policy.act(obs, state, avail))
        rewards = np.zeros(k, dtype=np.float32)
        for j in np.flatnonzero(active):
            if not np.all(avail[j, np.arange(spec.info.n_agents), actions[j]]):
                raise RuntimeError(f"policy chose an unavailable action in {spec.name}")
            out = envs[j].step(actions[j])
            rewards[j] = out.reward
            returns[j] += out.reward
            lengths[j] += 1
            obs[j], state[j], avail[j] = out.obs, out.state, out.avail
            if out.terminated or out.truncated:
                active[j] = False
                extra = {name: float(returns[j] * scale)
                         for name, scale in spec.return_scales.items()}
                done[j] = EpisodeResult(ids[j], seeds[j], float(returns[j]), int(lengths[j]),
                                        out.info.get("won"), extra)
        policy.observe(rewards)
    return [done[j] for j in range(k)]


def measure_latency(spec: EnvSpec, policy: Policy, steps: int = 200,
                    seed: int = 0) -> dict[str, float]:
    """Per-step `act` latency with one env (batch 1), in milliseconds."""
    env = spec.factory()
    try:
        obs, state, avail = env.reset(seed=eval_seed(seed, 10**6))
        policy.reset(1)
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            a = np.asarray(policy.act(obs[None], state[None], avail[None]))[0]
            times.append((time.perf_counter() - t0) * 1e3)
            out = env.step(a)
            policy.observe(np.array([out.reward], dtype=np.float32))
            obs, state, avail = out.obs, out.state, out.avail
            if out.terminated or out.truncated:
                obs, state, avail = env.reset(seed=eval_seed(seed, 10**6 + len(times)))
                policy.reset(1)
    finally:
        env.close()
    t = np.asarray(times)
    return {"steps": len(t), "median_ms": float(np.median(t)),
            "p90_ms": float(np.percentile(t, 90)), "first_ms": float(t[0]),
            "last_ms": float(t[-1])}
