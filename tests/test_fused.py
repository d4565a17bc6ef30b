"""marlbench.nn.fused: a compiled step that falls back to eager, once and loudly."""

from __future__ import annotations

import warnings

import pytest
import torch

from marlbench.nn.fused import CompiledStep


def _data_dependent(x: torch.Tensor) -> torch.Tensor:
    if x.sum().item() > 0:  # a host sync and a branch on it: no single graph (fullgraph)
        return x + 1
    return x - 1


def test_a_step_that_cannot_compile_warns_once_and_runs_eagerly():
    step = CompiledStep(_data_dependent, "toy step")
    with pytest.warns(RuntimeWarning, match="toy step: torch.compile failed"):
        assert torch.equal(step(torch.ones(3)), torch.full((3,), 2.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(step(-torch.ones(3)), torch.full((3,), -2.0))
