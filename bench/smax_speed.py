"""SMAX speed on this machine, measured in one run: env steps per second for one env per call
(evaluation, dataset collection), for B envs in one vmapped call (MAPPO rollouts), and dataset
collection with each behaviour policy, extrapolated to 1,000 episodes.

    nice -n 10 python bench/smax_speed.py --map 5m_vs_6m

Compilation (once per map and process) is timed separately and left out of the rates.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from marlbench.data.collect import run_episode
from marlbench.plugins import registry


def rate(fn, seconds: float) -> tuple[float, int]:
    """Steps per second of `fn` (which returns how many env steps it took) over ~`seconds`."""
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        steps += fn()
    return steps / (time.perf_counter() - t0), steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--map", default="5m_vs_6m")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--episodes", type=int, default=30, help="per behaviour, for collection")
    args = ap.parse_args()
    reg = registry()
    spec = reg.environment(f"smax-{args.map}")
    n, stop = spec.info.n_agents, 4

    env = spec.factory()
    t0 = time.perf_counter()
    env.reset(seed=0)
    env.step(np.full(n, stop))
    print(f"{spec.name}: compile reset+step {time.perf_counter() - t0:.1f} s")

    def single():
        out = env.step(np.full(n, stop))
        if out.terminated or out.truncated:
            env.reset(seed=1)
        return 1

    base, _ = rate(single, args.seconds)
    print(f"one env per call            {base:9.0f} steps/s   1.0x")
    for b in (8, 64):
        venv = spec.vector_factory(b)
        t0 = time.perf_counter()
        venv.reset(seed=0)
        venv.step(np.full((b, n), stop))
        compile_s = time.perf_counter() - t0
        r, _ = rate(lambda venv=venv, b=b: (venv.step(np.full((b, n), stop)), b)[1],
                    args.seconds)
        print(f"{b:3d} envs per vmapped call   {r:9.0f} steps/s {r / base:5.1f}x  "
              f"(compile {compile_s:.1f} s)")

    print(f"collection ({args.episodes} episodes each, sampled actions; 1,000 extrapolated):")
    for quality in ("random", "heuristic", "good"):
        try:
            beh = reg.recipe(spec, quality).make_behaviour(spec)
        except Exception as exc:  # noqa: BLE001 - a map without snapshots
            print(f"  {quality:<9} unavailable: {exc}")
            continue
        run_episode(env, beh, 0, 0)  # compile
        t0, steps = time.perf_counter(), 0
        for k in range(1, args.episodes + 1):
            steps += len(run_episode(env, beh, 0, k)[0]["rewards"])
        dt = time.perf_counter() - t0
        print(f"  {quality:<9} {steps / dt:7.0f} steps/s, {steps / args.episodes:5.1f} steps/ep, "
              f"1,000 episodes ~ {dt / args.episodes * 1000 / 60:.1f} min")


if __name__ == "__main__":
    main()
