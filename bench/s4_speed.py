"""S4 / MADS4 speed and size, measured in one run.

    python bench/s4_speed.py [--threads 2] [--repeats 5]
    python bench/s4_speed.py --thread-sweep [--rounds 2]

1. Train step (forward + backward + AdamW) of 3 S4 blocks, H = N = 96, B = 32, L = 500:
   marlbench's kernel (one Cauchy matrix per forward, all terms in one contraction) against
   the naive NPLR kernel that evaluates each of the four Cauchy sums separately; then the
   kernel generation alone, the part the two differ in.
2. One S4 layer's recurrent step (H = N = 96, batch 1): the O(N) diagonal-plus-low-rank step
   against the dense N x N matvec of the reference (its matrices formed once, outside the
   timing). Then the MADS4 recurrent step per agent at batch 1 (rware-tiny-2ag shapes), timed
   at t = 1, 100, 500 of an episode: the recurrent view's cost must not grow with t.
3. Conv vs recurrent max error of the whole MADS4 model over 500 steps.
4. Parameter counts of MADS4 at the paper's six (N, H) configurations (Table 3).
Times are the median of `--repeats` (after warm-up); ratios are computed within this run.

`--thread-sweep` measures instead what the runner's per-phase thread default is chosen from:
1 vs 2 torch threads for the MADS4 train step (defaults, rware-small-6ag expert data when
collected, else random data of its shapes: B = 16, L = 500) and for its recurrent policy at
batch 1 and at 16 parallel episodes, interleaved over `--rounds` so load changes hit both.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from marlbench.algorithms.mads4 import MADS4Config, MADS4Net, MADS4Policy, previous_actions
from marlbench.api import EnvInfo
from marlbench.nn.s4 import S4Block, S4Layer, SSMKernel

PAPER_CONFIGS = [(96, 96), (64, 64), (32, 32), (64, 96), (96, 64), (32, 64)]  # (N, H)


def naive_nplr_kernel(k: SSMKernel) -> torch.Tensor:
    """The same NPLR kernel, each of the four Cauchy sums computed on its own."""
    L = k.L
    dt = torch.exp(k.log_dt)[:, None]
    omega = torch.exp(-2j * math.pi * torch.arange(L // 2 + 1) / L)
    lam = k._lambda()
    B, P, C = k._B(), k._P(), torch.view_as_complex(k.C)

    def cauchy(v: torch.Tensor) -> torch.Tensor:  # Σ_n over both halves of each pair
        out = 0
        for lam_, v_ in ((lam, v), (lam.conj(), v.conj())):
            denom = (2.0 / dt[..., None]) * (1 - omega) - lam_[..., None] * (1 + omega)
            out = out + (v_[..., None] * 2.0 / denom).sum(-2)
        return out

    k00, k01 = cauchy(C * B), cauchy(C * P)
    k10, k11 = cauchy(P.conj() * B), cauchy(P.conj() * P)
    q = (1 + omega) / 2
    return torch.fft.irfft(k00 - k01 * (k10 * q / (1 + k11 * q)), n=L)


def time_it(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def train_step_time(naive: bool, repeats: int) -> float:
    torch.manual_seed(0)
    blocks = torch.nn.ModuleList(S4Block(96, 96, 500, dropout=0.1) for _ in range(3))
    opt = torch.optim.AdamW(blocks.parameters(), lr=1e-3)
    x = torch.randn(32, 500, 96)

    def step():
        y = x
        for b in blocks:
            k = naive_nplr_kernel(b.s4.kernel) if naive else None
            y, _ = b(y, k=k)
        loss = y.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return time_it(step, repeats)


def kernel_time(naive: bool, repeats: int) -> float:
    """Kernel generation alone (forward + backward) for the 3 layers of the train step."""
    torch.manual_seed(0)
    kernels = [S4Block(96, 96, 500).s4.kernel for _ in range(3)]

    def step():
        ks = [naive_nplr_kernel(k) if naive else k() for k in kernels]
        sum(k.square().sum() for k in ks).backward()

    return time_it(step, repeats)


def layer_step_times(repeats: int) -> tuple[float, float]:
    """(O(N) step, dense reference step) seconds per call, one layer, batch 1."""
    torch.manual_seed(0)
    layer = S4Layer(96, 96, 500)
    u = torch.randn(1, 96)
    A, B, C = layer.kernel.recurrence()  # dense, formed once
    A_T, C_T = A.transpose(1, 2).contiguous(), C.permute(1, 2, 0).contiguous()
    fast, dense = layer.initial_state(1), torch.zeros(96, 1, 96)

    def step_fast():
        layer.step(u, fast)

    def step_dense():  # x = Ā x + B̄ u, y = C x as batched row-vector products (landed code)
        x = torch.baddbmm(u.t()[:, :, None] * B[:, None, :], dense, A_T)
        torch.bmm(x, C_T)

    with torch.inference_mode():
        n = 200
        return (time_it(lambda: [step_fast() for _ in range(n)], repeats) / n,
                time_it(lambda: [step_dense() for _ in range(n)], repeats) / n)


def recurrent_step_times(repeats: int) -> dict[int, float]:
    torch.manual_seed(0)
    env = EnvInfo("rware-tiny-2ag", 2, 71, 142, 5, 500)
    policy = MADS4Policy(MADS4Net(MADS4Config(), env), 1.0, 1.0, greedy=False, seed=0)
    obs = np.random.default_rng(0).normal(size=(1, 2, 71)).astype(np.float32)
    state, avail = obs.reshape(1, -1), np.ones((1, 2, 5), bool)
    policy.reset(1)
    policy.act(obs, state, avail)  # builds the step matrices once (not a per-step cost)
    out = {}
    for _ in range(repeats):
        policy.reset(1)
        for t in range(1, 501):
            t0 = time.perf_counter()
            policy.act(obs, state, avail)
            dt = (time.perf_counter() - t0) / env.n_agents
            if t in (1, 100, 500):
                out.setdefault(t, []).append(dt)
    return {t: float(np.median(v)) for t, v in out.items()}


def conv_vs_recurrent_error() -> float:
    torch.manual_seed(0)
    env = EnvInfo("rware-tiny-2ag", 2, 71, 142, 5, 500)
    net = MADS4Net(MADS4Config(), env).eval()
    obs, state, rtg = torch.randn(1, 500, 2, 71), torch.randn(1, 500, 142), torch.rand(1, 500)
    prev = previous_actions(torch.randint(0, 5, (1, 500, 2)), 5)
    with torch.no_grad():
        conv = net(rtg, state, obs, prev)
        carry, rec = net.initial_carry(1), []
        for t in range(500):
            rec.append(net.step(rtg[:, t], state[:, t], obs[:, t], prev[:, t], carry)[0])
    return (torch.stack(rec, 1) - conv).abs().max().item()


def thread_sweep(rounds: int) -> None:
    import statistics
    from pathlib import Path

    from marlbench.config import build_config
    from marlbench.data import OfflineDataset
    from marlbench.plugins import registry

    reg = registry()
    env = reg.environment("rware-small-6ag")
    path = Path(__file__).resolve().parent.parent / "datasets/rware-small-6ag/expert.h5"
    if not path.exists():
        raise SystemExit(f"collect the data first: marlbench datasets collect --env "
                         f"rware-small-6ag --quality expert ({path} is missing)")
    data = OfflineDataset.load(path, env.info)
    spec = reg.algorithm("mads4")
    algo = spec.cls(build_config(spec.config_cls, {}), env.info, torch.device("cpu"), 0)
    algo.setup(data)
    obs, state, avail = data.obs[:1].numpy(), data.state[:1].numpy(), data.avail[:1].numpy()
    res: dict[tuple[str, int], list[float]] = {}
    for _ in range(rounds):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            algo.update()
            for _ in range(2):
                t0 = time.perf_counter()
                algo.update()
                res.setdefault(("train step (s)", threads), []).append(time.perf_counter() - t0)
            policy = algo.policy(greedy=True)
            for batch, steps in ((1, 300), (16, 100)):
                o, s, a = (np.repeat(x, batch, 0) for x in (obs, state, avail))
                policy.reset(batch)
                for i in range(steps):
                    t0 = time.perf_counter()
                    policy.act(o, s, a)
                    if i >= steps // 10:
                        res.setdefault((f"policy step, batch {batch} (ms)", threads), []).append(
                            (time.perf_counter() - t0) * 1e3)
    for what in dict.fromkeys(k for k, _ in res):
        one, two = (statistics.median(res[(what, t)]) for t in (1, 2))
        print(f"{what:28} 1 thread {one:8.3f}   2 threads {two:8.3f}   (2 / 1 = {two / one:.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--thread-sweep", action="store_true")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if args.thread_sweep:
        return thread_sweep(args.rounds)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    fast, naive = train_step_time(False, args.repeats), train_step_time(True, args.repeats)
    print(f"train step, 3 blocks H=N=96, B=32, L=500: {fast:.3f} s (naive four-Cauchy "
          f"{naive:.3f} s, speed-up x{naive / fast:.1f}; target <= 0.25 s and >= x3)")

    k_fast, k_naive = kernel_time(False, args.repeats), kernel_time(True, args.repeats)
    print(f"  of which kernel generation (fwd + bwd, 3 layers): {k_fast:.3f} s (naive "
          f"{k_naive:.3f} s, x{k_naive / k_fast:.1f}); the rest (FFT convolution, mixing, "
          f"optimiser) is common to both")

    fast_step, dense_step = layer_step_times(args.repeats)
    print(f"one S4 layer step (H = N = 96, batch 1): O(N) {fast_step * 1e6:.1f} us, dense N x N "
          f"{dense_step * 1e6:.1f} us (x{dense_step / fast_step:.1f})")

    steps = recurrent_step_times(args.repeats)
    print("MADS4 recurrent step per agent, batch 1: " + ", ".join(
        f"t={t}: {v * 1e3:.3f} ms" for t, v in steps.items())
        + f" (t=500 / t=1 = {steps[500] / steps[1]:.2f}; target <= 0.1 ms quiet, flat)")

    print(f"MADS4 conv vs recurrent max |error| over 500 steps: {conv_vs_recurrent_error():.2e} "
          "(target <= 1e-4)")

    print("MADS4 parameters at the paper's (N, H) configurations (Table 3):")
    print(f"  {'(N, H)':10}" + "".join(f"{f'small-{n}ag':>12}" for n in (2, 4, 6)))
    for N, H in PAPER_CONFIGS:
        counts = []
        for n in (2, 4, 6):
            env = EnvInfo(f"rware-small-{n}ag", n, 71, 71 * n, 5, 500)
            net = MADS4Net(MADS4Config(d_state=N, d_model=H), env)
            counts.append(sum(p.numel() for p in net.parameters()))
        print(f"  {f'({N}, {H})':10}" + "".join(f"{c:>12,}" for c in counts))
    print("  (paper §5.4: 'about 200k' at (96, 96))")


if __name__ == "__main__":
    main()
