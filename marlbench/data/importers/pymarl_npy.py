"""PyMARL episode-batch dumps (the AlberDICE RWARE datasets): a folder of .npy arrays.

The layout, as AlberDICE's `ReplayBuffer.save` writes it (dematsunaga/alberdice,
pymarl-master/src/components/episode_buffer.py: one `<key>.npy` per transition-data key plus
`meta.json` {"buffer_index", "episodes_in_buffer", "buffer_size"}), with the scheme of
pymarl-master/src/run.py (arrays [E, episode_limit + 1, ...]):

    obs.npy [E, L+1, N, obs_dim] float32     state.npy [E, L+1, state_dim] float32
    actions.npy [E, L+1, N, 1] int64         avail_actions.npy [E, L+1, N, n_actions] int32
    reward.npy [E, L+1, 1] float32 (team)    terminated.npy [E, L+1, 1] uint8
    filled.npy [E, L+1, 1] int64             actions_onehot.npy (redundant, not read)

The episode runner (pymarl-master/src/runners/episode_runner.py) stores step t's obs, state and
avail with its action, reward and terminal flag, then one more row after the last step with
the final obs/state/avail; `filled` marks all of these rows. So an episode with F filled rows
has F - 1 steps and its row F - 1 is what followed the last one. Only the first
`episodes_in_buffer` episodes are data (the loader reads `meta.json` for that count).
AlberDICE's warehouse env sets terminated at its 500-step limit (a time limit, stored here as
truncated: see `marlbench.data.importers.common`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from marlbench.data.importers.common import Episode, Source
from marlbench.errors import DatasetError

FORMAT = "pymarl-npy"
ARRAYS = ("obs", "state", "actions", "avail_actions", "reward", "terminated", "filled")
META = "meta.json"


def open_source(path: Path, **_: Any) -> Source:
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{path} is not a folder (a PyMARL dump is a folder of .npy arrays "
                           f"and {META})")
    missing = [f for f in (META, *(f"{k}.npy" for k in ARRAYS)) if not (path / f).is_file()]
    if missing:
        raise DatasetError(f"{path} is not a complete PyMARL dump: missing {', '.join(missing)}")
    try:
        meta = json.loads((path / META).read_text())
        n_ep = int(meta["episodes_in_buffer"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{path / META} lacks a readable episodes_in_buffer ({exc})") from None
    a = {}
    for k in ARRAYS:
        try:
            a[k] = np.load(path / f"{k}.npy", mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{path / (k + '.npy')} is not a readable .npy array "
                               f"({str(exc).splitlines()[0]})") from None
    lead = {k: tuple(v.shape[:2]) for k, v in a.items()}
    if len(set(lead.values())) > 1 or a["obs"].ndim != 4:
        detail = ", ".join(f"{k} {v.shape}" for k, v in a.items())
        raise DatasetError(f"{path}: arrays disagree in [episodes, steps]: {detail}")
    E, L1, N, OD = a["obs"].shape
    if not 0 < n_ep <= E:
        raise DatasetError(f"{path / META}: episodes_in_buffer {n_ep} but the arrays hold {E}")
    n_actions = a["avail_actions"].shape[-1]
    shapes = {"state": (E, L1, a["state"].shape[-1]), "actions": (E, L1, N, 1),
              "avail_actions": (E, L1, N, n_actions), "reward": (E, L1, 1),
              "terminated": (E, L1, 1), "filled": (E, L1, 1)}
    for k, shape in shapes.items():
        if a[k].shape != shape:
            raise DatasetError(f"{path}: {k}.npy has shape {a[k].shape}, expected {shape}")

    def episodes() -> Iterator[Episode]:
        for e in range(n_ep):
            filled = np.asarray(a["filled"][e, :, 0]) != 0
            F = int(filled.sum())
            if F < 2 or not filled[:F].all():
                raise DatasetError(f"{path}: episode {e} has {F} filled rows"
                                   + ("" if F >= 2 else " (needs at least one step)")
                                   + ("" if filled[:F].all() else ", not contiguous from 0"))
            T = F - 1
            term = np.asarray(a["terminated"][e, :T, 0]) != 0
            if term[:-1].any():
                raise DatasetError(f"{path}: episode {e} is flagged terminated at step "
                                   f"{int(np.flatnonzero(term)[0])}, before its last step {T - 1}")
            yield Episode(
                obs=np.asarray(a["obs"][e, :T]), state=np.asarray(a["state"][e, :T]),
                avail=np.asarray(a["avail_actions"][e, :T]) != 0,
                actions=np.asarray(a["actions"][e, :T, :, 0]),
                rewards=np.asarray(a["reward"][e, :T, 0]), terminal=bool(term[-1]),
                final_obs=np.asarray(a["obs"][e, T]), final_state=np.asarray(a["state"][e, T]),
                final_avail=np.asarray(a["avail_actions"][e, T]) != 0)

    files = sorted(p for p in path.iterdir() if p.is_file()
                   and (p.name == META or p.suffix == ".npy"))
    notes = {"episodes_in_buffer": n_ep, "rows_per_episode": L1,
             "reward": "reward.npy (the team reward)", "meta": meta}
    return Source(format=FORMAT, path=path, files=files, n_agents=N, obs_dim=OD,
                  state_dim=int(a["state"].shape[-1]), n_actions=int(n_actions),
                  episodes=episodes, n_episodes=n_ep, notes=notes)
