"""MADS4 against MADT at long context, and the size of every algorithm, measured in one run.

    python bench/mads4_vs_madt.py [--env rware-small-6ag] [--batch 16] [--repeats 3]
                                  [--threads 1] [--models mads4,madt,dt-baseline]

Both models train on whole L = 500-step trajectories of real expert data of `--env` (MADT
with its window K = 500, i.e. 1,499 tokens per agent) through the algorithms' own update
(`Algorithm.update`: sampling, forward, loss, backward, optimiser) with `--batch` episodes per
update (MADS4's default; MADT gets the same episodes as batch x n agent windows). For each model:

- parameter count;
- train step seconds (median of `--repeats`, after one warm-up update);
- peak extra memory of the train step: the process's peak resident set (VmHWM, reset through
  /proc/self/clear_refs) minus its resident set before the first update; every model runs in
  its own process so one model's allocations cannot hide another's;
- per-step inference latency of the evaluation policy (all agents of one env, batch 1) at
  t = 1, 100, 500 of an episode (median over `--repeats` rollouts): MADS4's recurrent view
  against MADT's KV-cached rolling context.

`dt-baseline` is the MADS4 authors' DT size (128-dim, 3 layers, 1 head; MADTConfig docs).
Ratios are MADT / MADS4 within this run. Then the parameter count of every registered offline
algorithm with its defaults on `--env`.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import tempfile
import time
from pathlib import Path

import torch

from marlbench.catalog import collect_dataset
from marlbench.config import build_config
from marlbench.data import OfflineDataset
from marlbench.plugins import registry
from marlbench.runner import parameter_count

LENGTH = 500  # RWARE's episode limit: every trajectory is full length
CHECKPOINTS = (1, 100, 500)


def model_settings(batch: int, n_agents: int) -> dict[str, tuple[str, dict]]:
    """name -> (algorithm, config overrides) so every model sees whole trajectories."""
    madt = {"context": LENGTH, "batch_size": batch * n_agents}
    return {
        "mads4": ("mads4", {"batch_size": batch}),
        "madt": ("madt", madt),
        "dt-baseline": ("madt", {**madt, "dim": 128, "layers": 3, "heads": 1, "mlp_ratio": 4}),
    }


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def build(algo_name: str, overrides: dict, data: OfflineDataset):
    spec = registry().algorithm(algo_name)
    algo = spec.cls(build_config(spec.config_cls, overrides), data.info, torch.device("cpu"),
                    seed=0)
    algo.setup(data)
    return algo


def measure(algo_name: str, overrides: dict, env_name: str, data_path: Path, repeats: int,
            threads: int) -> dict:
    """Runs in a fresh process: size, train step time and peak memory, step latencies."""
    torch.set_num_threads(threads)
    data = OfflineDataset.load(data_path, registry().environment(env_name).info)
    algo = build(algo_name, overrides, data)
    rss_before = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    algo.update()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        algo.update()
        times.append(time.perf_counter() - t0)
    peak_mb = (_status_kb("VmHWM") - rss_before) / 1024

    # Latency on a real episode's inputs; rewards are fed back so return-to-go is updated.
    policy = algo.policy(greedy=True, seed=0)
    ep = 0
    s = slice(int(data.start[ep]), int(data.start[ep] + data.length[ep]))
    obs, state, avail = data.obs[s].numpy(), data.state[s].numpy(), data.avail[s].numpy()
    rewards = data.rewards[s].numpy()
    latency: dict[int, list[float]] = {t: [] for t in CHECKPOINTS}
    with torch.inference_mode():
        for _ in range(repeats + 1):  # the first rollout warms up
            policy.reset(1)
            for t in range(LENGTH):
                t0 = time.perf_counter()
                policy.act(obs[None, t], state[None, t], avail[None, t])
                dt = time.perf_counter() - t0
                policy.observe(rewards[None, t])
                if t + 1 in latency:
                    latency[t + 1].append(dt)
    return {
        "params": parameter_count(algo),
        "train_s": statistics.median(times),
        "peak_mb": peak_mb,
        "latency_ms": {t: statistics.median(v[1:]) * 1e3 for t, v in latency.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="rware-small-6ag")
    ap.add_argument("--batch", type=int, default=16, help="episodes per update (MADS4 default)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="mads4,madt,dt-baseline")
    args = ap.parse_args()
    reg = registry()
    env = reg.environment(args.env)
    settings = model_settings(args.batch, env.info.n_agents)
    with tempfile.TemporaryDirectory() as root:
        data_path, _ = collect_dataset(reg, env, "expert", episodes=args.batch, seed=0,
                                       root=root)
        print(f"{args.env}: {env.info.n_agents} agents, L={LENGTH}, {args.batch} episodes per "
              f"update, torch threads {args.threads}, real expert data")
        ctx = mp.get_context("spawn")
        results = {}
        for name in args.models.split(","):
            algo_name, overrides = settings[name]
            with ctx.Pool(1) as pool:
                r = pool.apply(measure, (algo_name, overrides, args.env, Path(data_path),
                                         args.repeats, args.threads))
            results[name] = r
            lat = ", ".join(f"t={t}: {v:.2f} ms" for t, v in r["latency_ms"].items())
            print(f"  {name:12} {r['params']:>9,} params  train step {r['train_s']:7.2f} s  "
                  f"peak +{r['peak_mb']:7.0f} MB  inference step (all agents) {lat}")
        if "mads4" in results:
            base = results["mads4"]
            for name, r in results.items():
                if name == "mads4":
                    continue
                lat = ", ".join(f"t={t}: x{r['latency_ms'][t] / base['latency_ms'][t]:.2f}"
                                for t in CHECKPOINTS)
                print(f"  {name} / mads4: train step x{r['train_s'] / base['train_s']:.1f}, "
                      f"peak memory x{r['peak_mb'] / base['peak_mb']:.1f}, latency {lat}")

        print(f"\nParameters of every offline algorithm with its defaults on {args.env}:")
        data = OfflineDataset.load(data_path, env.info)
        for algo_name, (spec, _origin) in sorted(reg.algorithms.items()):
            if not spec.offline:
                continue
            print(f"  {algo_name:12} {parameter_count(build(algo_name, {}, data)):>9,}")


if __name__ == "__main__":
    main()
