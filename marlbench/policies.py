"""Acting pieces shared by algorithm plugins (so no algorithm imports another)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from marlbench.api import Policy
from marlbench.nn import ActionSampler


class FeedForwardPolicy(Policy):
    """Memoryless, decentralised acting: each agent's logits from the current step alone.

    `logits(obs [E, n, od], state [E, sd]) -> [E, n, A]` is evaluated with `net` in eval mode.
    """

    def __init__(self, net: nn.Module, logits: Callable[[torch.Tensor, torch.Tensor],
                 torch.Tensor], device: torch.device, greedy: bool, seed: int):
        self.net, self.logits, self.device = net.eval(), logits, device
        self.choose = ActionSampler(greedy, seed, device)

    def reset(self, n_envs: int) -> None:
        self.choose.reset(n_envs)

    @torch.inference_mode()
    def act(self, obs: np.ndarray, state: np.ndarray, avail: np.ndarray) -> np.ndarray:
        t = lambda x: torch.as_tensor(x, device=self.device)  # noqa: E731
        logits = self.logits(t(obs), t(state))
        return self.choose(logits, t(avail)).cpu().numpy()


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """Polyak averaging θ' <- (1 - τ) θ' + τ θ of a target network."""
    for tp, p in zip(target.parameters(), source.parameters(), strict=True):
        tp.lerp_(p, tau)
