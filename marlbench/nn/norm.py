"""Causal BatchNorm for sequence models trained on whole trajectories.

BatchNorm as usually applied to a sequence normalises each training token with statistics
pooled over the batch at every timestep, so the output at t depends on inputs after t (in
value and in gradient): a model trained that way can look ahead in its own trajectory, which
its recurrent view (running statistics, one step at a time) never can.

`CausalBatchNorm` keeps BatchNorm's intent, features normalised by the statistics of the data
(mean and variance over the batches of valid tokens, per feature), but normalises every token,
in training as at inference, with the running estimates from *earlier* updates, and only then
updates them with this batch's valid tokens:

    y = (x - μ_run) / sqrt(σ²_run + eps) * weight + bias,
    μ_run <- (1 - m) μ_run + m mean(x_valid),  σ²_run <- (1 - m) σ²_run + m var(x_valid)

Within a forward pass it is one affine map per token, so d y_t / d x_s = 0 for s != t
(causal), and training and inference apply the same function (no batch-vs-running mismatch).
Not kept: the gradient through the batch statistics. Normalising with a causal prefix of the
batch instead (statistics of steps <= t) was tried first: its early timesteps see statistics
of a handful of tokens that inference never uses, and the cooperation toy test of MADS4 fell
from 100% to 66%.

`slots` keeps separate running statistics per slot (e.g. per agent position when one shared
network runs once per agent and each pass sees another input distribution); the affine
weights are shared.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CausalBatchNorm(nn.Module):
    """BatchNorm over the feature axis of [..., C] tokens with running statistics in
    training too (updated after use, from valid tokens only)."""

    def __init__(self, num_features: int, slots: int = 1, momentum: float = 0.1,
                 eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(slots, num_features))
        self.register_buffer("running_var", torch.ones(slots, num_features))
        self._affine: tuple | None = None

    def affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift) [slots, C] with y = x * scale[slot] + shift[slot]: the map every
        token gets, for a one-op step at inference. Cached until a parameter or statistic
        changes in place or is replaced."""
        ts = (self.weight, self.bias, self.running_mean, self.running_var)
        key = tuple((t._version, t.data_ptr()) for t in ts)
        if self._affine is None or self._affine[0] != key:
            with torch.no_grad():
                scale = self.weight * torch.rsqrt(self.running_var + self.eps)
                shift = self.bias - self.running_mean * scale
            self._affine = (key, (scale, shift))
        return self._affine[1]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                slot: int = 0) -> torch.Tensor:
        """x [..., C]; mask [...] (x's leading shape) True on valid tokens."""
        flat = x.reshape(-1, x.shape[-1])
        mean, var = self.running_mean[slot], self.running_var[slot]
        if self.training and torch.is_grad_enabled():
            # Autograd keeps the statistics this pass used: later in-place updates (by
            # another slot's pass or the next forward) must not touch them.
            mean, var = mean.clone(), var.clone()
        y = F.batch_norm(flat, mean, var, self.weight, self.bias, False, 0.0, self.eps)
        if self.training:
            with torch.no_grad():
                m = (torch.ones_like(flat[:, :1]) if mask is None
                     else mask.reshape(-1, 1).to(flat.dtype))
                n = m.sum()  # a tensor: no host sync on an accelerator
                batch_mean = (flat * m).sum(0) / n.clamp_min(1.0)
                batch_var = ((flat - batch_mean).square() * m).sum(0) / (n - 1).clamp_min(1.0)
                w = self.momentum * (n > 0).to(flat.dtype)  # no valid token: no update
                self.running_mean[slot].lerp_(batch_mean, w)
                self.running_var[slot].lerp_(batch_var, w)
        return y.reshape(x.shape)
