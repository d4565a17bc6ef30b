"""Plugin host: entry-point discovery, attribution, failures that do not take others down."""

from __future__ import annotations

import dataclasses
import shutil
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


def test_no_algorithm_imports_another():
    """Shared pieces live in marlbench.nn / api; a second stage reaches its first through the
    registry (`AlgorithmSpec.continues`, `Registry.stage_of`)."""
    import ast

    modules = {p.stem for p in (REPO / "algorithms").glob("*.py")} - {"__init__"}
    for path in (REPO / "algorithms").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                parts = name.split(".")
                other = {p for p in parts if p in modules} - {path.stem}
                assert not ("algorithms" in parts and other), f"{path.name} imports {name}"


def test_a_second_stage_is_found_by_the_algorithm_it_continues(reg):
    assert reg.stage_of("mads4").name == "mads4+ft"
    assert reg.stage_of("ids4", scratch=True).name == "ids4+scratch"
    with pytest.raises(Exception, match="no loaded plugin continues runs of 'bc'"):
        reg.stage_of("bc")


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
    # built from a copy: pip leaves build/ and *.egg-info next to the sources it builds
    example = shutil.copytree(REPO / "examples" / "marlbench-example-plugin", tmp_path / "src")
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


# -- name clashes, failures reported once, piped listing ------------------------------------------


def _shadowing_distribution(root: Path) -> None:
    """A third-party package whose entry point reuses the built-in name 'bc', and whose other
    entry point registers an algorithm called 'bc' again."""
    _fake_distribution(root, "shadow-plugin", """
        [marlbench]
        bc = shadow_bc
        shadow = shadow_alg
        """, {
        "shadow_bc": """
            from marlbench.api import hookimpl
            @hookimpl
            def marlbench_algorithms():
                raise AssertionError("a shadowing entry point must not be loaded")
            """,
        "shadow_alg": """
            from marlbench.api import AlgorithmSpec, hookimpl
            from marlbench.algorithms.bc import BC
            @hookimpl
            def marlbench_algorithms():
                return [AlgorithmSpec(name="bc", cls=BC, description="impostor")]
            """,
    })


