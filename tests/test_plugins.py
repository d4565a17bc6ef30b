"""Plugin host: entry-point discovery, attribution, failures that do not take others down."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from marlbench.api import AlgorithmSpec, hookimpl
from marlbench.errors import UnknownNameError
from marlbench.plugins import build_registry

REPO = Path(__file__).resolve().parent.parent


def test_builtins_register_through_entry_points(reg):
    assert "bc" in reg.algorithms
    spec, origin = reg.algorithms["bc"]
    assert origin.builtin and origin.plugin == "bc"
    assert {f"rware-{s}-{n}ag" for s in ("tiny", "small") for n in (2, 4, 6)} <= set(
        reg.environments)
    assert reg.environments["rware-tiny-2ag"][1].plugin == "rware"
    assert set(reg.recipes_for(reg.environment("rware-tiny-2ag"))) >= {
        "expert", "medium", "poor", "random"}


def test_unknown_names_suggest_the_closest(reg):
    with pytest.raises(UnknownNameError, match="Did you mean 'bc'"):
        reg.algorithm("bcc")
    with pytest.raises(UnknownNameError, match="rware-tiny-2ag"):
        reg.environment("rware-tiny-2a")


def _fake_distribution(root: Path, name: str, entry_points: str, modules: dict[str, str]):
    """Lay out an installed distribution (dist-info + modules) under `root`."""
    info = root / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    for mod, src in modules.items():
        (root / f"{mod}.py").write_text(textwrap.dedent(src))


def test_broken_plugin_is_reported_and_others_still_load(tmp_path, monkeypatch):
    _fake_distribution(tmp_path, "broken-plugin", """
        [marlbench]
        broken = broken_mod
        raising = raising_mod
        """, {
        "broken_mod": "import does_not_exist_anywhere\n",
        "raising_mod": """
            from marlbench.api import hookimpl
            @hookimpl
            def marlbench_algorithms():
                raise RuntimeError("boom")
            """,
    })
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = build_registry()
    errors = {f.plugin: f.error for f in reg.failures}
    assert "does_not_exist_anywhere" in errors["broken"]
    assert "boom" in errors["raising"]
    assert all(f.distribution == "broken-plugin 0.1" for f in reg.failures
               if f.plugin in ("broken", "raising"))
    assert "bc" in reg.algorithms and "rware-tiny-2ag" in reg.environments


def test_duplicate_names_are_reported_not_shadowed():
    from marlbench.algorithms.bc import BC

    dup = types.SimpleNamespace()

    @hookimpl
    def marlbench_algorithms():
        return [AlgorithmSpec(name="bc", cls=BC)]

    dup.marlbench_algorithms = marlbench_algorithms
    reg = build_registry(extra_plugins=[("dup", dup)])
    assert reg.algorithms["bc"][1].builtin  # the built-in keeps its name
    assert any("'bc' from <in-process> clashes with 'bc' from marlbench" in f.error
               and f.plugin == "dup" for f in reg.failures)


def test_installed_example_package_adds_an_algorithm(tmp_path):
    """pip-install examples/marlbench-example-plugin into a folder and list plugins from it."""
    target = tmp_path / "site"
    example = REPO / "examples" / "marlbench-example-plugin"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(example)],
                   check=True, capture_output=True)
    env = {"PYTHONPATH": str(target), "COLUMNS": "200", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "marlbench.cli", "plugins"], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert "linear-bc" in out
    assert "marlbench-example-plugin 0.1.0" in out
    assert "bc (built-in)" in out


def test_unknown_task_of_a_known_family_lists_that_family(reg):
    with pytest.raises(UnknownNameError, match="Available: .*smax-3m.*smax-6h_vs_8z") as e:
        reg.environment("smax-5m_vs_7m")
    assert "rware-" not in str(e.value).split("Available:")[1]
