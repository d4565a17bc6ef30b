"""The command line: the main job on a tiny budget, and one clear line for each bad input."""

from __future__ import annotations

import json
import shutil

import h5py
from click.testing import CliRunner

from marlbench.cli import main

TINY = ["--steps", "20", "--eval-episodes", "2", "--eval-parallel", "2", "--quiet"]


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_run_collects_missing_dataset_trains_evaluates(tmp_path, datasets_root):
    res = invoke("run", "--algo", "bc", "--env", "rware-tiny-2ag", "--dataset", "poor",
                 "--episodes", "2", "--results", str(tmp_path / "r"), *TINY)
    assert res.exit_code == 0, res.output
    assert "bc on rware-tiny-2ag/poor-2ep seed 0: return" in res.output
    assert (datasets_root / "rware-tiny-2ag" / "poor-2ep.h5").exists()
    run = json.loads((tmp_path / "r/rware-tiny-2ag/poor-2ep/bc/seed-0/run.json").read_text())
    assert run["status"] == "complete" and run["eval"]["episodes"] == 2


def test_unknown_names_exit_nonzero_with_suggestion():
    res = invoke("run", "--algo", "bcx", "--env", "rware-tiny-2ag", *TINY)
    assert res.exit_code == 1 and "unknown algorithm 'bcx'. Did you mean 'bc'" in res.output
    res = invoke("run", "--algo", "bc", "--env", "rware-tiny-3agg", *TINY)
    assert res.exit_code == 1 and "Did you mean" in res.output
    res = invoke("run", "--algo", "bc", "--env", "rware-tiny-2ag", "--dataset", "expret", *TINY)
    assert res.exit_code == 1 and "Did you mean 'expert'" in res.output


def test_bad_set_options_exit_before_any_work(tmp_path, datasets_root):
    res = invoke("run", "--algo", "bc", "--env", "rware-tiny-2ag", "--set", "hiden=3", *TINY)
    assert res.exit_code == 1 and "Did you mean 'hidden'" in res.output
    res = invoke("run", "--algo", "bc", "--env", "rware-tiny-2ag", "--set", "lr=fast", *TINY)
    assert res.exit_code == 1 and "lr expects float" in res.output
    res = invoke("run", "--algo", "bc", "--env", "rware-tiny-2ag", "--set", "layers=0", *TINY)
    assert res.exit_code == 1 and "layers must be > 0" in res.output


def test_bad_dataset_files_exit_cleanly_and_leave_no_results(tmp_path, tiny_expert):
    bad = tmp_path / "bad.h5"
    shutil.copy(tiny_expert, bad)
    with h5py.File(bad, "r+") as f:
        f["steps/actions"][0] = [4, 4]
    res = invoke("run", "--algo", "bc", "--env", "rware-tiny-2ag", "--dataset", str(bad),
                 "--results", str(tmp_path / "r"), *TINY)
    assert res.exit_code == 1 and "fails its checksum" in res.output
    res = invoke("run", "--algo", "bc", "--env", "rware-small-2ag", "--dataset",
                 str(tiny_expert), "--results", str(tmp_path / "r"), *TINY)
    assert res.exit_code == 1 and "made for env 'rware-tiny-2ag', not 'rware-small-2ag'" in (
        res.output)
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("run.json"))


def test_datasets_commands(tiny_expert, tmp_path):
    res = invoke("datasets", "list")
    assert res.exit_code == 0 and "rware-tiny-2ag" in res.output
    res = invoke("datasets", "info", "rware-tiny-2ag/expert-4ep")
    assert res.exit_code == 0 and "sha256" in res.output and "return_mean" in res.output
    assert invoke("datasets", "verify", str(tiny_expert)).exit_code == 0
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    res = invoke("datasets", "verify", str(junk))
    assert res.exit_code == 1 and "corrupt or truncated" in res.output


def test_plugins_and_options_list_builtins():
    res = invoke("plugins")
    assert res.exit_code == 0 and "bc" in res.output and "rware-tiny-2ag" in res.output
    res = invoke("options", "bc")
    assert res.exit_code == 0 and "hidden" in res.output and "128" in res.output
