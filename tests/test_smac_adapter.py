"""The real-SMAC adapter: StarCraft II cannot run here, so these check that every way of not
having it is reported precisely, including PyPI's unrelated `smac` (SMAC3)."""

from __future__ import annotations

import sys
import textwrap

import pytest

from marlbench.environments.smac import PAPER_MAPS
from marlbench.environments.smac.env import SmacUnavailable, smac_problem
from marlbench.errors import UnknownNameError
from marlbench.runner import RunRequest, run


def _fake_smac(root, summary: str, version: str, with_env: bool) -> None:
    """An installed distribution called `smac` (metadata + package) under `root`."""
    pkg = root / "smac"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    if with_env:
        (pkg / "env").mkdir()
        (pkg / "env" / "__init__.py").write_text("")
    info = root / f"smac-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(textwrap.dedent(f"""\
        Metadata-Version: 2.1
        Name: smac
        Version: {version}
        Summary: {summary}
        """))


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "smac" or m.startswith("smac.")]:
        monkeypatch.delitem(sys.modules, name)
    yield tmp_path
    for name in [m for m in sys.modules if m == "smac" or m.startswith("smac.")]:
        del sys.modules[name]


def test_paper_maps_are_tasks(reg):
    for name in PAPER_MAPS:
        spec = reg.environment(f"smac-{name}")
        assert spec.has_win_flag and "paper task" in spec.description
    assert reg.environment("smac-2c_vs_64zg").info.n_actions == 6 + 64
    with pytest.raises(UnknownNameError, match="smac-corridor"):
        reg.environment("smac-coridor")


@pytest.mark.skipif(smac_problem() is None, reason="a real SMAC is installed here")
def test_without_smac_the_task_says_what_to_install(reg, tmp_path):
    with pytest.raises(SmacUnavailable, match="oxwhirl/smac.*not `pip install smac`"):
        reg.environment("smac-5m_vs_6m").factory()
    with pytest.raises(SmacUnavailable, match="need the real SMAC"):  # before any other work
        run(RunRequest(algo="bc", env="smac-5m_vs_6m", results_root=tmp_path / "res",
                       datasets_root=tmp_path / "ds"))
    assert not (tmp_path / "res").exists() and not (tmp_path / "ds").exists()


def test_smac3_under_the_same_name_is_recognised(site):
    _fake_smac(site, "SMAC3, a Python implementation of 'Sequential Model-based Algorithm "
                     "Configuration'.", "2.4.1", with_env=False)
    problem = smac_problem()
    assert "smac` 2.4.1 is SMAC3" in problem and "hyperparameter" in problem


def test_smac_without_starcraft_asks_for_sc2path(site, monkeypatch):
    _fake_smac(site, "SMAC - StarCraft Multi-Agent Challenge.", "1.0.0", with_env=True)
    monkeypatch.delenv("SC2PATH", raising=False)
    assert "set SC2PATH" in smac_problem()
    monkeypatch.setenv("SC2PATH", str(site / "no-game-here"))
    assert "is not a folder" in smac_problem()
    monkeypatch.setenv("SC2PATH", str(site))
    assert smac_problem() is None
