"""Importers of published datasets and the vault export, on small files written here in each
format's published layout (flashbax vault via tensorstore, AlberDICE's PyMARL .npy dump, MADT's
torch.save episodes)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from marlbench.cli import main
from marlbench.data import importers
from marlbench.data.schema import read_arrays, read_card
from marlbench.errors import DatasetError, MarlbenchError

N, OD, A, LIMIT = 2, 71, 5, 500  # rware-tiny-2ag


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def one_line_error(res, *needles):
    assert res.exit_code == 1, res.output
    # (a plugin another package failed to load is warned about on its own line; not ours)
    lines = [x for x in res.output.splitlines()
             if x.strip() and not x.startswith("warning: plugin")]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.output
    for needle in needles:
        assert needle in res.output, res.output


def nothing_written(root):
    return not root.exists() or not any(p.is_file() for p in root.rglob("*"))


def synthetic_episodes(lengths, seed=0, obs_dim=OD, n=N, n_actions=A):
    """Random steps (rware-tiny-2ag's shapes by default); every taken action is available."""
    rng = np.random.default_rng(seed)
    eps = []
    for T in lengths:
        avail = rng.random((T, n, n_actions)) < 0.7
        avail[..., 0] = True
        actions = np.where(rng.random((T, n)) < 0.5, 0, rng.integers(0, n_actions, (T, n)))
        actions = np.where(np.take_along_axis(avail, actions[..., None], -1)[..., 0], actions, 0)
        eps.append({"obs": rng.standard_normal((T, n, obs_dim)).astype(np.float32),
                    "avail": avail, "actions": actions,
                    "rewards": rng.integers(0, 2, T).astype(np.float32)})
    return eps


# ----------------------------------------------------------------------------------------------
# OG-MARL vault, written the way flashbax's Vault writes it
# ----------------------------------------------------------------------------------------------


def write_flashbax_vault(rel_dir, vault_name, uid, experience, time_axis=None):
    """flashbax Vault 1.2 on disk: metadata.json + one zarr array per leaf in an OCDBT store,
    time axis 10e12 long, gzip 5, and `vault_index` (int32, shape (1,))."""
    ts = pytest.importorskip("tensorstore")
    base = rel_dir / vault_name / uid
    base.mkdir(parents=True)

    def spec(name):
        return {"driver": "zarr", "kvstore": {"driver": "ocdbt", "base": f"file://{base}",
                                              "path": name}, "metadata": {}}

    def leaves(tree, prefix=""):
        for k in sorted(tree):
            if isinstance(tree[k], dict):
                yield from leaves(tree[k], f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}.", tree[k]

    T = None
    for name, arr in leaves(experience):
        s = spec(name)
        s["metadata"]["compressor"] = {"id": "gzip", "level": 5}
        length = (time_axis or {}).get(name, int(10e12))
        store = ts.open(s, shape=(arr.shape[0], length, *arr.shape[2:]), dtype=arr.dtype.name,
                        create=True).result()
        n = min(arr.shape[1], length)
        store[:, :n].write(arr[:, :n]).result()
        T = arr.shape[1] if name == "observations." else T
    index = ts.open(spec("vault_index"), dtype=ts.int32, shape=(1,), create=True).result()
    index.write(T).result()

    def tree_map(fn, tree):
        return {k: tree_map(fn, v) if isinstance(v, dict) else fn(v) for k, v in tree.items()}

    (base / "metadata.json").write_text(json.dumps({
        "version": 1.2, "structure_shape": tree_map(lambda x: str(x.shape), experience),
        "structure_dtype": tree_map(lambda x: x.dtype.name, experience)}))
    return base


def vault_experience(eps, ends, trailing=0, state_dim=10, obs_dim=OD):
    """OG-MARL's tree for `eps`; ends[k] in {"terminal", "truncation"} flags the last step."""
    parts = eps + synthetic_episodes([trailing], seed=9, obs_dim=obs_dim) if trailing else eps
    T = sum(len(e["rewards"]) for e in parts)
    cat = {k: np.concatenate([e[k] for e in parts]) for k in parts[0]}
    term, trunc = np.zeros((T, N), np.float32), np.zeros((T, N), np.float32)
    last = np.cumsum([len(e["rewards"]) for e in eps]) - 1
    for k, end in zip(last, ends):
        (term if end == "terminal" else trunc)[k] = 1.0
    rng = np.random.default_rng(5)
    return {
        "observations": cat["obs"][None],
        "actions": cat["actions"].astype(np.int32)[None],
        "rewards": np.repeat(cat["rewards"][:, None], N, 1)[None],  # shared team reward
        "terminals": term[None], "truncations": trunc[None],
        "infos": {"legals": cat["avail"].astype(np.float32)[None],
                  "state": rng.standard_normal((1, T, state_dim)).astype(np.float32)},
    }


def test_vault_import_keeps_steps_splits_episodes_and_fills_the_card(reg, tmp_path):
    eps = synthetic_episodes([9, LIMIT, 14])
    exp = vault_experience(eps, ["terminal", "terminal", "truncation"], trailing=5)
    uid_dir = write_flashbax_vault(tmp_path / "vaults", "tiny-2ag.vlt", "Expert", exp)
    assert (uid_dir / "manifest.ocdbt").is_file() and (uid_dir / "d").is_dir()
    assert not list(uid_dir.rglob(".zarray"))  # only tensorstore can read this layout

    spec = reg.environment("rware-tiny-2ag")
    source = importers.open_source("ogmarl-vault", uid_dir.parent)  # the .vlt with one uid
    card = importers.write_dataset(source, spec, tmp_path / "d.h5", quality="expert")
    _, arrays = read_arrays(tmp_path / "d.h5")

    assert np.array_equal(arrays["episodes/length"], [9, LIMIT, 14])
    for key, src in (("obs", "obs"), ("avail", "avail"), ("actions", "actions"),
                     ("rewards", "rewards")):
        assert np.array_equal(arrays[f"steps/{key}"], np.concatenate([e[src] for e in eps]))
    # a terminal at the time limit (AlberDICE's warehouse marks it so) is a truncation
    ends = arrays["episodes/start"] + arrays["episodes/length"] - 1
    assert arrays["steps/terminated"][ends].tolist() == [True, False, False]
    assert arrays["steps/truncated"][ends].tolist() == [False, True, True]
    assert arrays["steps/terminated"].sum() == 1 and arrays["steps/truncated"].sum() == 2
    # no final obs in the vault: the last one stands in, and the card says so
    assert np.array_equal(arrays["episodes/final_obs"][0], eps[0]["obs"][-1])
    assert "3 episodes" in card["import_notes"]["final_obs"]
    assert "5 steps" in card["import_notes"]["dropped"]

    returns = [e["rewards"].sum() for e in eps]
    assert card["return_mean"] == pytest.approx(np.mean(returns))
    assert card["return_max"] == pytest.approx(np.max(returns))
    assert card["source_format"] == "ogmarl-vault" and card["quality"] == "expert"
    meta_digest = hashlib.sha256((uid_dir / "metadata.json").read_bytes()).hexdigest()
    assert card["source_file_sha256"]["metadata.json"] == meta_digest
    assert card["source_files"] == sum(1 for p in uid_dir.rglob("*") if p.is_file())
    assert card["env_compatibility"]["checked (source, env)"]["obs_dim"] == [OD, OD]
    assert "dropped" in card["import_notes"]["state"]  # RWARE's state is the concat obs
    assert read_card(tmp_path / "d.h5")["source_sha256"] == card["source_sha256"]


def test_vault_bad_input_one_line_nothing_written(tmp_path):
    eps = synthetic_episodes([6, 8])
    exp = vault_experience(eps, ["terminal", "terminal"])
    short = write_flashbax_vault(tmp_path / "v", "a.vlt", "x", exp, time_axis={"rewards.": 10})
    root = tmp_path / "ds"
    res = invoke("datasets", "import", str(short), "--format", "ogmarl-vault", "--env",
                 "rware-tiny-2ag", "--datasets", str(root), "-q")
    one_line_error(res, "arrays disagree in length", "vault_index says 14", "rewards. 10")
    assert nothing_written(root)

    wide = vault_experience(synthetic_episodes([6], obs_dim=80), ["terminal"], obs_dim=80)
    wide_dir = write_flashbax_vault(tmp_path / "v", "b.vlt", "x", wide)
    res = invoke("datasets", "import", str(wide_dir), "--format", "ogmarl-vault", "--env",
                 "rware-tiny-2ag", "--datasets", str(root), "-q")
    one_line_error(res, "does not fit env 'rware-tiny-2ag' (source vs env): obs_dim 80 vs 71")
    assert nothing_written(root)

    res = invoke("datasets", "import", str(wide_dir), "--format", "ogmarl-valt", "--env",
                 "rware-tiny-2ag", "--datasets", str(root), "-q")
    one_line_error(res, "unknown dataset format 'ogmarl-valt'", "Did you mean 'ogmarl-vault'")
    assert nothing_written(root)


def test_export_then_import_gives_identical_arrays(tiny_expert, tmp_path):
    ts = pytest.importorskip("tensorstore")
    res = invoke("datasets", "export", str(tiny_expert), "--format", "ogmarl-vault", "--out",
                 str(tmp_path / "vaults"), "-q")
    assert res.exit_code == 0, res.output
    uid_dir = tmp_path / "vaults" / "rware-tiny-2ag.vlt" / "expert-4ep"
    card, original = read_arrays(tiny_expert)
    T, n, obs_dim = original["steps/obs"].shape
    meta = json.loads((uid_dir / "metadata.json").read_text())
    assert meta["version"] == 1.2
    assert meta["structure_shape"]["observations"] == f"(1, {T}, {n}, {obs_dim})"
    assert meta["structure_dtype"]["infos"]["legals"] == "float32"
    assert (uid_dir / "manifest.ocdbt").is_file() and not list(uid_dir.rglob(".zarray"))
    # readable with flashbax's own spec, time axis as flashbax creates it
    obs = ts.open({"driver": "zarr", "kvstore": {"driver": "ocdbt", "base": f"file://{uid_dir}",
                                                 "path": "observations."}}).result()
    assert obs.shape[1] == int(10e12)
    assert np.array_equal(obs[:, :T].read().result()[0], original["steps/obs"])

    root = tmp_path / "ds"
    res = invoke("datasets", "import", str(uid_dir), "--format", "ogmarl-vault", "--env",
                 "rware-tiny-2ag", "--datasets", str(root), "--name", "back", "-q")
    assert res.exit_code == 0, res.output
    back_card, back = read_arrays(root / "rware-tiny-2ag" / "back.h5")
    assert sorted(back) == sorted(original)
    for key in original:
        assert np.array_equal(back[key], original[key]), key
    assert back_card["sha256"] == card["sha256"]  # content digest: identical arrays
    assert back_card["reference_returns"] == card["reference_returns"]

    res = invoke("datasets", "export", str(tiny_expert), "--format", "ogmarl-vault", "--out",
                 str(tmp_path / "vaults"), "-q")
    one_line_error(res, "already exists")
    res = invoke("datasets", "export", str(tiny_expert), "--format", "pymarl-npy", "--out",
                 str(tmp_path / "x"), "-q")
    one_line_error(res, "unknown export format 'pymarl-npy'")
    assert not (tmp_path / "x").exists()


def test_vault_needs_tensorstore_and_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorstore", None)  # import tensorstore -> ImportError
    with pytest.raises(MarlbenchError, match=r"pip install 'marlbench\[vault\]'"):
        importers.open_source("ogmarl-vault", tmp_path)


def test_cli_help_and_importers_load_without_tensorstore():
    code = ("import sys; sys.modules['tensorstore'] = None\n"
            "from marlbench.cli import main\n"
            "import marlbench.data.importers\n"
            "try:\n    main(['datasets', 'import', '--help'])\n"
            "except SystemExit as e:\n    assert e.code == 0, e.code\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "COLUMNS": "100"})
    assert out.returncode == 0, out.stderr
    assert "--allow-pickle" in out.stdout


# ----------------------------------------------------------------------------------------------
# AlberDICE / PyMARL episode-batch dump
# ----------------------------------------------------------------------------------------------


def write_pymarl_dump(folder, eps, terminal, buffer_size, state_dim=10, limit=LIMIT):
    """AlberDICE's ReplayBuffer.save: <key>.npy per scheme key ([E, limit+1, ...], dtypes of
    pymarl's scheme) and meta.json; row T of an episode holds the final obs/state/avail.
    Returns the final observations and the arrays written."""
    folder.mkdir(parents=True)
    E, L1 = buffer_size, limit + 1
    _, n, od = eps[0]["obs"].shape
    na = eps[0]["avail"].shape[-1]
    rng = np.random.default_rng(3)
    a = {"obs": np.zeros((E, L1, n, od), np.float32), "state": np.zeros((E, L1, state_dim),
                                                                        np.float32),
         "actions": np.zeros((E, L1, n, 1), np.int64),
         "avail_actions": np.zeros((E, L1, n, na), np.int32),
         "reward": np.zeros((E, L1, 1), np.float32), "terminated": np.zeros((E, L1, 1), np.uint8),
         "filled": np.zeros((E, L1, 1), np.int64)}
    finals = []
    for e, (ep, term) in enumerate(zip(eps, terminal)):
        T = len(ep["rewards"])
        final_obs = rng.standard_normal((n, od)).astype(np.float32)
        finals.append(final_obs)
        a["obs"][e, :T], a["obs"][e, T] = ep["obs"], final_obs
        a["state"][e, :T + 1] = rng.standard_normal((T + 1, state_dim))
        a["actions"][e, :T, :, 0] = ep["actions"]
        a["avail_actions"][e, :T], a["avail_actions"][e, T] = ep["avail"], 1
        a["reward"][e, :T, 0] = ep["rewards"]
        a["terminated"][e, T - 1, 0] = term
        a["filled"][e, :T + 1, 0] = 1
    a["actions_onehot"] = np.eye(na, dtype=np.float32)[a["actions"][..., 0]]
    for k, v in a.items():
        np.save(folder / f"{k}.npy", v)
    (folder / "meta.json").write_text(json.dumps(
        {"buffer_index": 0, "episodes_in_buffer": len(eps), "buffer_size": buffer_size}))
    return finals, a


def test_pymarl_dump_import_uses_filled_rows_and_final_row(reg, tmp_path):
    eps = synthetic_episodes([LIMIT, 20], seed=1)
    folder = tmp_path / "rware-tiny-2ag-easy-v4-expert"
    finals, _ = write_pymarl_dump(folder, eps, terminal=[1, 1], buffer_size=3)
    spec = reg.environment("rware-tiny-2ag")
    source = importers.open_source("pymarl-npy", folder)
    assert importers.default_name("pymarl-npy", folder) == "pymarl-rware-tiny-2ag-easy-v4-expert"
    card = importers.write_dataset(source, spec, tmp_path / "p.h5")
    _, arrays = read_arrays(tmp_path / "p.h5")
    assert card["episodes"] == 2 and arrays["episodes/length"].tolist() == [LIMIT, 20]
    assert np.array_equal(arrays["steps/actions"], np.concatenate([e["actions"] for e in eps]))
    assert np.array_equal(arrays["episodes/final_obs"], np.stack(finals))
    ends = arrays["episodes/start"] + arrays["episodes/length"] - 1
    assert arrays["steps/truncated"][ends].tolist() == [True, False]  # 500 = the time limit
    assert arrays["steps/terminated"][ends].tolist() == [False, True]
    assert card["source_files"] == 9  # 8 arrays + meta.json
    assert "final_obs" not in card["import_notes"]


def test_pymarl_dump_keeps_the_state_of_an_env_that_has_one(reg, tmp_path):
    """SMAX 3m shapes (own global state): state and final state come from state.npy; PyMARL's
    own convention (terminated false at the limit) ends up truncated too."""
    spec = reg.environment("smax-3m")
    info = spec.info
    eps = synthetic_episodes([info.episode_limit, 10], seed=5, obs_dim=info.obs_dim,
                             n=info.n_agents, n_actions=info.n_actions)
    _, a = write_pymarl_dump(tmp_path / "d", eps, terminal=[0, 1], buffer_size=2,
                             state_dim=info.state_dim, limit=info.episode_limit)
    importers.write_dataset(importers.open_source("pymarl-npy", tmp_path / "d"), spec,
                            tmp_path / "s.h5")
    _, b = read_arrays(tmp_path / "s.h5")
    T0 = info.episode_limit
    assert np.array_equal(b["steps/state"], np.concatenate([a["state"][0, :T0],
                                                            a["state"][1, :10]]))
    assert np.array_equal(b["episodes/final_state"], a["state"][[0, 1], [T0, 10]])
    assert b["steps/truncated"][T0 - 1] and b["steps/terminated"][-1]
    assert b["steps/terminated"].sum() == 1 and b["steps/truncated"].sum() == 1


def test_pymarl_bad_dumps_one_line_nothing_written(tmp_path):
    eps = synthetic_episodes([12, 15], seed=2)
    folder = tmp_path / "dump"
    write_pymarl_dump(folder, eps, terminal=[1, 1], buffer_size=2)
    (folder / "filled.npy").unlink()
    root = tmp_path / "ds"
    res = invoke("datasets", "import", str(folder), "--format", "pymarl-npy", "--env",
                 "rware-tiny-2ag", "--datasets", str(root), "-q")
    one_line_error(res, "missing filled.npy")
    assert nothing_written(root)

    # a fault found while writing (episode 1 takes an unavailable action): no file is left
    eps[1]["avail"][3, 1, :] = [True, False, False, False, False]
    eps[1]["actions"][3, 1] = 4
    folder2 = tmp_path / "dump2"
    write_pymarl_dump(folder2, eps, terminal=[1, 1], buffer_size=2)
    res = invoke("datasets", "import", str(folder2), "--format", "pymarl-npy", "--env",
                 "rware-tiny-2ag", "--datasets", str(root), "-q")
    one_line_error(res, "episode 1: agent 1 takes action 4 at step 3")
    assert nothing_written(root)


# ----------------------------------------------------------------------------------------------
# MADT episodes (torch.save pickles)
# ----------------------------------------------------------------------------------------------


def write_madt_episodes(folder, eps, state_dim=12):
    """MADT's offline files: one torch.save per episode, a list per agent of
    [g, o, a, r, d, ava] steps (plain Python lists, as its buffer's insert builds them)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(4)
    for k, ep in enumerate(eps):
        T = len(ep["rewards"])
        g = rng.standard_normal((T, N, state_dim))
        episode = [[[g[t, i].tolist(), ep["obs"][t, i].tolist(), [int(ep["actions"][t, i])],
                     [float(ep["rewards"][t])], t == T - 1, ep["avail"][t, i].astype(int).tolist()]
                    for t in range(T)] for i in range(N)]
        torch.save(episode, folder / f"{k}.pkl")


def test_madt_needs_allow_pickle_then_imports(reg, tmp_path):
    eps = synthetic_episodes([7, 11], seed=3)
    folder = tmp_path / "5m_vs_6m" / "good"
    write_madt_episodes(folder, eps)
    root = tmp_path / "ds"
    res = invoke("datasets", "import", str(folder), "--format", "madt", "--env",
                 "rware-tiny-2ag", "--datasets", str(root), "-q")
    one_line_error(res, "pickles", "--allow-pickle")
    assert nothing_written(root)

    assert importers.default_name("madt", folder) == "madt-5m_vs_6m-good"
    with pytest.warns(UserWarning, match="arbitrary code"):
        source = importers.open_source("madt", folder, allow_pickle=True)
    card = importers.write_dataset(source, reg.environment("rware-tiny-2ag"), tmp_path / "m.h5")
    _, arrays = read_arrays(tmp_path / "m.h5")
    assert card["source_format"] == "madt" and card["source_files"] == 2
    assert np.allclose(arrays["steps/obs"], np.concatenate([e["obs"] for e in eps]))
    assert np.array_equal(arrays["steps/actions"], np.concatenate([e["actions"] for e in eps]))
    assert arrays["steps/terminated"].sum() == 2  # both ended before the limit, all done
    assert "12 dims) dropped" in card["import_notes"]["state"]  # g, 12 dims here


def test_madt_malformed_episode_is_one_line(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    torch.save({"not": "a list"}, folder / "0.pkl")
    with pytest.raises(DatasetError, match="expected a list per agent"), \
            pytest.warns(UserWarning, match="arbitrary code"):
        importers.open_source("madt", folder, allow_pickle=True)


def test_vault_round_trip_keeps_state_and_wins(reg, tmp_path):
    """An env with its own global state and a win flag (SMAX 3m shapes): both survive."""
    from marlbench.data.importers import ogmarl_vault
    from marlbench.data.schema import DatasetWriter

    spec = reg.environment("smax-3m")
    info = spec.info
    rng = np.random.default_rng(7)
    writer = DatasetWriter(tmp_path / "s.h5", info, state_is_concat_obs=False, has_win_flag=True)
    for k, T in enumerate([5, info.episode_limit, 9]):
        n, na = info.n_agents, info.n_actions
        writer.add_episode({
            "obs": rng.standard_normal((T, n, info.obs_dim)),
            "state": rng.standard_normal((T, info.state_dim)),
            "avail": np.ones((T, n, na), bool), "actions": rng.integers(0, na, (T, n)),
            "rewards": rng.random(T), "terminated": np.arange(T) == T - 1 if k != 1 else
            np.zeros(T, bool), "truncated": (np.arange(T) == T - 1) & (k == 1)},
            {"obs": rng.standard_normal((n, info.obs_dim)),
             "state": rng.standard_normal(info.state_dim), "avail": rng.random((n, na)) < 0.5},
            won=k == 2)
    card = writer.commit({"quality": "test"})
    uid_dir = ogmarl_vault.export(tmp_path / "s.h5", tmp_path / "v", vault_name="3m.vlt",
                                  uid="test")
    back = importers.write_dataset(importers.open_source("ogmarl-vault", uid_dir), spec,
                                   tmp_path / "b.h5")
    _, a = read_arrays(tmp_path / "s.h5")
    _, b = read_arrays(tmp_path / "b.h5")
    assert sorted(a) == sorted(b) and "steps/state" in b and b["episodes/won"].tolist() == [
        False, False, True]
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert back["sha256"] == card["sha256"] and back["win_rate"] == pytest.approx(1 / 3)

    smac = reg.environment("smac-3m")
    if smac.info.obs_dim == 0:  # SC2 not installed: the adapter knows no shapes
        with pytest.raises(DatasetError, match="reports no shapes here"):
            importers.common.check_dims(importers.open_source("ogmarl-vault", uid_dir), smac)
