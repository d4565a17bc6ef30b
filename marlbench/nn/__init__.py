"""Layers shared by algorithm plugins (so no algorithm imports another)."""

from marlbench.nn.common import (
    FixedNormalizer,
    MaskedBatchNorm,
    agent_one_hot,
    mask_logits,
    masked_mean,
    mlp,
    select_actions,
)

__all__ = ["FixedNormalizer", "MaskedBatchNorm", "agent_one_hot", "mask_logits", "masked_mean",
           "mlp", "select_actions"]
