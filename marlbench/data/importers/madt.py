"""MADT's SMAC episodes: one `torch.save` file per episode (a pickle).

The layout, as MADT's replay buffer writes and reads it (ReinholdM/Offline-Pre-trained-Multi-
Agent-Decision-Transformer, sc2/framework/buffer.py: `insert` builds episodes,
`load_offline_data` reads every file of `<data_dir>/<map>/<quality>/` with `torch.load`): an
episode is a list with one trajectory per agent, each a list of steps ``[g, o, a, r, d, ava]``
(a seventh entry, a value estimate, in online data): ``g`` the agent's global state (MAPPO's
agent-specific state), ``o`` its observation, ``a`` = [action id], ``r`` = [reward] (SMAC's
shared team reward), ``d`` its done flag, ``ava`` its available actions (0/1). Every agent's
list has one entry per env step until all agents are done. MADT pads obs/state/avail to fixed
sizes when loading; the files hold the env's own sizes, which is what is checked here.

The global state marlbench stores is agent 0's ``g``. The files record no final observation
and no win flag.

Loading a pickle can run arbitrary code, so this reader refuses unless the caller passes
``allow_pickle=True`` (``--allow-pickle``), and warns when it does.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from marlbench.data.importers.common import Episode, Source, team_reward
from marlbench.errors import DatasetError

FORMAT = "madt"


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if files:
            return files
        raise DatasetError(f"{path} holds no episode files")
    raise DatasetError(f"{path} does not exist")


def _load(f: Path) -> list:
    import pickle

    import torch

    try:
        data = torch.load(f, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, ValueError,
            AttributeError, ModuleNotFoundError) as exc:
        raise DatasetError(f"{f} is not a readable torch.save file "
                           f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                           ) from None
    return data


def _episode(f: Path, data: Any) -> dict[str, np.ndarray]:
    bad = DatasetError(f"{f}: expected a list per agent of [g, o, a, r, d, ava] steps "
                       f"(MADT's episode layout), got {type(data).__name__}")
    if not isinstance(data, (list, tuple)) or not data \
            or not all(isinstance(t, (list, tuple)) and t for t in data):
        raise bad
    lengths = {len(t) for t in data}
    if len(lengths) > 1:
        raise DatasetError(f"{f}: agents' trajectories differ in length ({sorted(lengths)})")
    try:
        cols = [[np.asarray([step[j] for step in traj], dtype=np.float64) for traj in data]
                for j in range(6)]
    except (TypeError, ValueError, IndexError):
        raise bad from None
    g, o, a, r, d, ava = (np.stack(c, 1) for c in cols)  # each [T, n, ...]
    if a.ndim == 3:
        a = a[..., 0]
    if r.ndim == 3:
        r = r[..., 0]
    if g.ndim != 3 or o.ndim != 3 or ava.ndim != 3 or a.ndim != 2 or r.ndim != 2:
        raise bad
    return {"state": g[:, 0], "obs": o, "actions": a, "rewards": r, "done": d != 0,
            "avail": ava}


def open_source(path: Path, *, allow_pickle: bool = False, **_: Any) -> Source:
    path = Path(path)
    files = _files(path)
    if not allow_pickle:
        raise DatasetError(f"{path}: MADT episodes are pickles (torch.save) and loading a "
                           "pickle can run any code it contains; pass --allow-pickle if you "
                           "trust these files")
    warnings.warn(f"loading {len(files)} pickled MADT episode file(s) from {path} with "
                  "torch.load(weights_only=False): a pickle can run arbitrary code, so only do "
                  "this with files you trust", stacklevel=2)
    eps = [_episode(f, _load(f)) for f in files]
    dims = {(e["obs"].shape[1], e["obs"].shape[2], e["state"].shape[1], e["avail"].shape[2])
            for e in eps}
    if len(dims) > 1:
        raise DatasetError(f"{path}: episodes disagree in (agents, obs, state, actions) dims: "
                           f"{sorted(dims)}")
    (N, OD, S, A), = dims
    rules = set()
    for e in eps:
        e["team"], rule = team_reward(e["rewards"])
        rules.add(rule)

    def episodes() -> Iterator[Episode]:
        for e in eps:
            yield Episode(obs=e["obs"].astype(np.float32),
                          state=e["state"].astype(np.float32), avail=e["avail"] != 0,
                          actions=e["actions"], rewards=e["team"].astype(np.float32),
                          terminal=bool(e["done"][-1].all()))

    notes = {"reward": " / ".join(sorted(rules)), "state": "agent 0's global state g",
             "pickle": "loaded with --allow-pickle"}
    return Source(format=FORMAT, path=path, files=files, n_agents=N, obs_dim=OD, state_dim=S,
                  n_actions=A, episodes=episodes, n_episodes=len(eps), notes=notes)
