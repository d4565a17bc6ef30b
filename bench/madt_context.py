"""Trained MADT runs evaluated two ways: rolling KV cache vs recomputing the last K steps.

    python bench/madt_context.py RUN_DIR [RUN_DIR ...] [--episodes 30]

marlbench's MADT policy appends every step to a KV cache, so past the first K steps the
cached keys of deeper layers still carry information from before the window (sliding-window
attention). The original implementation instead recomputes a forward over the last K steps at
every step. Both are evaluated here on the same episode seeds as the run's own evaluation, with
the mean return and the time per policy step of each.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from marlbench.algorithms.madt import MADTPolicy
from marlbench.evaluation import evaluate
from marlbench.runner import load_run


class RecomputePolicy(MADTPolicy):
    """DT/MADT inference: a fresh forward over the last K steps at every step."""

    def reset(self, n_envs: int) -> None:
        super().reset(n_envs)
        self.history: list[tuple[torch.Tensor, ...]] = []

    @torch.inference_mode()
    def act(self, obs: np.ndarray, state: np.ndarray, avail: np.ndarray) -> np.ndarray:
        B, n = obs.shape[:2]
        x = self.net.agent_inputs(torch.as_tensor(obs, device=self.device)).reshape(B * n, -1)
        rtg = (self.rtg / self.return_scale).repeat_interleave(n)
        placeholder = torch.zeros(B * n, dtype=torch.long, device=self.device)  # never read
        self.history.append((rtg, x, placeholder, torch.full_like(placeholder, self.t)))
        window = self.history[-self.net.cfg.context:]
        rtgs, xs, actions, times = (torch.stack(col, 1) for col in zip(*window))
        logits = self.net(rtgs, xs, actions, times)[:, -1].reshape(B, n, -1)
        chosen = self.choose(logits, torch.as_tensor(avail, device=self.device))
        self.history[-1] = (rtg, x, chosen.reshape(B * n), self.history[-1][3])
        self.t += 1
        return chosen.cpu().numpy()


def mean_return(spec, policy, episodes: int, seed: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    returns = [e.ret for e in evaluate(spec, policy, episodes, seed=seed, parallel=10)]
    return float(np.mean(returns)), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--episodes", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{'run':58} {'cache':>7} {'recompute':>9}  eval seconds (cache / recompute)")
    for path in args.runs:
        algo, _, spec = load_run(path)
        seed = algo.seed
        cached, t_cached = mean_return(spec, algo.policy(seed=seed), args.episodes, seed)
        recompute = RecomputePolicy(algo.net, algo.env, algo.target_return, algo.return_scale,
                                    algo.device, greedy=False, seed=seed)
        recomputed, t_recompute = mean_return(spec, recompute, args.episodes, seed)
        print(f"{str(path)[-58:]:58} {cached:7.2f} {recomputed:9.2f}  "
              f"{t_cached:.0f} / {t_recompute:.0f}")


if __name__ == "__main__":
    main()
