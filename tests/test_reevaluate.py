"""`marlbench evaluate`: a finished run evaluated again, at its own or other return targets."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from marlbench.cli import main


def _invoke(*args):
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


@pytest.fixture(scope="module")
def madt_run(tmp_path_factory, tiny_expert, datasets_root):
    """A real (tiny) MADT run: trained, evaluated and saved by `marlbench run`."""
    root = tmp_path_factory.mktemp("results")
    _invoke("run", "--algo", "madt", "--env", "rware-tiny-2ag", "--dataset", "expert-4ep",
            "--steps", "20", "--eval-episodes", "3", "--eval-parallel", "2", "--quiet",
            "--set", "dim=16", "--set", "context=8", "--results", root,
            "--datasets", datasets_root)
    return root / "rware-tiny-2ag/expert-4ep/madt/seed-0"


def _files(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_own_settings_reproduce_the_recorded_evaluation_and_write_nothing(madt_run, tmp_path):
    before = _files(madt_run)
    _invoke("evaluate", madt_run, "--json", tmp_path / "rows.json", "-q")
    [row] = json.loads((tmp_path / "rows.json").read_text())
    recorded = json.loads((madt_run / "run.json").read_text())["eval"]
    assert row["actions"] == recorded["actions"] == "sampled"
    assert row["target_return"] == row["recorded_target_return"] is not None
    assert row["evaluated_by"] == row["code_commit"]  # trained and evaluated by this code
    drop = ("seconds", "actions")
    assert ({k: v for k, v in row["eval"].items() if k not in drop}
            == {k: v for k, v in recorded.items() if k not in drop})
    assert _files(madt_run) == before


def test_targets_reach_the_policy(madt_run, tmp_path, reg, monkeypatch):
    cls = reg.algorithm("madt").cls
    original, seen = cls.policy, []

    def spy(self, *args, **kwargs):
        seen.append(self.target_return)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "policy", spy)
    res = _invoke("evaluate", madt_run, "--target-return", "0.5,3", "--eval-episodes", "1",
                  "--json", tmp_path / "rows.json", "-q")
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert seen == [0.5, 3.0]
    assert [r["target_return"] for r in rows] == [0.5, 3.0]
    assert all(r["eval"]["episodes"] == 1 for r in rows)
    assert "0.5" in res.output and "3" in res.output


def test_a_folder_of_seeds_evaluates_each(madt_run, tmp_path):
    algo_dir = tmp_path / "madt"
    for seed in (0, 1):
        shutil.copytree(madt_run, algo_dir / f"seed-{seed}")
    (algo_dir / "seed-2").mkdir()  # unfinished: skipped
    _invoke("evaluate", algo_dir, "--eval-episodes", "1", "--json", tmp_path / "rows.json",
            "-q")
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["run"].rsplit("/", 1)[1] for r in rows] == ["seed-0", "seed-1"]
