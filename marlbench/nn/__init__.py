"""Layers shared by algorithm plugins (so no algorithm imports another)."""

from marlbench.nn.common import (FixedNormalizer, agent_one_hot, mask_logits, masked_mean, mlp,
                                 select_actions)

__all__ = ["FixedNormalizer", "agent_one_hot", "mask_logits", "masked_mean", "mlp",
           "select_actions"]
