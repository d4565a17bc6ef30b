"""Checkpoints as safetensors: weights plus JSON metadata, no pickle on load.

The metadata names the algorithm, its config and the env shapes; loading into an algorithm
built with anything else is refused with a clear message rather than a shape error (or, worse,
silently working with the wrong architecture).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from marlbench.api import Algorithm
from marlbench.config import to_dict
from marlbench.errors import CheckpointError
from marlbench.fsutil import atomic_path

FORMAT = "marlbench-checkpoint-v1"


def save(path: Path | str, algo_name: str, algo: Algorithm) -> None:
    tensors = {f"{m}.{k}": v.detach().cpu().clone().contiguous()
               for m, module in algo.modules().items()
               for k, v in module.state_dict().items()}
    meta = {"format": FORMAT, "algorithm": algo_name,
            "config": json.dumps(to_dict(algo.config), sort_keys=True),
            "env": json.dumps(algo.env.to_dict(), sort_keys=True),
            "extra": json.dumps(algo.extra_state(), sort_keys=True)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def read_metadata(path: Path | str) -> dict[str, Any]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a marlbench checkpoint")
    return {k: (json.loads(v) if k in ("config", "env", "extra") else v)
            for k, v in meta.items()}


def load(path: Path | str, algo_name: str, algo: Algorithm) -> None:
    """Load weights into `algo`, which must be the same algorithm, config and env shapes."""
    meta = read_metadata(path)
    if meta["algorithm"] != algo_name:
        raise CheckpointError(f"checkpoint {path} is for algorithm {meta['algorithm']!r}, "
                              f"not {algo_name!r}")
    cfg = json.loads(json.dumps(to_dict(algo.config)))
    diff = sorted(k for k in set(cfg) | set(meta["config"])
                  if cfg.get(k) != meta["config"].get(k))
    if diff:
        shown = ", ".join(f"{k}: {meta['config'].get(k)!r} (checkpoint) vs {cfg.get(k)!r}"
                          for k in diff[:5])
        raise CheckpointError(f"checkpoint {path} was trained with another config: {shown}")
    env = algo.env.to_dict()
    bad = [k for k in env if k != "name" and env[k] != meta["env"].get(k)]
    if bad:
        raise CheckpointError(f"checkpoint {path} is for env {meta['env'].get('name')!r} with "
                              f"different shapes ({', '.join(bad)})")
    groups: dict[str, dict[str, torch.Tensor]] = {}
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
            m, _, k = key.partition(".")
            groups.setdefault(m, {})[k] = f.get_tensor(key)
    modules = algo.modules()
    if set(groups) != set(modules):
        raise CheckpointError(f"checkpoint {path} holds modules {sorted(groups)}, the algorithm "
                              f"has {sorted(modules)}")
    for m, module in modules.items():
        try:
            module.load_state_dict(groups[m], strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint {path}: {m}: {exc}") from None
    algo.load_extra_state(meta["extra"])
