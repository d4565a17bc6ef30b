"""Train MAPPO on a SMAX map, print its training curve, and export the behaviour policies of the
map's good / medium / poor datasets (the MADT recipe: one MAPPO run, snapshots at decreasing
win rates).

    python bench/smax_behaviours.py --map 3m --updates 150
    python bench/smax_behaviours.py --map 5m_vs_6m --updates 3000 --set epochs=10 --set clip=0.05
    python bench/smax_behaviours.py --map 6h_vs_8z --updates 610 --set n_envs=128 \
        --set rollout=128 --set epochs=4 --set minibatches=4 --set lr=0.004 --set clip=0.05 \
        --set max_grad_norm=0.25     # JaxMARL's SMAX MAPPO settings: 10M steps, ~45 min
    python bench/smax_behaviours.py --map corridor-like --updates 610 --minutes 110 \
        --set n_envs=128 ...   # the same settings; stopped at 9.2M steps, never won
    python bench/smax_behaviours.py --plot environments/smax/behaviours/6h_vs_8z/training.json

Every `--eval-every` updates the current actor is evaluated on `--eval-episodes` episodes
(sampled actions, as datasets are collected) and kept. At the end:
  good   = the snapshot with the highest evaluated win rate (ties: the later one),
  medium = the earlier snapshot whose win rate is closest to MEDIUM x good's,
  poor   = the earlier snapshot whose win rate is closest to POOR x good's.
If the run never won an evaluation episode, snapshots are ranked by evaluated return instead,
and the targets are MEDIUM / POOR of the way from the lowest earlier return to good's.
The three are written to environments/smax/behaviours/<map>/<quality>.safetensors, with the
whole curve in training.json next to them and drawn in training.png (`--out` elsewhere,
`--dry-run` to write nothing; `--plot FILE` redraws a curve from its training.json).
Run it niced with one thread: `nice -n 10 python bench/smax_behaviours.py ... --threads 1`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from marlbench.config import build_config, parse_assignments, to_dict
from marlbench.environments.smax.behaviour import BEHAVIOURS, save_policy
from marlbench.evaluation import evaluate
from marlbench.fsutil import write_json
from marlbench.plugins import registry
from marlbench.provenance import command_line, package_versions
from marlbench.runner import seed_everything

MEDIUM, POOR = 0.5, 0.2  # win-rate targets relative to the good snapshot


def pick(snapshots: list[dict]) -> tuple[str, dict[str, dict]]:
    """(measure, {quality: snapshot}). The measure is the evaluated win rate, or the evaluated
    return when the run never won an evaluation episode."""
    won = any(s["eval_win_rate"] > 0 for s in snapshots)
    measure = "eval_win_rate" if won else "eval_return"
    good_i = max(range(len(snapshots)), key=lambda i: (snapshots[i][measure], i))
    good = snapshots[good_i]
    earlier = snapshots[:good_i] or [good]
    low = 0.0 if won else min(s[measure] for s in earlier)  # returns have no natural zero
    chosen = {"good": good}
    for quality, frac in (("medium", MEDIUM), ("poor", POOR)):
        target = low + frac * (good[measure] - low)
        chosen[quality] = min(earlier, key=lambda s: (abs(s[measure] - target), -s["update"]))
    return measure, chosen


def plot_curve(training_json: Path) -> Path:
    """training.png next to `training_json`: evaluated win rate and return against env steps,
    the chosen snapshots marked."""
    import json

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = json.loads(training_json.read_text())
    curve = run["curve"]
    steps = [s["env_steps"] / 1e6 for s in curve]
    fig, (win, ret) = plt.subplots(1, 2, figsize=(10, 3.5))
    win.plot(steps, [s["eval_win_rate"] for s in curve])
    ret.plot(steps, [s["eval_return"] for s in curve])
    for quality, update in run["chosen"].items():
        s = next(s for s in curve if s["update"] == update)
        for ax, key in ((win, "eval_win_rate"), (ret, "eval_return")):
            ax.plot(s["env_steps"] / 1e6, s[key], "o")
            ax.annotate(quality, (s["env_steps"] / 1e6, s[key]), textcoords="offset points",
                        xytext=(4, -10))
    win.set(xlabel="env steps (millions)", ylabel="evaluated win rate", ylim=(-0.05, 1.05))
    ret.set(xlabel="env steps (millions)", ylabel="evaluated return")
    fig.suptitle(f"MAPPO on {run['env']} (seed {run['seed']})")
    fig.tight_layout()
    out = training_json.with_suffix(".png")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plot", type=Path, default=None,
                    help="only redraw training.png from this training.json")
    ap.add_argument("--map")
    ap.add_argument("--updates", type=int)
    ap.add_argument("--minutes", type=float, default=None,
                    help="stop early after this much wall time (the files record the updates)")
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--eval-episodes", type=int, default=32)  # on-policy --eval_episodes 32
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    if args.plot:
        print(f"wrote {plot_curve(args.plot)}")
        return
    if not args.map or not args.updates:
        ap.error("--map and --updates are required (or --plot FILE)")

    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    reg = registry()
    spec = reg.environment(f"smax-{args.map}")
    algo_spec = reg.algorithm("mappo")
    config = build_config(algo_spec.config_cls, parse_assignments(args.sets))
    algo = algo_spec.cls(config, spec.info, torch.device("cpu"), args.seed)
    algo.setup_online(spec)

    snapshots, t0 = [], time.perf_counter()
    print(f"MAPPO on {spec.name}: {config.n_envs} envs x {config.rollout} steps per update, "
          f"{args.updates} updates; {args.eval_episodes} eval episodes every {args.eval_every}")
    print(f"{'update':>6} {'env steps':>10} {'minutes':>7} {'train win':>9} {'eval win':>8} "
          f"{'eval return':>11} {'smac scale':>10}")
    for update in range(1, args.updates + 1):
        metrics = algo.update()
        out_of_time = args.minutes and time.perf_counter() - t0 > 60 * args.minutes
        if update % args.eval_every and update != args.updates and not out_of_time:
            continue
        episodes = evaluate(spec, algo.policy(seed=update), args.eval_episodes,
                            seed=args.seed + update, parallel=8)
        ret = float(np.mean([e.ret for e in episodes]))
        snap = {"update": update, "env_steps": int(metrics["env_steps"]),
                "minutes": round((time.perf_counter() - t0) / 60, 2),
                "train_win_rate": metrics.get("train_win_rate"),
                "train_return": metrics.get("train_return"),
                "eval_win_rate": float(np.mean([bool(e.won) for e in episodes])),
                "eval_return": ret,
                "actor": {k: v.detach().cpu().numpy().copy()
                          for k, v in algo.actor.net.state_dict().items()}}
        snapshots.append(snap)
        print(f"{update:>6} {snap['env_steps']:>10} {snap['minutes']:>7.1f} "
              f"{snap['train_win_rate'] or 0:>9.2f} {snap['eval_win_rate']:>8.2f} {ret:>11.3f} "
              f"{10 * ret:>10.2f}", flush=True)
        if out_of_time:
            print(f"stopped after {args.minutes} minutes")
            break

    measure, chosen = pick(snapshots)
    print(f"chosen by {measure}")
    for quality, s in chosen.items():
        print(f"{quality:>6}: update {s['update']}, eval win rate {s['eval_win_rate']:.2f}, "
              f"return {s['eval_return']:.3f}")
    if args.dry_run:
        return
    out = args.out or BEHAVIOURS / args.map
    common = {"env": spec.name, "algorithm": "mappo", "config": to_dict(config),
              "seed": args.seed, "command": command_line(), "packages": package_versions()}
    for quality, s in chosen.items():
        meta = {**common, "quality": quality, **{k: v for k, v in s.items() if k != "actor"}}
        save_policy(out / f"{quality}.safetensors", s["actor"], meta)
    write_json(out / "training.json", {
        **common, "measure": measure, "targets": {"medium": MEDIUM, "poor": POOR},
        "chosen": {q: s["update"] for q, s in chosen.items()},
        "curve": [{k: v for k, v in s.items() if k != "actor"} for s in snapshots]})
    plot_curve(out / "training.json")
    print(f"wrote {', '.join(chosen)} and the training curve to {out}")


if __name__ == "__main__":
    main()
