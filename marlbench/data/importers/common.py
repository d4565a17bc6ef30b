"""What every importer hands over, and the one path from there to a schema-v1 dataset file.

A reader turns a published layout into a `Source`: the files it read (hashed into the card),
the dims it found, and a generator of `Episode`s. `write_dataset` checks the dims against the
env plugin before anything is written, then feeds the episodes to the same `DatasetWriter`
`marlbench datasets collect` uses (temporary file, renamed into place on success).

Episode ends: an episode that reaches the env's episode limit is stored as *truncated* (a time
limit, value methods bootstrap there) whatever flag the source put on it: the AlberDICE
warehouse env and OG-MARL's converted sets mark the limit as a terminal. Shorter episodes keep
the source's terminal flag.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from marlbench.data.schema import DatasetWriter
from marlbench.errors import DatasetError
from marlbench.progress import Reporter
from marlbench.provenance import creation_record

# HDF5 keeps attributes under 64 KiB; beyond this many files only the combined digest is kept.
MAX_LISTED_FILES = 64


@dataclass
class Episode:
    """One episode in marlbench's conventions (team reward, bool masks, int actions)."""

    obs: np.ndarray  # [T, n, obs_dim]
    state: np.ndarray | None  # [T, state_dim], None when the source stores no global state
    avail: np.ndarray  # [T, n, n_actions] bool
    actions: np.ndarray  # [T, n] int
    rewards: np.ndarray  # [T] team reward
    terminal: bool  # the source ends this episode with a true terminal
    final_obs: np.ndarray | None = None  # what followed the last step, when the source has it
    final_state: np.ndarray | None = None
    final_avail: np.ndarray | None = None
    won: bool | None = None  # only where the source records wins (a marlbench export)


@dataclass
class Source:
    """A published dataset opened by a reader; nothing is written until `write_dataset`."""

    format: str
    path: Path
    files: list[Path]  # every file the import reads
    n_agents: int
    obs_dim: int
    state_dim: int | None  # None: the source has no global state
    n_actions: int
    episodes: Callable[[], Iterator[Episode]]
    n_episodes: int | None = None  # for the progress bar, when known up front
    has_win_flag: bool = False  # episodes carry `won`
    notes: dict[str, Any] = field(default_factory=dict)  # format facts recorded in the card


def team_reward(per_agent: np.ndarray) -> tuple[np.ndarray, str]:
    """[..., n] per-agent rewards -> team reward and the rule used.

    Shared rewards (SMAC, OG-MARL's converted sets: every agent gets the team reward) are taken
    as they are; individual rewards (RWARE's per-agent deliveries) are summed, which is
    marlbench's RWARE team reward.
    """
    if per_agent.shape[-1] == 1 or np.all(per_agent == per_agent[..., :1]):
        return per_agent[..., 0], "shared (identical for every agent)"
    return per_agent.sum(-1), "sum over agents"


def file_digests(root: Path, files: list[Path]) -> tuple[str, dict[str, str]]:
    """sha256 of each file (keyed by path relative to `root`) and their combined digest."""
    digests = {}
    for f in files:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        rel = os.path.relpath(f, root) if root.is_dir() else f.name
        digests[rel] = h.hexdigest()
    lines = "\n".join(f"{k}:{v}" for k, v in sorted(digests.items()))
    return hashlib.sha256(lines.encode()).hexdigest(), digests


def check_dims(source: Source, spec) -> dict[str, list]:
    """Refuse a source whose shapes do not fit the env; returns {dim: [source, env]}."""
    info = spec.info
    if not (info.n_agents and info.obs_dim and info.n_actions):
        raise DatasetError(f"env {info.name!r} reports no shapes here (n_agents "
                           f"{info.n_agents}, obs_dim {info.obs_dim}, n_actions {info.n_actions}"
                           "): its simulator is not installed, so the data cannot be checked "
                           "or used; install it first (`marlbench plugins` says what it needs)")
    pairs = {"n_agents": [source.n_agents, info.n_agents],
             "obs_dim": [source.obs_dim, info.obs_dim],
             "n_actions": [source.n_actions, info.n_actions]}
    if not spec.state_is_concat_obs:
        pairs["state_dim"] = [source.state_dim, info.state_dim]
    bad = [f"{k} {s if s is not None else 'none'} vs {e}" for k, (s, e) in pairs.items()
           if s != e]
    if bad:
        raise DatasetError(
            f"{source.path} ({source.format}) does not fit env {info.name!r} "
            f"(source vs env): {', '.join(bad)}; name the env it was recorded in with --env")
    return pairs


