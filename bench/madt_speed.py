"""MADT speed at long context: train step time and per-step inference latency.

    python bench/madt_speed.py [--batch 32] [--length 500] [--env rware-small-6ag]
                               [--configs madt,dt-baseline] [--repeats 3] [--threads 1]

Data has the env's shapes (random values: speed does not depend on them). Every agent's
sequence is `--length` steps (3 tokens each) and the context K covers all of them, as MADS4
trains on whole trajectories. For each model size it prints the parameter count, one training
step (forward, masked cross-entropy, backward, AdamW) on `--batch` episodes x n agents, and
the latency of one inference step (logits for every agent) at t = 1, 100, 500 with the KV
cache, next to recomputing the whole prefix at that step (ratio measured in the same run).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from marlbench.algorithms.madt import MADT, MADTConfig, agent_sequences
from marlbench.nn import mask_logits
from marlbench.nn.gpt import KVCache
from marlbench.plugins import registry

SIZES = {  # the two sourced sizes (see MADTConfig)
    "madt": {},
    "dt-baseline": {"dim": 128, "layers": 3, "heads": 1, "mlp_ratio": 4},
}


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def train_step_seconds(algo: MADT, batch: int, length: int, repeats: int) -> float:
    env, gen = algo.env, torch.Generator().manual_seed(0)
    S = batch * env.n_agents
    obs = torch.randn(batch, length, env.n_agents, env.obs_dim, generator=gen)
    inputs = agent_sequences(algo.net.agent_inputs(obs))
    actions = torch.randint(0, env.n_actions, (S, length), generator=gen)
    rtg = torch.rand(S, length, generator=gen)
    timesteps = torch.arange(length).expand(S, length)
    avail = torch.ones(S, length, env.n_actions, dtype=torch.bool)
    opt = torch.optim.AdamW(algo.net.parameters(), lr=1e-4)
    algo.net.train()

    def step():
        logits = mask_logits(algo.net(rtg, inputs, actions, timesteps), avail)
        loss = F.cross_entropy(logits.reshape(-1, env.n_actions), actions.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return median_seconds(step, repeats)


def step_latencies_ms(algo: MADT, n_envs: int, checkpoints: list[int],
                      repeats: int) -> tuple[dict[int, float], dict[int, float]]:
    """Milliseconds for the logits of step t (all agents of `n_envs` envs) at each t in
    `checkpoints`: (appending the step's tokens to the KV cache, recomputing the prefix)."""
    env, gen, net = algo.env, torch.Generator().manual_seed(0), algo.net.eval()
    S, T = n_envs * env.n_agents, max(checkpoints)
    obs = torch.randn(S, T, env.obs_dim + env.n_agents, generator=gen)
    actions = torch.randint(0, env.n_actions, (S, T), generator=gen)
    rtg, timesteps = torch.rand(S, T, generator=gen), torch.arange(T).expand(S, T)
    cached: dict[int, list[float]] = {t: [] for t in checkpoints}
    recompute = {}
    with torch.inference_mode():
        for _ in range(repeats + 1):  # the first rollout warms up
            cache = KVCache()
            for t in range(T):
                t0 = time.perf_counter()
                net.step(cache, rtg[:, t], obs[:, t], actions[:, t - 1] if t else None, t)
                if t + 1 in cached:
                    cached[t + 1].append((time.perf_counter() - t0) * 1e3)
        for t in checkpoints:
            args = (rtg[:, :t], obs[:, :t], actions[:, :t], timesteps[:, :t])
            recompute[t] = median_seconds(lambda: net(*args)[:, -1], repeats) * 1e3  # noqa: B023
    return {t: statistics.median(v[1:]) for t, v in cached.items()}, recompute


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="rware-small-6ag")
    ap.add_argument("--batch", type=int, default=32, help="episodes per training step")
    ap.add_argument("--length", type=int, default=500, help="steps per sequence (= context K)")
    ap.add_argument("--configs", default=",".join(SIZES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    info = registry().environment(args.env).info
    checkpoints = [t for t in (1, 100, 500) if t <= args.length]
    print(f"{args.env}: {info.n_agents} agents, obs {info.obs_dim}, {info.n_actions} actions; "
          f"L={args.length} steps ({3 * args.length - 1} tokens), train batch {args.batch} "
          f"episodes x {info.n_agents} agents, torch threads {args.threads}")
    for name in args.configs.split(","):
        torch.manual_seed(0)
        cfg = MADTConfig(context=args.length, **SIZES[name])
        algo = MADT(cfg, info, torch.device("cpu"), seed=0)
        params = sum(p.numel() for p in algo.net.parameters())
        print(f"\n{name}: dim {cfg.dim}, {cfg.layers} layers, {cfg.heads} heads, "
              f"{params:,} parameters")
        train = train_step_seconds(algo, args.batch, args.length, args.repeats)
        print(f"  train step: {train:.2f} s")
        for n_envs in (1, args.batch):
            cached, recompute = step_latencies_ms(algo, n_envs, checkpoints, args.repeats)
            row = "  ".join(f"t={t}: {cached[t]:.2f} ms (recompute {recompute[t]:.2f} ms, "
                            f"x{recompute[t] / cached[t]:.1f})" for t in checkpoints)
            print(f"  inference step, {n_envs:>2} env(s): {row}")


if __name__ == "__main__":
    main()
