"""In-memory offline dataset with the two views algorithms need.

* `trajectories(...)`: whole episodes (or random windows of them) zero-padded to a common
  length, with a validity mask and the return-to-go derived from the rewards — for sequence
  models (MADS4, MADT) and recurrent value methods.
* `transitions(...)`: single steps with the next step's obs/state/avail, where the step after
  an episode's last one comes from the stored final observation and `terminated` says whether
  to bootstrap — for TD methods (ICQ, OMAR, OMIGA).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marlbench.data.schema import check_compatible, read_arrays
from marlbench.spaces import EnvInfo


@dataclass
class TrajectoryBatch:
    """Padded episodes; everything past `mask` is zero (avail is all-True there)."""

    obs: torch.Tensor  # [B, L, n, obs_dim]
    state: torch.Tensor  # [B, L, state_dim]
    avail: torch.Tensor  # [B, L, n, n_actions] bool
    actions: torch.Tensor  # [B, L, n] long
    rewards: torch.Tensor  # [B, L] team reward
    rtg: torch.Tensor  # [B, L] return-to-go from each step to the episode's end
    mask: torch.Tensor  # [B, L] bool, True on real steps
    terminated: torch.Tensor  # [B, L] bool
    timesteps: torch.Tensor  # [B, L] long, step index within the episode


@dataclass
class TransitionBatch:
    obs: torch.Tensor  # [B, n, obs_dim]
    state: torch.Tensor  # [B, state_dim]
    avail: torch.Tensor  # [B, n, n_actions] bool
    actions: torch.Tensor  # [B, n] long
    rewards: torch.Tensor  # [B]
    next_obs: torch.Tensor
    next_state: torch.Tensor
    next_avail: torch.Tensor
    terminated: torch.Tensor  # [B] bool: True = true terminal, do not bootstrap


def _to(batch, device):
    for f in fields(batch):
        setattr(batch, f.name, getattr(batch, f.name).to(device, non_blocking=True))
    return batch


class OfflineDataset:
    """A dataset file loaded into (CPU) memory."""

    def __init__(self, card: dict[str, Any], arrays: dict[str, np.ndarray], info: EnvInfo,
                 path: Path | None = None):
        self.card, self.info, self.path = card, info, path
        t = lambda k: torch.from_numpy(np.ascontiguousarray(arrays[k]))  # noqa: E731
        self.obs = t("steps/obs")
        self.avail = t("steps/avail")
        self.actions = t("steps/actions").long()
        self.rewards = t("steps/rewards")
        self.terminated = t("steps/terminated")
        self.start = arrays["episodes/start"].astype(np.int64)
        self.length = arrays["episodes/length"].astype(np.int64)
        self.returns = arrays["episodes/return"].astype(np.float64)
        self.won = arrays.get("episodes/won")
        self.final_obs = t("episodes/final_obs")
        self.final_avail = t("episodes/final_avail")
        if card.get("state_is_concat_obs"):
            self.state = self.obs.reshape(len(self.obs), -1)
            self.final_state = self.final_obs.reshape(len(self.final_obs), -1)
        else:
            self.state = t("steps/state")
            self.final_state = t("episodes/final_state")
        self.episode_of = np.repeat(np.arange(len(self.start)), self.length)
        self.t_in_episode = np.arange(len(self.episode_of)) - self.start[self.episode_of]
        self.rtg = torch.from_numpy(self._return_to_go(arrays["steps/rewards"]))

    @classmethod
    def load(cls, path: Path | str, info: EnvInfo, verify: bool = True) -> OfflineDataset:
        """Load and check a dataset file against the env it will be used with."""
        card, arrays = read_arrays(path, verify=verify)
        check_compatible(card, info, path)
        return cls(card, arrays, info, Path(path))

    def _return_to_go(self, rewards: np.ndarray) -> np.ndarray:
        c = np.concatenate([[0.0], np.cumsum(rewards, dtype=np.float64)])
        end = (self.start + self.length)[self.episode_of]
        return (c[end] - c[:-1]).astype(np.float32)

    # -- summary ---------------------------------------------------------------------------------

    @property
    def n_episodes(self) -> int:
        return len(self.start)

    @property
    def n_steps(self) -> int:
        return len(self.episode_of)

    @property
    def max_length(self) -> int:
        return int(self.length.max())

    @property
    def max_return(self) -> float:
        return float(self.returns.max())

    @property
    def sha256(self) -> str:
        return str(self.card.get("sha256", ""))

    # -- sampling --------------------------------------------------------------------------------

    def trajectories(self, batch_size: int, rng: np.random.Generator,
                     length: int | None = None, episodes: np.ndarray | None = None,
                     device: torch.device | str | None = None) -> TrajectoryBatch:
        """Episodes padded to `length` (default: the longest episode).

        Episodes longer than `length` contribute a random window of `length` steps (the DT way
        of sampling a context); shorter ones are zero-padded after their end. Pass `episodes`
        to choose the episodes instead of sampling them uniformly.
        """
        L = length or self.max_length
        ep = episodes if episodes is not None else rng.integers(0, self.n_episodes, batch_size)
        ep_len = self.length[ep]
        offset = np.zeros(len(ep), dtype=np.int64)
        long_ = ep_len > L
        if long_.any():
            offset[long_] = rng.integers(0, ep_len[long_] - L + 1)
        t = offset[:, None] + np.arange(L)[None, :]  # [B, L] step within episode
        valid = t < ep_len[:, None]
        idx = self.start[ep][:, None] + np.minimum(t, ep_len[:, None] - 1)
        idx_t = torch.from_numpy(idx)
        m = torch.from_numpy(valid)

        def g(x: torch.Tensor, fill=0) -> torch.Tensor:
            out = x[idx_t]
            shape = m.shape + (1,) * (out.dim() - 2)
            return torch.where(m.view(shape), out, torch.as_tensor(fill, dtype=out.dtype))

        batch = TrajectoryBatch(
            obs=g(self.obs), state=g(self.state), avail=g(self.avail, True),
            actions=g(self.actions), rewards=g(self.rewards), rtg=g(self.rtg), mask=m,
            terminated=g(self.terminated, False), timesteps=torch.from_numpy(t * valid))
        return _to(batch, device) if device is not None else batch

    def transitions(self, batch_size: int, rng: np.random.Generator,
                    device: torch.device | str | None = None) -> TransitionBatch:
        """Uniformly sampled steps with what followed them."""
        i = rng.integers(0, self.n_steps, batch_size)
        ep = self.episode_of[i]
        last = i == self.start[ep] + self.length[ep] - 1
        nxt = torch.from_numpy(np.where(last, i, i + 1))
        last_t, ep_t, i_t = torch.from_numpy(last), torch.from_numpy(ep), torch.from_numpy(i)

        def after(x: torch.Tensor, final: torch.Tensor) -> torch.Tensor:
            shape = (-1,) + (1,) * (x.dim() - 1)
            return torch.where(last_t.view(shape), final[ep_t], x[nxt])

        batch = TransitionBatch(
            obs=self.obs[i_t], state=self.state[i_t], avail=self.avail[i_t],
            actions=self.actions[i_t], rewards=self.rewards[i_t],
            next_obs=after(self.obs, self.final_obs), next_state=after(self.state,
                                                                       self.final_state),
            next_avail=after(self.avail, self.final_avail), terminated=self.terminated[i_t])
        return _to(batch, device) if device is not None else batch
