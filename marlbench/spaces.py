"""The shapes every layer agrees on. Kept apart from `marlbench.api` so the data layer can use
them without depending on the plugin contracts (which refer back to the data layer)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EnvInfo:
    """The shapes an algorithm is built for; an env and every dataset made from it agree on them."""

    name: str
    n_agents: int
    obs_dim: int
    state_dim: int
    n_actions: int
    episode_limit: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
