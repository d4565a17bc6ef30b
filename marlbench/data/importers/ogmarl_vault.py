"""OG-MARL vaults (flashbax `Vault`, version 1.x): import and export.

The layout, as flashbax writes it (flashbax/vault/vault.py, VERSION = 1.2) and OG-MARL reads it
(og_marl/vault_utils/, og_marl/offline_dataset.py)::

    <rel_dir>/<vault_name>.vlt/<uid>/metadata.json    {"version": 1.2,
                                                      "structure_shape": tree of "(B, T, ...)",
                                                      "structure_dtype": tree of dtype names,
                                                      ...any extra metadata}
    <uid>/manifest.ocdbt, <uid>/d/<hash>              tensorstore OCDBT key-value store

Every leaf of the experience tree is a zarr (v2) array inside the OCDBT store, under its tree
path with a dot after each key (``observations.``, ``infos.legals.``), created with shape
(B, 10**13, ...) (the time axis grows by appending; gzip level 5). ``vault_index`` (int32,
shape (1,)) holds how many time steps are valid. There are no ``.zarray`` files on disk, so
only tensorstore reads it. OG-MARL's tree: ``observations`` [B,T,N,O], ``actions`` [B,T,N],
``rewards``, ``terminals``, ``truncations`` [B,T,N], ``infos.legals`` [B,T,N,A],
``infos.state`` [B,T,S], with B = 1. Episodes follow one another along time and end where
terminals or truncations hold for every agent (OG-MARL's `calculate_returns` takes `all` over
agents); steps after the last end belong to an episode the vault cut off and are dropped.

Export writes the same tree (team reward and end flags repeated per agent, as OG-MARL's
shared-reward sets have them) plus three marlbench leaves, ``infos.final_observations``,
``infos.final_state``, ``infos.final_legals``: what followed each episode's last step, placed
at that step (zeros elsewhere), and ``infos.won`` [B, T] for datasets with a win flag, so a
round trip loses nothing. Readers that do not know them ignore them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from marlbench.data.importers.common import Episode, Source, team_reward
from marlbench.data.schema import read_arrays
from marlbench.errors import DatasetError, MarlbenchError
from marlbench.fsutil import publish_dir, write_json
from marlbench.progress import Reporter

FORMAT = "ogmarl-vault"
VERSION = 1.2  # flashbax Vault VERSION; readers accept the same major version, as flashbax does
METADATA_FILE = "metadata.json"
INDEX = "vault_index"
TIME_AXIS_MAX_LENGTH = 10**13  # flashbax: int(10e12), the upper bound of the time axis
COMPRESSION = {"id": "gzip", "level": 5}  # flashbax COMPRESSION_DEFAULT
REQUIRED = ("observations.", "actions.", "rewards.", "terminals.")
FINAL_LEAVES = ("infos.final_observations.", "infos.final_state.", "infos.final_legals.")
WON = "infos.won."  # marlbench export of a dataset with a win flag: 1 at the last step of a win


def _tensorstore():
    try:
        import tensorstore
    except ImportError:
        raise MarlbenchError("the ogmarl-vault format needs tensorstore, an optional extra: "
                             "pip install 'marlbench[vault]'") from None
    return tensorstore


def _spec(uid_dir: Path, name: str) -> dict[str, Any]:
    """flashbax's datastore spec: a zarr array inside the OCDBT store at the uid folder."""
    return {"driver": "zarr",
            "kvstore": {"driver": "ocdbt", "base": f"file://{uid_dir.resolve()}", "path": name},
            "metadata": {}}


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten metadata's structure tree into {"a.b.": leaf} (flashbax's _path_to_ds_name)."""
    if isinstance(tree, Mapping):
        out = {}
        for key in sorted(tree, key=str):
            out.update(_leaves(tree[key], f"{prefix}{key}."))
        return out
    return {prefix: tree}


def find_uid_dir(path: Path) -> Path:
    """The vault folder holding metadata.json: PATH itself, or its only uid sub-folder."""
    if not path.exists():
        raise DatasetError(f"{path} does not exist")
    if (path / METADATA_FILE).is_file():
        return path
    if path.is_dir():
        uids = sorted(p.name for p in path.iterdir() if (p / METADATA_FILE).is_file())
        if len(uids) == 1:
            return path / uids[0]
        if uids:
            raise DatasetError(f"{path} holds {len(uids)} vaults ({', '.join(uids)}); pass one "
                               f"of them, e.g. {path / uids[0]}")
    raise DatasetError(f"{path} is not an OG-MARL vault (no {METADATA_FILE} in it or in a "
                       "sub-folder)")


def read_vault(path: Path) -> tuple[Path, dict[str, Any], dict[str, np.ndarray], int]:
    """(uid folder, metadata, {leaf name: array [B, vault_index, ...]}, vault_index)."""
    ts = _tensorstore()
    uid_dir = find_uid_dir(Path(path))
    try:
        meta = json.loads((uid_dir / METADATA_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{uid_dir / METADATA_FILE} is not readable JSON ({exc})") from None
    version = meta.get("version")
    if not isinstance(version, (int, float)) or int(version) != int(VERSION):
        raise DatasetError(f"{uid_dir} has vault version {version!r}; this reader knows "
                           f"flashbax vault version {int(VERSION)}.x")
    names = list(_leaves(meta.get("structure_shape", {})))
    missing = [n for n in REQUIRED if n not in names]
    if missing:
        raise DatasetError(f"{uid_dir}: the vault's structure lacks {missing} (has {names})")
    try:
        index = int(ts.open(_spec(uid_dir, INDEX)).result().read().result()[0])
        stores = {n: ts.open(_spec(uid_dir, n)).result() for n in names}
    except (ValueError, RuntimeError, OSError) as exc:
        raise DatasetError(f"{uid_dir}: cannot open the vault's arrays "
                           f"({str(exc).splitlines()[0]})") from None
    batch = {n: s.shape[0] for n, s in stores.items()}
    short = {n: s.shape[1] for n, s in stores.items() if s.shape[1] < index}
    if short:
        detail = ", ".join(f"{n} {t}" for n, t in sorted(short.items()))
        raise DatasetError(f"{uid_dir}: arrays disagree in length: vault_index says {index} "
                           f"steps but {detail}")
    if len(set(batch.values())) > 1:
        detail = ", ".join(f"{n} {b}" for n, b in sorted(batch.items()))
        raise DatasetError(f"{uid_dir}: arrays disagree in batch size: {detail}")
    arrays = {n: np.asarray(s[:, :index].read().result()) for n, s in stores.items()}
    return uid_dir, meta, arrays, index


def open_source(path: Path, **_: Any) -> Source:
    uid_dir, meta, a, index = read_vault(path)
    obs = a["observations."]
    if obs.ndim != 4:
        raise DatasetError(f"{uid_dir}: observations. has shape {obs.shape}, expected "
                           "[B, T, agents, obs_dim]")
    B, _, N, OD = obs.shape
    actions = a["actions."]
    if actions.ndim == 4 and actions.shape[-1] == 1:
        actions = actions[..., 0]
    if actions.ndim != 3:
        raise DatasetError(f"{uid_dir}: actions. has shape {a['actions.'].shape}: only "
                           "discrete action ids [B, T, agents] are supported")

    def per_agent(name: str, default: np.ndarray | None = None) -> np.ndarray:
        x = a.get(name, default)
        if x is not None and x.ndim == 2:  # one flag per step, not per agent
            x = np.repeat(x[..., None], N, -1)
        return x

    rewards = per_agent("rewards.")
    terminals = per_agent("terminals.") != 0
    truncations = per_agent("truncations.", np.zeros_like(terminals)) != 0
    legals = a.get("infos.legals.")
    state = a.get("infos.state.")
    n_actions = legals.shape[-1] if legals is not None else int(actions.max()) + 1
    shapes = {"actions.": actions.shape[2], "rewards.": rewards.shape[2],
              "terminals.": terminals.shape[2], "truncations.": truncations.shape[2]}
    if legals is not None:
        shapes["infos.legals."] = legals.shape[2]
    if any(v != N for v in shapes.values()):
        detail = ", ".join(f"{k} {v}" for k, v in {"observations.": N, **shapes}.items())
        raise DatasetError(f"{uid_dir}: arrays disagree on the number of agents: {detail}")
    team, rule = team_reward(rewards)
    ends = terminals.all(-1) | truncations.all(-1)  # [B, T]
    finals = [a.get(n) for n in FINAL_LEAVES]
    won = a.get(WON)
    trailing = int(sum(index - (np.flatnonzero(ends[b])[-1] + 1 if ends[b].any() else 0)
                       for b in range(B)))

    def episodes() -> Iterator[Episode]:
        for b in range(B):
            start = 0
            for end in np.flatnonzero(ends[b]):
                s = slice(start, end + 1)
                av = (legals[b, s] != 0) if legals is not None else \
                    np.ones((end + 1 - start, N, n_actions), dtype=bool)
                yield Episode(
                    obs=obs[b, s], state=None if state is None else state[b, s], avail=av,
                    actions=actions[b, s], rewards=team[b, s],
                    terminal=bool(terminals[b, end].all()),
                    final_obs=None if finals[0] is None else finals[0][b, end],
                    final_state=None if finals[1] is None else finals[1][b, end],
                    final_avail=None if finals[2] is None else finals[2][b, end],
                    won=None if won is None else bool(won[b, end] != 0))
                start = end + 1

    files = sorted(p for p in uid_dir.rglob("*") if p.is_file())
    notes = {"vault": f"{uid_dir.parent.name}/{uid_dir.name}", "vault_version": meta["version"],
             "vault_index": index, "reward": rule,
             "legals": "from infos.legals" if legals is not None else
                       "absent: every action marked available"}
    if trailing:
        notes["dropped"] = f"{trailing} steps after the last episode end (an unfinished episode)"
    if "marlbench" in meta:
        notes["exported_from"] = meta["marlbench"]
    return Source(format=FORMAT, path=uid_dir, files=files, n_agents=N, obs_dim=OD,
                  state_dim=None if state is None else int(state.shape[-1]),
                  n_actions=int(n_actions), episodes=episodes,
                  n_episodes=int(ends.sum()), notes=notes, has_win_flag=won is not None)


# ----------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------


def _experience(arrays: Mapping[str, np.ndarray]) -> dict[str, Any]:
    obs = arrays["steps/obs"]
    T, n = obs.shape[:2]
    state = arrays.get("steps/state")
    if state is None:
        state = obs.reshape(T, -1)
    last = arrays["episodes/start"] + arrays["episodes/length"] - 1

    def per_agent(x: np.ndarray, dtype) -> np.ndarray:
        return np.repeat(x[:, None], n, 1).astype(dtype)[None]

    def at_ends(final: np.ndarray) -> np.ndarray:
        out = np.zeros((T, *final.shape[1:]), dtype=np.float32)
        out[last] = final
        return out[None]

    final_state = arrays.get("episodes/final_state")
    if final_state is None:
        final_state = arrays["episodes/final_obs"].reshape(len(last), -1)
    extra = {}
    if "episodes/won" in arrays:
        won = np.zeros(T, dtype=np.float32)
        won[last] = arrays["episodes/won"]
        extra["won"] = won[None]
    return {
        "observations": obs.astype(np.float32)[None],
        "actions": arrays["steps/actions"].astype(np.int32)[None],
        "rewards": per_agent(arrays["steps/rewards"], np.float32),
        "terminals": per_agent(arrays["steps/terminated"], np.float32),
        "truncations": per_agent(arrays["steps/truncated"], np.float32),
        "infos": {
            "legals": arrays["steps/avail"].astype(np.float32)[None],
            "state": state.astype(np.float32)[None],
            "final_observations": at_ends(arrays["episodes/final_obs"]),
            "final_state": at_ends(final_state),
            "final_legals": at_ends(arrays["episodes/final_avail"]),
            **extra,
        },
    }


def _tree_map(fn, tree):
    return {k: _tree_map(fn, v) if isinstance(v, Mapping) else fn(v) for k, v in tree.items()}


def export(dataset: Path, out_dir: Path, *, vault_name: str, uid: str, overwrite: bool = False,
           reporter: Reporter | None = None) -> Path:
    """Write the dataset file `dataset` as the vault `<out_dir>/<vault_name>/<uid>/`."""
    ts = _tensorstore()
    reporter = reporter or Reporter()
    final = Path(out_dir) / vault_name / uid
    if final.exists() and not overwrite:
        raise DatasetError(f"{final} already exists (use --overwrite to replace it)")
    card, arrays = read_arrays(dataset)
    experience = _experience(arrays)
    staging = final.parent / f".{uid}.tmp-{os.getpid()}"
    staging.mkdir(parents=True, exist_ok=False)
    try:
        leaves = _leaves(experience)
        with reporter.task(f"export {dataset.name} -> {FORMAT}", total=len(leaves)) as task:
            for name, arr in leaves.items():
                spec = _spec(staging, name)
                spec["metadata"]["compressor"] = dict(COMPRESSION)
                store = ts.open(spec, shape=(arr.shape[0], TIME_AXIS_MAX_LENGTH, *arr.shape[2:]),
                                dtype=arr.dtype.name, create=True).result()
                store[:, :arr.shape[1]].write(arr).result()
                task.advance()
            index = ts.open(_spec(staging, INDEX), dtype=ts.int32, shape=(1,),
                            create=True).result()
            index.write(np.array([arrays["steps/rewards"].shape[0]], np.int32)).result()
        write_json(staging / METADATA_FILE, {
            "version": VERSION,
            "structure_shape": _tree_map(lambda x: str(tuple(x.shape)), experience),
            "structure_dtype": _tree_map(lambda x: x.dtype.name, experience),
            "marlbench": {"env": card.get("env"), "dataset": Path(dataset).stem,
                          "schema_version": card.get("schema_version"),
                          "sha256": card.get("sha256"), "quality": card.get("quality"),
                          "episodes": card.get("episodes"), "steps": card.get("steps")},
        })
        publish_dir(staging, final, overwrite)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return final
