"""Layers shared by algorithm plugins (so no algorithm imports another)."""

from marlbench.nn.common import (
    TARGET_RETURN_SCALE,
    ActionSampler,
    FixedNormalizer,
    agent_inputs,
    agent_one_hot,
    choice_mask,
    mask_logits,
    masked_mean,
    mlp,
    optimizer_step,
    return_to_go_scale,
    select_actions,
    target_return,
)

__all__ = ["TARGET_RETURN_SCALE", "ActionSampler", "FixedNormalizer", "agent_inputs",
           "agent_one_hot", "choice_mask", "mask_logits", "masked_mean", "mlp", "optimizer_step",
           "return_to_go_scale", "select_actions", "target_return"]
