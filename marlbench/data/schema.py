"""HDF5 dataset format, schema v1: writing, reading, verifying.

One file per dataset. Episodes are stored concatenated along the step axis (never padded) with
an episode index; return-to-go is derived at load time.

    /steps/obs        [T, n, obs_dim]   float32
    /steps/state      [T, state_dim]    float32  (absent when attr state_is_concat_obs is true:
                                                  the state is then obs.reshape(T, -1))
    /steps/avail      [T, n, n_actions] bool     available actions
    /steps/actions    [T, n]            int32
    /steps/rewards    [T]               float32  team reward
    /steps/terminated [T]               bool     true terminal (no bootstrap)
    /steps/truncated  [T]               bool     time limit on the last step of an episode
    /episodes/start   [E] int64,  /episodes/length [E] int64,  /episodes/return [E] float32
    /episodes/won     [E] bool       (envs with a win flag)
    /episodes/final_obs [E, n, obs_dim], /episodes/final_avail [E, n, n_actions],
    /episodes/final_state [E, state_dim] (unless concat): what followed each episode's last
                                          step, so value methods can bootstrap at truncation.

Root attrs form the dataset card: format, schema_version, env, env_version, family, quality,
behaviour, seed, episodes, steps, the EnvInfo fields, return_min/mean/max/std, win_rate,
reference_returns (JSON), created_with, created_at, packages (JSON), sha256.

`sha256` is content-addressed: for every array, sha256 of its C-order bytes; the file digest is
the sha256 of the sorted lines "name:dtype:shape:digest". Same arrays, same digest, whatever
HDF5 chunking, compression or timestamps.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from marlbench.errors import DatasetError
from marlbench.fsutil import AtomicFile
from marlbench.spaces import EnvInfo

FORMAT = "marlbench-dataset"
SCHEMA_VERSION = 1
_CHUNK_STEPS = 2048
STEP_ARRAYS = ("obs", "state", "avail", "actions", "rewards", "terminated", "truncated")
EPISODE_ARRAYS = ("start", "length", "return", "won", "final_obs", "final_state", "final_avail")
INFO_FIELDS = ("n_agents", "obs_dim", "state_dim", "n_actions", "episode_limit")


def _shapes(info: EnvInfo) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    n, od, sd, na = info.n_agents, info.obs_dim, info.state_dim, info.n_actions
    f32, b = np.dtype(np.float32), np.dtype(bool)
    return {
        "steps/obs": ((n, od), f32), "steps/state": ((sd,), f32), "steps/avail": ((n, na), b),
        "steps/actions": ((n,), np.dtype(np.int32)), "steps/rewards": ((), f32),
        "steps/terminated": ((), b), "steps/truncated": ((), b),
        "episodes/start": ((), np.dtype(np.int64)), "episodes/length": ((), np.dtype(np.int64)),
        "episodes/return": ((), f32), "episodes/won": ((), b),
        "episodes/final_obs": ((n, od), f32), "episodes/final_state": ((sd,), f32),
        "episodes/final_avail": ((n, na), b),
    }


def combine_digests(digests: Mapping[str, tuple[str, tuple[int, ...], str]]) -> str:
    """File digest from per-array (dtype, shape, digest)."""
    lines = [f"{k}:{dt}:{'x'.join(map(str, shape))}:{d}"
             for k, (dt, shape, d) in sorted(digests.items())]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


class DatasetWriter:
    """Appends episodes to a temporary file; `commit()` finalises the card and publishes it.

    Until `commit()`, the destination path is untouched: an interrupted collection leaves no
    file that looks complete.
    """

    def __init__(self, path: Path, info: EnvInfo, *, state_is_concat_obs: bool,
                 has_win_flag: bool):
        self.path, self.info = Path(path), info
        self._file = AtomicFile(self.path)
        self._h5 = h5py.File(self._file.tmp, "w")
        self._skip = set()
        if state_is_concat_obs:
            self._skip |= {"steps/state", "episodes/final_state"}
        if not has_win_flag:
            self._skip.add("episodes/won")
        self._hash = {}
        for name, (shape, dtype) in _shapes(info).items():
            if name in self._skip:
                continue
            chunk = (_CHUNK_STEPS if name.startswith("steps/") else 256, *shape)
            self._h5.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape),
                                    dtype=dtype, chunks=chunk, compression="gzip",
                                    compression_opts=4, shuffle=True)
            self._hash[name] = hashlib.sha256()
        self.state_is_concat_obs, self.has_win_flag = state_is_concat_obs, has_win_flag
        self._buffer: dict[str, list[np.ndarray]] = {}
        self.steps = self.episodes = 0
        self.returns: list[float] = []
        self.wins: list[bool] = []

    def _append(self, name: str, arr: np.ndarray) -> None:
        if name in self._skip:
            return
        shape, dtype = _shapes(self.info)[name]
        arr = np.ascontiguousarray(arr, dtype=dtype)
        if arr.shape[1:] != shape:
            raise ValueError(f"{name}: expected per-row shape {shape}, got {arr.shape[1:]}")
        self._hash[name].update(arr.tobytes())
        # Buffer rows and write whole chunks: appending short episodes one by one would
        # recompress the same gzip chunk over and over.
        buf = self._buffer.setdefault(name, [])
        buf.append(arr)
        if sum(map(len, buf)) >= self._h5[name].chunks[0]:
            self._flush(name)

    def _flush(self, name: str) -> None:
        buf = self._buffer.pop(name, [])
        if not buf:
            return
        arr = np.concatenate(buf)
        ds = self._h5[name]
        ds.resize(ds.shape[0] + len(arr), axis=0)
        ds[-len(arr):] = arr

    def add_episode(self, steps: Mapping[str, np.ndarray], final: Mapping[str, np.ndarray],
                    won: bool | None = None) -> None:
        """`steps`: the STEP_ARRAYS stacked over the episode; `final`: obs/state/avail after it."""
        length = len(steps["rewards"])
        if length == 0:
            raise ValueError("empty episode")
        for key in STEP_ARRAYS:
            self._append(f"steps/{key}", steps[key])
        ret = float(np.sum(steps["rewards"], dtype=np.float64))
        self._append("episodes/start", np.array([self.steps]))
        self._append("episodes/length", np.array([length]))
        self._append("episodes/return", np.array([ret]))
        self._append("episodes/won", np.array([bool(won)]))
        for key in ("obs", "state", "avail"):
            self._append(f"episodes/final_{key}", final[key][None])
        self.steps += length
        self.episodes += 1
        self.returns.append(ret)
        if won is not None:
            self.wins.append(bool(won))

    def commit(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """Write the card (attrs) and publish the file; returns the card."""
        if self.episodes == 0:
            raise ValueError("no episodes collected")
        for name in list(self._buffer):
            self._flush(name)
        digests = {k: (self._h5[k].dtype.str, tuple(self._h5[k].shape), h.hexdigest())
                   for k, h in self._hash.items()}
        r = np.asarray(self.returns, dtype=np.float64)
        card = {
            "format": FORMAT, "schema_version": SCHEMA_VERSION,
            **{f: getattr(self.info, f) for f in INFO_FIELDS},
            "env": self.info.name,
            "state_is_concat_obs": self.state_is_concat_obs,
            "has_win_flag": self.has_win_flag,
            "episodes": self.episodes, "steps": self.steps,
            "return_min": float(r.min()), "return_mean": float(r.mean()),
            "return_max": float(r.max()), "return_std": float(r.std()),
            "win_rate": float(np.mean(self.wins)) if self.wins else None,
            **attrs,
            "sha256": combine_digests(digests),
        }
        for k, v in card.items():
            self._h5.attrs[k] = _attr(v)
        self._h5.close()
        self._file.commit()
        return card

    def abort(self) -> None:
        """Discard everything written (the destination is untouched)."""
        try:
            self._h5.close()
        finally:
            self._file.discard()


def _attr(v: Any) -> Any:
    if v is None:
        return "null"
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, sort_keys=True)
    return v


def _unattr(v: Any) -> Any:
    if isinstance(v, bytes):
        v = v.decode()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, str) and v[:1] in "[{" or v == "null":
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _open(path: Path) -> h5py.File:
    if not path.exists():
        raise DatasetError(f"dataset file {path} does not exist")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(f"dataset file {path} is corrupt or truncated ({exc}); delete it and "
                           "collect it again") from None


def read_card(path: Path | str) -> dict[str, Any]:
    """The dataset card (root attributes), after checking format and schema version."""
    path = Path(path)
    with _open(path) as f:
        card = {k: _unattr(v) for k, v in f.attrs.items()}
    if card.get("format") != FORMAT:
        raise DatasetError(f"{path} is not a marlbench dataset (format attr "
                           f"{card.get('format')!r})")
    if card.get("schema_version") != SCHEMA_VERSION:
        raise DatasetError(f"{path} has schema version {card.get('schema_version')!r}; this "
                           f"marlbench reads version {SCHEMA_VERSION}. Recollect it with "
                           "`marlbench datasets collect`")
    return card


def check_compatible(card: Mapping[str, Any], info: EnvInfo, path: Path | str) -> None:
    """Raise DatasetError unless the dataset was made for this env (name and shapes)."""
    bad = [f"{f} {card.get(f)} != {getattr(info, f)}" for f in INFO_FIELDS
           if card.get(f) != getattr(info, f)]
    if bad:
        raise DatasetError(f"dataset {path} was made for {card.get('env')!r} and does not fit "
                           f"env {info.name!r}: " + ", ".join(bad))
    if card.get("env") != info.name:
        raise DatasetError(f"dataset {path} was made for env {card.get('env')!r}, not "
                           f"{info.name!r} (shapes agree, but the tasks differ)")


def read_arrays(path: Path | str, verify: bool = True) -> tuple[dict[str, Any],
                                                                 dict[str, np.ndarray]]:
    """(card, arrays) with every array loaded into memory and, by default, the digest checked."""
    path = Path(path)
    card = read_card(path)
    arrays: dict[str, np.ndarray] = {}
    digests = {}
    try:
        with _open(path) as f:
            for group in ("steps", "episodes"):
                for key, ds in f[group].items():
                    arr = ds[()]
                    arrays[f"{group}/{key}"] = arr
                    if verify:
                        digests[f"{group}/{key}"] = (arr.dtype.str, tuple(arr.shape),
                                                     hashlib.sha256(arr.tobytes()).hexdigest())
    except (OSError, KeyError, RuntimeError) as exc:
        raise DatasetError(f"dataset file {path} is corrupt or truncated ({exc}); delete it "
                           "and collect it again") from None
    _check_structure(card, arrays, path)
    if verify and combine_digests(digests) != card.get("sha256"):
        raise DatasetError(f"dataset file {path} fails its checksum (sha256 in the card does not "
                           "match the arrays): it was modified or damaged; recollect it")
    return card, arrays


def _check_structure(card: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
                     path: Path) -> None:
    required = [f"steps/{k}" for k in STEP_ARRAYS if k != "state"] + [
        "episodes/start", "episodes/length", "episodes/return", "episodes/final_obs",
        "episodes/final_avail"]
    if not card.get("state_is_concat_obs"):
        required += ["steps/state", "episodes/final_state"]
    missing = [k for k in required if k not in arrays]
    if missing:
        raise DatasetError(f"dataset file {path} lacks arrays {missing}; it is damaged")
    T, E = len(arrays["steps/rewards"]), len(arrays["episodes/start"])
    if T != card.get("steps") or E != card.get("episodes"):
        raise DatasetError(f"dataset file {path} holds {E} episodes / {T} steps but its card "
                           f"says {card.get('episodes')} / {card.get('steps')}")
    start, length = arrays["episodes/start"], arrays["episodes/length"]
    if E and (start[0] != 0 or np.any(start[1:] != (start + length)[:-1])
              or start[-1] + length[-1] != T):
        raise DatasetError(f"dataset file {path} has an inconsistent episode index")
