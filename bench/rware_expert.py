"""RWARE behaviour policies: returns per quality level and speed vs the raw simulator.

    python bench/rware_expert.py [--episodes 10] [--tasks rware-tiny-2ag,...]

For each task it prints the raw env's steps/s under uniform random actions (gymnasium env,
no marlbench wrapper), the steps/s of marlbench's env wrapper driven by the scripted expert
(planning included, distance fields already cached), their ratio, and the mean ± std return of
every quality level over the same episode seeds.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np

from marlbench.data.collect import run_episode
from marlbench.plugins import registry

PAPER_TASKS = [f"rware-{s}-{n}ag" for s in ("tiny", "small") for n in (2, 4, 6)]


def raw_speed(gym_id: str, steps: int) -> float:
    env = gym.make(gym_id, disable_env_checker=True)
    env.reset(seed=0)
    t0 = time.perf_counter()
    for _ in range(steps):
        env.step(env.action_space.sample())
    return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--tasks", default=",".join(PAPER_TASKS))
    args = ap.parse_args()
    reg = registry()
    print(f"{'task':18} {'raw env/s':>10} {'expert/s':>9} {'ratio':>6}  returns (mean ± std)")
    for task in args.tasks.split(","):
        spec = reg.environment(task)
        env = spec.factory()
        recipes = reg.recipes_for(spec)
        expert = recipes["expert"].make_behaviour(spec)
        run_episode(env, expert, 0, 0, record=False)  # warm the distance-field cache
        t0 = time.perf_counter()
        steps = 0
        rets = {}
        for k in range(args.episodes):
            _, _, r, _ = run_episode(env, expert, 0, k, record=False)
            steps += spec.info.episode_limit
            rets.setdefault("expert", []).append(r)
        expert_speed = steps / (time.perf_counter() - t0)
        for q, recipe in recipes.items():
            if q == "expert":
                continue
            beh = recipe.make_behaviour(spec)
            rets[q] = [run_episode(env, beh, 0, k, record=False)[2]
                       for k in range(args.episodes)]
        raw = raw_speed(env.gym_id, 5000)
        text = "  ".join(f"{q} {np.mean(v):.1f} ± {np.std(v):.1f}" for q, v in rets.items())
        print(f"{task:18} {raw:10.0f} {expert_speed:9.0f} {expert_speed / raw:6.2f}  {text}",
              flush=True)


if __name__ == "__main__":
    main()
