"""A small causal transformer (GPT) with a sliding attention window and a KV cache.

Decision-transformer style models feed it token embeddings that already carry their position
(a timestep embedding added to every token, as the Decision Transformer does instead of GPT's
positional table), so a token's keys and values never depend on where a context window starts.
That makes an incremental cache valid: at inference each new token is appended and attends to
the cached keys and values of the `span - 1` tokens before it, instead of the whole window
being recomputed every step. `forward` over a full sequence applies the same sliding window,
so both views give the same outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def sliding_causal_mask(n_queries: int, n_keys: int, span: int,
                        device: torch.device | str | None = None) -> torch.Tensor:
    """[n_queries, n_keys] bool: the queries are the last `n_queries` of `n_keys` positions and
    each sees itself and the `span - 1` positions before it."""
    q = torch.arange(n_keys - n_queries, n_keys, device=device)[:, None]
    k = torch.arange(n_keys, device=device)[None, :]
    return (k <= q) & (k > q - span)


def step_mask(step: torch.Tensor, sees_same_step: torch.Tensor) -> torch.Tensor:
    """[T, T] bool attention mask over tokens grouped into timesteps.

    `step` [T] is each token's timestep (non-decreasing) and `sees_same_step` [T, T] bool says
    which tokens of the same timestep a token may see. Every token sees all tokens of earlier
    timesteps, so agents' tokens of one step can see each other while later steps stay hidden.
    """
    earlier = step[None, :] < step[:, None]
    same = step[None, :] == step[:, None]
    return earlier | (same & sees_same_step)


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.resid_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None,
                mask: torch.Tensor | None) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """x [B, T, dim]; `past` = cached (keys, values) [B, heads, P, head_dim] that precede x.
        `mask` None means plain causal attention over x alone. Returns (y, all keys/values)."""
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        if past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None and past is None,
            dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, D)
        return self.resid_drop(self.proj(y)), (k, v)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, dropout)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(),
                                 nn.Linear(mlp_ratio * dim, dim), nn.Dropout(dropout))

    def forward(self, x, past, mask):
        a, kv = self.attn(self.ln1(x), past, mask)
        x = x + a
        return x + self.mlp(self.ln2(x)), kv


class KVCache:
    """Keys and values of the last `span - 1` tokens of every layer (what the next token sees)."""

    def __init__(self) -> None:
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __len__(self) -> int:
        return self.layers[0][0].shape[2] if self.layers else 0


class GPT(nn.Module):
    """Causal transformer trunk over given token embeddings [B, T, dim] -> [B, T, dim].

    Each token attends to itself and the `span - 1` tokens before it. Weights are initialised
    as in GPT-2 / minGPT: normal(0, 0.02) linear weights, zero biases.
    """

    def __init__(self, dim: int, layers: int, heads: int, span: int, mlp_ratio: int = 4,
                 dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.span = span
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """A whole sequence at once (training, or the reference for `step`).

        `mask` [T, T] bool (True: query row may attend to key column) replaces the sliding
        causal window, e.g. to let tokens of one timestep see each other (`step_mask`)."""
        T = x.shape[1]
        if mask is None:
            mask = None if T <= self.span else sliding_causal_mask(T, T, self.span, x.device)
        elif mask.shape != (T, T) or mask.dtype != torch.bool:
            raise ValueError(f"mask must be bool [{T}, {T}], got {mask.dtype} {tuple(mask.shape)}")
        x = self.drop(x)
        for block in self.blocks:
            x, _ = block(x, None, mask)
        return self.ln_f(x)

    def step(self, x: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """The next tokens x [B, T, dim] of sequences whose earlier tokens are in `cache`
        (updated in place); same outputs as `forward` over the whole sequence."""
        T, past = x.shape[1], len(cache)
        mask = (None if T == 1 and past + 1 <= self.span
                else sliding_causal_mask(T, past + T, self.span, x.device))
        x = self.drop(x)
        keep = self.span - 1
        layers = []
        for i, block in enumerate(self.blocks):
            x, (k, v) = block(x, cache.layers[i] if cache.layers else None, mask)
            layers.append((k[:, :, -keep:], v[:, :, -keep:]) if keep
                          else (k[:, :, :0], v[:, :, :0]))
        cache.layers = layers
        return self.ln_f(x)


def weight_decay_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups that decay only the weights of linear layers (minGPT's rule:
    biases, LayerNorm and embedding weights are not decayed)."""
    decay, rest = [], []
    for m in module.modules():
        for name, p in m.named_parameters(recurse=False):
            (decay if isinstance(m, nn.Linear) and name == "weight" else rest).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": rest, "weight_decay": 0.0}]