def test_builtin_names_win_over_third_party_entry_points_found_first(tmp_path, monkeypatch):
    _shadowing_distribution(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # found before the installed marlbench
    reg = build_registry()
    spec, origin = reg.algorithms["bc"]
    assert origin.builtin and spec.description != "impostor"
    errors = [f.error for f in reg.failures if f.distribution == "shadow-plugin 0.1"]
    version = origin.distribution  # "marlbench <version>"
    assert f"entry point 'bc' of shadow-plugin 0.1 clashes with 'bc' of {version}" in errors[0]
    assert f"'bc' from shadow-plugin 0.1 clashes with 'bc' from {version}" in errors[1]
    assert len(errors) == 2


def _broken_distribution(root: Path, name: str) -> None:
    _fake_distribution(root, name, """
        [marlbench]
        broken = broken_mod
        """, {"broken_mod": "import does_not_exist_anywhere\n"})


@pytest.fixture
def fresh_registry():
    """The CLI's process-wide registry rebuilt for this test (and again after it)."""
    from marlbench.plugins import registry

    registry.cache_clear()
    yield
    registry.cache_clear()


def test_a_broken_plugin_is_reported_once_per_command(tmp_path, monkeypatch, fresh_registry):
    from click.testing import CliRunner

    from marlbench.cli import main

    _broken_distribution(tmp_path, "broken-plugin")
    monkeypatch.syspath_prepend(str(tmp_path))
    for argv in (["run", "--algo", "bcx", "--env", "rware-tiny-2ag"], ["options", "bc"],
                 ["plugins"]):
        res = CliRunner().invoke(main, argv)
        assert res.output.count("does_not_exist_anywhere") == 1, res.output


def test_plugins_listing_is_not_cut_when_piped(tmp_path, monkeypatch, fresh_registry):
    from click.testing import CliRunner

    from marlbench.cli import main

    name = "a-third-party-distribution-with-a-long-name"
    _broken_distribution(tmp_path, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("COLUMNS")  # a pipe: no terminal, no width
    res = CliRunner().invoke(main, ["plugins"])
    assert res.exit_code == 0
    assert f"{name} 0.1" in res.stdout  # on one line, not folded at 80 columns
    assert "multi-agent decision transformer: shared GPT over (return-to-go, obs, action) " \
           "tokens" in res.stdout


# -- the plugin contract, checked by the runner --------------------------------------------------


def _contract_breakers():
    from marlbench.algorithms.bc import BC, BCConfig

    class NoSuper(BC):
        def __init__(self, config, env, device, seed):  # forgets super().__init__
            self.cfg = config

    @dataclasses.dataclass
    class NoStepsConfig:
        lr: float = 1e-3

    class NoSteps(BC):
        Config = NoStepsConfig

    class NoLoss(BC):
        def update(self):
            return {"accuracy": 1.0}

    class WrongShape(BC):
        def policy(self, greedy=False, seed=0):
            inner = super().policy(greedy, seed)

            class Flat(type(inner)):
                def act(self, obs, state, avail):
                    return inner.act(obs, state, avail).reshape(-1)  # [B*n], not [B, n]

            flat = Flat.__new__(Flat)
            flat.__dict__ = inner.__dict__
            return flat

    assert BCConfig  # the others inherit BC's config
    algos = {"no-super": NoSuper, "no-steps": NoSteps, "no-loss": NoLoss,
             "wrong-shape": WrongShape}
    plugin = types.SimpleNamespace(marlbench_algorithms=hookimpl(
        lambda: [AlgorithmSpec(name=n, cls=c) for n, c in algos.items()]))
    return build_registry(extra_plugins=[("breakers", plugin)])


@pytest.mark.parametrize("algo, rule", [
    ("no-super", "NoSuper.__init__ of 'no-super' must call super().__init__(config, env, "
                 "device, seed)"),
    ("no-steps", "NoStepsConfig (config of 'no-steps') has no `steps` field"),
    ("no-loss", "NoLoss.update() of 'no-loss' must return a mapping of scalar metrics that "
                "includes 'loss'"),
    ("wrong-shape", "act of 'wrong-shape' must return integer actions of shape [B, n_agents] "
                    "= [1, 2] (marlbench.api.Policy.act); got int64 of shape [2]"),
])
def test_contract_violations_fail_naming_the_contract(algo, rule, tmp_path, datasets_root,
                                                      tiny_expert):
    from marlbench.errors import ContractError
    from marlbench.runner import RunRequest, run

    reg = _contract_breakers()
    steps = None if algo == "no-steps" else 2
    req = RunRequest(algo=algo, env="rware-tiny-2ag", dataset="expert-4ep", steps=steps,
                     eval_episodes=1, eval_parallel=1, results_root=tmp_path / "r",
                     datasets_root=datasets_root)
    with pytest.raises(ContractError) as e:
        run(req, reg=reg)
    assert str(e.value).startswith("plugin contract: ") and rule in str(e.value)
    assert not list((tmp_path / "r").rglob("run.json"))


def _readme_block(readme: str, first_line: str) -> str:
    """The fenced code block of the README whose first line is `first_line`."""
    start = readme.index(first_line + "\n")
    return readme[start:readme.index("```", start)]


def test_readme_plugin_snippet_is_a_complete_installable_package(tmp_path, monkeypatch,
                                                                 fresh_registry, tiny_expert):
    """The two files of the README's plugin section, pip-installed as they are, run."""
    from click.testing import CliRunner

    from marlbench.cli import main

    readme = (REPO / "README.md").read_text()
    pkg = tmp_path / "my-marlbench-plugin"
    pkg.mkdir()
    for name in ("pyproject.toml", "my_marlbench_plugin.py"):
        (pkg / name).write_text(_readme_block(readme, f"# my-marlbench-plugin/{name}"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(pkg)],
                   check=True, capture_output=True)
    monkeypatch.syspath_prepend(str(target))
    res = CliRunner().invoke(main, ["plugins"])
    assert "my-bc (my-marlbench-plugin 0.1.0)" in res.stdout, res.output
    res = CliRunner().invoke(main, ["run", "--algo", "my-bc", "--env", "rware-tiny-2ag",
                                    "--dataset", "expert-4ep", "--steps", "20",
                                    "--eval-episodes", "2", "--eval-parallel", "2",
                                    "--results", str(tmp_path / "r"), "-q"])
    assert res.exit_code == 0, res.output
    assert "my-bc on rware-tiny-2ag/expert-4ep seed 0: return" in res.stdout
