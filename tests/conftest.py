"""Shared fixtures: tiny real datasets built once per session, isolated result folders."""

from __future__ import annotations

import pytest
import torch

from marlbench.catalog import collect_dataset
from marlbench.plugins import registry

torch.set_num_threads(1)  # tests run many tiny models; threads only add overhead


@pytest.fixture(scope="session")
def reg():
    return registry()


@pytest.fixture(scope="session")
def datasets_root(tmp_path_factory):
    return tmp_path_factory.mktemp("datasets")


@pytest.fixture(scope="session")
def tiny_expert(reg, datasets_root):
    """A 4-episode expert dataset of rware-tiny-2ag, collected for real."""
    spec = reg.environment("rware-tiny-2ag")
    path, card = collect_dataset(reg, spec, "expert", episodes=4, seed=0, root=datasets_root)
    return path


@pytest.fixture(autouse=True)
def isolated_roots(monkeypatch, tmp_path, datasets_root):
    """CLI commands in tests write under tmp folders, never the repo's datasets/ results/."""
    monkeypatch.setenv("MARLBENCH_DATASETS", str(datasets_root))
    monkeypatch.setenv("MARLBENCH_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("COLUMNS", "200")  # rich tables: keep names on one line
