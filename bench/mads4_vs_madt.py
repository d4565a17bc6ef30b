"""MADS4 against MADT (and against the landed MADS4 code), measured in one run.

    python bench/mads4_vs_madt.py [--env rware-small-6ag] [--batch 16] [--repeats 5] [--rounds R]
                                  [--threads 1] [--models mads4,mads4-landed,madt,madt-k20,...]
                                  [--json speed.json --conditions quiet|loaded]

Models (each in its own process, so one's allocations cannot hide another's):

- `mads4`: this checkout's MADS4 (O(N) recurrent step, shared per-timestep token work);
- `mads4-compiled`: the same model acting through one compiled graph per timestep
  (`compile_step`, marlbench.nn.fused; below batch 4), latency only; its first call
  (compilation) is printed;
- `mads4-landed`: the MADS4 code before that work (`LANDED`, loaded from git into temporary
  modules: reachable from this bench only), same config, same data, same seed;
- `madt`, `dt-baseline`: MADT with the full-trajectory context K = 500 (1,499 tokens per agent)
  at its default size and at the MADS4 authors' DT size (128-dim, 3 layers, 1 head);
- `madt-k20`, `dt-baseline-k20`: the same with MADT's default context K = 20 (latency only).

Trained models run the algorithms' own update (`Algorithm.update`: sampling, forward, loss,
backward, optimiser) on whole L = 500-step trajectories of real expert data of `--env`, with
`--batch` episodes per update (MADS4's default; MADT gets the same episodes as batch x n agent
windows). Printed per model:

- parameter count; train step seconds (median of `--repeats`, each process after one warm-up
  update; the repeats are spread over `--rounds` rounds of every model in turn); peak
  extra memory of the train step (VmHWM reset through /proc/self/clear_refs, minus the RSS
  before the first update); for MADS4 the matmul FLOPs of one update (forward + backward,
  torch's FlopCounterMode; FFTs not counted) and the GFLOP/s they run at, against the fp32
  matmul peak of this machine measured in the same process (1024^3 matmuls);
- per-step inference latency of the evaluation policy (all agents of one env, batch 1) at
  t = 1, 100, 500 of an episode (median over `--repeats` rollouts on a real episode);
- MADS4 only: rollout throughput, agent-steps/s of the recurrent policy with 16 parallel
  episodes against batch 1.

Then the ratios within this run, the targets next to them, and the parameter count of every
registered offline algorithm with its defaults on `--env`. `--json` also writes every repeated
timing with the commit and the stated conditions: the file `marlbench reproduce --report`
judges the paper's speed claims on (`results/leaderboard/speed/mads4_vs_madt.json`).
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
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
# The MADS4 code before the O(N) recurrent step and the shared per-timestep token work.
LANDED = "350008a"
ROOT = Path(__file__).resolve().parent.parent


def model_settings(batch: int, n_agents: int) -> dict[str, tuple[str, dict, bool]]:
    """name -> (algorithm, config overrides, trained here) for whole trajectories."""
    madt = {"context": LENGTH, "batch_size": batch * n_agents}
    dt = {"dim": 128, "layers": 3, "heads": 1, "mlp_ratio": 4}
    return {
        "mads4": ("mads4", {"batch_size": batch}, True),
        "mads4-compiled": ("mads4", {"batch_size": batch, "compile_step": True}, False),
        "mads4-landed": ("mads4-landed", {"batch_size": batch}, True),
        "madt": ("madt", madt, True),
        "madt-k20": ("madt", {}, False),
        "dt-baseline": ("madt", {**madt, **dt}, False),
        "dt-baseline-k20": ("madt", dt, False),
    }


def write_landed_modules(folder: Path) -> None:
    """`LANDED`'s algorithms/mads4.py, marlbench/nn/s4.py and marlbench/nn/common.py as
    modules `landed_mads4`, `landed_s4`, `landed_common` in `folder` (put on sys.path)."""
    def show(path: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), "show", f"{LANDED}:{path}"], check=True,
                              capture_output=True, text=True).stdout

    (folder / "landed_common.py").write_text(show("marlbench/nn/common.py"))
    (folder / "landed_s4.py").write_text(
        show("marlbench/nn/s4.py").replace("from marlbench.nn.common import",
                                           "from landed_common import"))
    (folder / "landed_mads4.py").write_text(
        show("algorithms/mads4.py").replace("from marlbench.nn.s4 import", "from landed_s4 import")
        .replace("from marlbench.nn import", "from landed_common import"))


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def build(algo_name: str, overrides: dict, data: OfflineDataset):
    if algo_name == "mads4-landed":
        mod = importlib.import_module("landed_mads4")
        cls, config = mod.MADS4, build_config(mod.MADS4Config, overrides)
    else:
        spec = registry().algorithm(algo_name)
        cls, config = spec.cls, build_config(spec.config_cls, overrides)
    algo = cls(config, data.info, torch.device("cpu"), seed=0)
    algo.setup(data)
    return algo


def matmul_peak_gflops(repeats: int = 5) -> float:
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        best = min(best, (time.perf_counter() - t0) / 4)
    return 2 * 1024**3 / best / 1e9


def rollout_rates(policy, obs, state, avail, steps: int = 100) -> dict[int, float]:
    """Agent-steps per second of `policy.act` at batch 1 and 16 (repeated real inputs):
    obs [n, obs_dim], state [state_dim], avail [n, A] of one step."""
    n = obs.shape[0]
    out = {}
    for batch in (1, 16):
        o, s, a = (x[None].repeat(batch, *([1] * x.ndim)) for x in (obs, state, avail))
        policy.reset(batch)
        policy.act(o.numpy(), s.numpy(), a.numpy())
        t0 = time.perf_counter()
        for _ in range(steps):
            policy.act(o.numpy(), s.numpy(), a.numpy())
        out[batch] = steps * batch * n / (time.perf_counter() - t0)
    return out


def measure(name: str, algo_name: str, overrides: dict, train: bool, env_name: str,
            data_path: Path, landed_dir: str, repeats: int, threads: int) -> dict:
    """Runs in a fresh process: size, train step, peak memory, latencies (, rates)."""
    torch.set_num_threads(threads)
    sys.path.insert(0, landed_dir)
    data = OfflineDataset.load(data_path, registry().environment(env_name).info)
    algo = build(algo_name, overrides, data)
    result: dict = {"params": parameter_count(algo)}
    if train:
        rss_before = _status_kb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        algo.update()  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            algo.update()
            times.append(time.perf_counter() - t0)
        result["peak_mb"] = (_status_kb("VmHWM") - rss_before) / 1024
        result["train_s"] = times
        if algo_name.startswith("mads4"):
            from torch.utils.flop_counter import FlopCounterMode
            with FlopCounterMode(display=False) as counter:
                algo.update()
            result["gflop"] = counter.get_total_flops() / 1e9
            result["peak_gflops"] = matmul_peak_gflops()

    # Latency on a real episode's inputs; rewards are fed back so return-to-go is updated.
    policy = algo.policy(greedy=True, seed=0)
    ep = 0
    s = slice(int(data.start[ep]), int(data.start[ep] + data.length[ep]))
    obs, state, avail = data.obs[s], data.state[s], data.avail[s]
    rewards = data.rewards[s].numpy()
    latency: dict[int, list[float]] = {t: [] for t in CHECKPOINTS}
    with torch.inference_mode():
        for _ in range(repeats + 1):  # the first rollout warms up
            policy.reset(1)
            for t in range(LENGTH):
                t0 = time.perf_counter()
                policy.act(obs[None, t].numpy(), state[None, t].numpy(), avail[None, t].numpy())
                dt = time.perf_counter() - t0
                result.setdefault("first_call_s", dt)
                policy.observe(rewards[None, t])
                if t + 1 in latency:
                    latency[t + 1].append(dt)
        if algo_name.startswith("mads4"):
            result["rates"] = rollout_rates(policy, obs[0], state[0], avail[0])
    result["latency_ms"] = {t: [x * 1e3 for x in v[1:]] for t, v in latency.items()}
    return result


def interleaved(models: list[str], settings: dict, args, data_path: Path, root: str) -> dict:
    """Every model's timings, taken in `--rounds` rounds that each run every model once (in
    its own process, forward order then backward), so a change of the machine's load over
    the run falls on all models alike instead of on whichever ran at that time."""
    ctx = mp.get_context("spawn")
    raw: dict[str, dict] = {}
    for k in range(args.rounds):
        per_round = args.repeats // args.rounds + (k < args.repeats % args.rounds)
        for name in (models if k % 2 == 0 else models[::-1]):
            algo_name, overrides, train = settings[name]
            with ctx.Pool(1) as pool:
                r = pool.apply(measure, (name, algo_name, overrides, train, args.env, data_path,
                                         root, per_round, args.threads))
            raw[name] = r if name not in raw else merge(raw[name], r)
    return raw


def merge(first: dict, later: dict) -> dict:
    """One model's rounds as one result: the repeated timings joined, the rest (size, first
    call, FLOPs, rates) from the first round; peak memory the largest."""
    out = dict(first)
    if "train_s" in first:
        out["train_s"] = first["train_s"] + later["train_s"]
        out["peak_mb"] = max(first["peak_mb"], later["peak_mb"])
    out["latency_ms"] = {t: v + later["latency_ms"][t] for t, v in first["latency_ms"].items()}
    return out


def medians(r: dict) -> dict:
    """`r` with each list of repeated timings replaced by its median (what is printed)."""
    out = dict(r)
    if "train_s" in r:
        out["train_s"] = statistics.median(r["train_s"])
    out["latency_ms"] = {t: statistics.median(v) for t, v in r["latency_ms"].items()}
    return out


def write_result(path: Path, args, res: dict) -> None:
    """Every repeated timing, with the commit and conditions it was measured under."""
    from marlbench.fsutil import write_json
    from marlbench.provenance import code_commit, command_line, package_versions

    write_json(path, {"bench": "mads4_vs_madt", "code_commit": code_commit(),
                      "conditions": args.conditions, "load_average": os.getloadavg(),
                      "cpus": os.cpu_count(), "env": args.env, "batch": args.batch,
                      "threads": args.threads, "repeats": args.repeats, "rounds": args.rounds,
                      "command": command_line(), "packages": package_versions(),
                      "models": {name: {**r, "latency_ms": {str(t): v for t, v in
                                                            r["latency_ms"].items()}}
                                 for name, r in res.items()}})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="rware-small-6ag")
    ap.add_argument("--batch", type=int, default=16, help="episodes per update (MADS4 default)")
    ap.add_argument("--repeats", type=int, default=5,
                    help="timings per measure (the report's rank test needs >= 4 a side)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds that each run every model once, to spread load changes over "
                         "all models [default: --repeats, one timing per model per round]")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models",
                    default="mads4,mads4-compiled,mads4-landed,madt,madt-k20,dt-baseline,"
                    "dt-baseline-k20")
    ap.add_argument("--no-params", action="store_true",
                    help="skip the parameter count of every algorithm")
    ap.add_argument("--json", type=Path, help="also write every repeated timing here")
    ap.add_argument("--conditions", help="with --json: 'quiet' or 'loaded (what else ran)'")
    args = ap.parse_args()
    args.rounds = args.rounds or args.repeats
    if not 1 <= args.rounds <= args.repeats:
        ap.error("--rounds must be between 1 and --repeats")
    if args.json and not args.conditions:
        ap.error("--json needs --conditions: timings mean nothing without the machine's load")
    reg = registry()
    env = reg.environment(args.env)
    n = env.info.n_agents
    settings = model_settings(args.batch, n)
    with tempfile.TemporaryDirectory() as root:
        write_landed_modules(Path(root))
        data_path, _ = collect_dataset(reg, env, "expert", episodes=args.batch, seed=0,
                                       root=root)
        print(f"{args.env}: {n} agents, L={LENGTH}, {args.batch} episodes per update, torch "
              f"threads {args.threads}, real expert data; landed MADS4 = commit {LANDED}")
        raw = interleaved(args.models.split(","), settings, args, Path(data_path), root)
        res = {}
        for name in raw:
            res[name] = r = medians(raw[name])
            lat = ", ".join(f"t={t}: {v:.2f} ms" for t, v in r["latency_ms"].items())
            line = f"  {name:16} {r['params']:>9,} params  "
            if "train_s" in r:
                line += f"train step {r['train_s']:7.2f} s  peak +{r['peak_mb']:6.0f} MB  "
            print(line + f"env step (all agents, batch 1) {lat}; first call "
                  f"{r['first_call_s']:.1f} s")
            if "gflop" in r:
                print(f"  {'':16} {r['gflop']:.1f} GFLOP of matmuls per update: "
                      f"{r['gflop'] / r['train_s']:.1f} GFLOP/s against a measured fp32 matmul "
                      f"peak of {r['peak_gflops']:.1f} GFLOP/s "
                      f"({100 * r['gflop'] / r['train_s'] / r['peak_gflops']:.0f}%)")
            if "rates" in r:
                rt = r["rates"]
                print(f"  {'':16} rollout: {rt[1]:,.0f} agent-steps/s at batch 1, "
                      f"{rt[16]:,.0f} with 16 parallel episodes (x{rt[16] / rt[1]:.1f}; "
                      f"target >= x8); per agent at batch 1, t=500: "
                      f"{r['latency_ms'][500] / n:.3f} ms (target <= 0.1 ms quiet)")

        print("\nRatios (this run):")
        if "mads4" in res:
            base = res["mads4"]
            flat = base["latency_ms"][500] / base["latency_ms"][1]
            print(f"  mads4 latency t=500 / t=1: x{flat:.2f} (flat in t)")
            for name, r in res.items():
                if name == "mads4":
                    continue
                lat = ", ".join(f"t={t}: x{r['latency_ms'][t] / base['latency_ms'][t]:.2f}"
                                for t in CHECKPOINTS)
                line = f"  {name} / mads4: latency {lat}"
                if "train_s" in r and "train_s" in base:
                    line += (f"; train step x{r['train_s'] / base['train_s']:.2f}, peak memory "
                             f"x{r['peak_mb'] / base['peak_mb']:.1f}")
                print(line)
            for mine in ("mads4", "mads4-compiled"):
                for name, target in (("madt-k20", 1.0), ("dt-baseline-k20", 1.0),
                                     ("madt", 3.0), ("dt-baseline", 3.0)):
                    if name in res and mine in res:
                        ratio = res[name]["latency_ms"][500] / res[mine]["latency_ms"][500]
                        print(f"  target: {name} / {mine} at t=500 >= x{target:.0f}: "
                              f"x{ratio:.2f} ({'met' if ratio >= target else 'NOT met'})")
            if "mads4-landed" in res and "train_s" in base:
                ratio = res["mads4-landed"]["train_s"] / base["train_s"]
                print(f"  target: train step landed / now >= x1.5: x{ratio:.2f} "
                      f"({'met' if ratio >= 1.5 else 'NOT met'})")

        if args.json:
            write_result(args.json, args, raw)
            print(f"\nTimings written to {args.json}")

        if not args.no_params:
            print(f"\nParameters of every offline algorithm with its defaults on {args.env}:")
            data = OfflineDataset.load(data_path, env.info)
            for algo_name, (spec, _origin) in sorted(reg.algorithms.items()):
                if spec.offline:
                    print(f"  {algo_name:12} {parameter_count(build(algo_name, {}, data)):>9,}")


if __name__ == "__main__":
    main()