def _episode_arrays(ep: Episode, k: int, info, keep_state: bool,
                    counts: dict[str, int]) -> tuple[dict, dict]:
    T = len(ep.rewards)
    n, od, na = info.n_agents, info.obs_dim, info.n_actions
    where = f"episode {k}"
    if T == 0:
        raise DatasetError(f"{where} has no steps")
    if T > info.episode_limit:
        raise DatasetError(f"{where} has {T} steps, more than {info.name}'s episode limit "
                           f"{info.episode_limit}")
    expect = {"obs": (T, n, od), "avail": (T, n, na), "actions": (T, n), "rewards": (T,)}
    if keep_state:
        expect["state"] = (T, info.state_dim)
    for key, shape in expect.items():
        arr = getattr(ep, key)
        if arr is None or tuple(arr.shape) != shape:
            got = None if arr is None else tuple(arr.shape)
            raise DatasetError(f"{where}: {key} has shape {got}, expected {shape}")
    actions = np.asarray(ep.actions)
    if not np.array_equal(actions, np.round(actions)) or actions.min() < 0 \
            or actions.max() >= na:
        raise DatasetError(f"{where}: actions outside 0..{na - 1}")
    actions = actions.astype(np.int64)
    avail = np.asarray(ep.avail) != 0
    taken = np.take_along_axis(avail, actions[..., None], -1)[..., 0]
    if not taken.all():
        t, i = map(int, np.argwhere(~taken)[0])
        raise DatasetError(f"{where}: agent {i} takes action {actions[t, i]} at step {t}, "
                           "which the source marks unavailable")
    # A time limit is a truncation, whatever the source called it (module docstring).
    terminated_end = bool(ep.terminal) and T < info.episode_limit
    counts["terminated" if terminated_end else "truncated"] += 1
    terminated = np.zeros(T, dtype=bool)
    truncated = np.zeros(T, dtype=bool)
    terminated[-1], truncated[-1] = terminated_end, not terminated_end
    steps = {"obs": ep.obs, "avail": avail, "actions": actions, "rewards": ep.rewards,
             "terminated": terminated, "truncated": truncated,
             "state": ep.state if keep_state else None}
    if ep.final_obs is None:
        counts["final_repeated"] += 1
    final = {
        "obs": ep.obs[-1] if ep.final_obs is None else ep.final_obs,
        "avail": avail[-1] if ep.final_avail is None else np.asarray(ep.final_avail) != 0,
        "state": np.zeros(0, np.float32),  # not stored when the state is the concatenated obs
    }
    if keep_state:
        final["state"] = ep.state[-1] if ep.final_state is None else ep.final_state
    for key, shape in (("obs", (n, od)), ("avail", (n, na))):
        if tuple(final[key].shape) != shape:
            raise DatasetError(f"{where}: final {key} has shape {tuple(final[key].shape)}, "
                               f"expected {shape}")
    return steps, final


def write_dataset(source: Source, spec, path: Path, *, quality: str = "imported",
                  references: Mapping[str, float] | Callable[[], Mapping[str, float]]
                  | None = None, reporter: Reporter | None = None) -> dict[str, Any]:
    """Convert `source` into the dataset file `path` (atomic); returns the card.

    `references`: the env's reference returns for the card, or a function measuring them,
    called only once every episode has converted (bad data fails before that cost)."""
    reporter = reporter or Reporter()
    dims = check_dims(source, spec)
    info = spec.info
    keep_state = not spec.state_is_concat_obs
    t0 = time.perf_counter()
    src_digest, per_file = file_digests(source.path, source.files)
    counts = {"terminated": 0, "truncated": 0, "final_repeated": 0}
    writer = DatasetWriter(path, info, state_is_concat_obs=spec.state_is_concat_obs,
                           has_win_flag=source.has_win_flag)  # the published formats have none
    try:
        with reporter.task(f"import {source.format} -> {info.name}",
                           total=source.n_episodes) as task:
            for k, ep in enumerate(source.episodes()):
                steps, final = _episode_arrays(ep, k, info, keep_state, counts)
                writer.add_episode(steps, final, ep.won if source.has_win_flag else None)
                task.advance()
        if writer.episodes == 0:
            raise DatasetError(f"{source.path} holds no complete episode")
        if callable(references):
            references = references()
        notes = dict(source.notes)
        notes["episode_ends"] = (f"{counts['terminated']} terminal, {counts['truncated']} "
                                 f"time limit or cut (stored as truncated; limit "
                                 f"{info.episode_limit})")
        if counts["final_repeated"]:
            notes["final_obs"] = (f"{counts['final_repeated']} episodes: the source does not "
                                  "store what followed the last step; the last step's "
                                  "observation stands in for it")
        if spec.state_is_concat_obs and source.state_dim is not None:
            notes["state"] = (f"source state ({source.state_dim} dims) dropped: {info.name}'s "
                              "state is the agents' concatenated observations")
        card = writer.commit({
            "family": spec.family, "env_version": spec.version, "quality": quality,
            "behaviour": f"imported ({source.format})", "seed": None,
            "reference_returns": dict(references or {}),
            "source_format": source.format,
            "source_path": str(source.path.resolve()),
            "source_sha256": src_digest,
            "source_files": len(per_file),
            "source_file_sha256": per_file if len(per_file) <= MAX_LISTED_FILES else None,
            "import_notes": notes,
            "env_compatibility": {"env": info.name, "checked (source, env)": dims,
                                  "episode_limit": info.episode_limit},
            **creation_record(t0),
        })
    except BaseException:
        writer.abort()
        raise
    return card
