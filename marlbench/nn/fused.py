"""One compiled graph per recurrent timestep, with an eager fallback.

A batch-1 recurrent step is hundreds of tiny tensor ops, so eager PyTorch spends its time in
Python dispatch, not arithmetic (MADS4 on rware-small-6ag: ~600 calls per environment step).
`torch.compile` turns the whole timestep into one Inductor graph; with its C++ wrapper
(`cpp_wrapper`) the kernels are also launched from C++, which is what removes the per-op
cost on a CPU (bench/mads4_vs_madt.py measures both). The price is a compilation per process
and input shape (seconds to tens of seconds), so it pays for long rollouts (fine-tuning,
latency-bound serving), not for a few evaluation episodes.

Where compilation fails (no C++ compiler, an unsupported op), the step warns once and runs
eagerly: the same function, only slower.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch


class CompiledStep:
    """`fn`, compiled on first call (one graph per input shape); eager if that fails."""

    def __init__(self, fn: Callable, what: str):
        self.fn, self.what = fn, what
        self._compiled: Callable | None = torch.compile(
            fn, dynamic=False, fullgraph=True, options={"cpp_wrapper": True})

    def __call__(self, *args):
        if self._compiled is not None:
            try:
                return self._compiled(*args)
            except Exception as exc:  # compilation is optional: any failure means eager
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc)
                warnings.warn(f"{self.what}: torch.compile failed ({reason}); running eagerly",
                              RuntimeWarning, stacklevel=2)
                self._compiled = None
        return self.fn(*args)
