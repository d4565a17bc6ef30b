"""pyproject.toml against the tree: a non-editable install carries every package, data file and
built-in plugin, and CI runs the README's test command."""

from __future__ import annotations

import fnmatch
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def _package_folders() -> dict[str, Path]:
    """Installed package name -> its folder, for every folder with an __init__.py under the
    roots that `package-dir` maps."""
    found = {}
    for root_name, folder in SETUPTOOLS["package-dir"].items():
        root = REPO / folder
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root).parts
            if "__pycache__" in rel or any(p.startswith(".") for p in rel):
                continue
            found[".".join((root_name, *rel))] = init.parent
    return found


def test_every_package_folder_is_listed():
    folders = _package_folders()
    assert "marlbench.compare" in folders and "marlbench.data.importers" in folders
    missing = sorted(set(folders) - set(SETUPTOOLS["packages"]))
    assert not missing, f"packages missing from [tool.setuptools] packages: {missing}"
    stale = sorted(set(SETUPTOOLS["packages"]) - set(folders))
    assert not stale, f"[tool.setuptools] packages without a folder: {stale}"


def test_every_non_python_file_in_a_package_is_package_data():
    data = SETUPTOOLS.get("package-data", {})
    unshipped = []
    for name, folder in _package_folders().items():
        for f in folder.iterdir():
            if f.is_dir() or f.suffix in (".py", ".pyc") or f.name.startswith("."):
                continue
            rel = f.relative_to(folder).as_posix()
            if not any(fnmatch.fnmatch(rel, g) for g in data.get(name, ())):
                unshipped.append(f"{name}: {rel}")
        # data folders without an __init__.py (presets/, behaviours/<map>/) ship by glob
        for sub in folder.iterdir():
            if not sub.is_dir() or (sub / "__init__.py").exists() or sub.name == "__pycache__":
                continue
            for f in sub.rglob("*"):
                rel = f.relative_to(folder).as_posix()
                if f.is_file() and "__pycache__" not in rel and not any(
                        fnmatch.fnmatch(rel, g) for g in data.get(name, ())):
                    unshipped.append(f"{name}: {rel}")
    assert not unshipped, f"files a non-editable install would leave out: {unshipped}"


def test_every_builtin_plugin_module_is_an_entry_point():
    points = set(PYPROJECT["project"]["entry-points"]["marlbench"].values())
    expected = {f"marlbench.algorithms.{p.stem}" for p in (REPO / "algorithms").glob("*.py")
                if not p.stem.startswith("_")}
    expected |= {f"marlbench.loggers.{p.stem}"
                 for p in (REPO / "marlbench" / "loggers").glob("*.py")
                 if not p.stem.startswith("_")}
    expected |= {f"marlbench.environments.{p.parent.name}"
                 for p in (REPO / "environments").glob("*/__init__.py")}
    assert expected, "no plugin modules found"
    assert not expected - points, f"not registered: {sorted(expected - points)}"
    assert not points - expected, f"entry points without a module: {sorted(points - expected)}"


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    command = [line for line in ci if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert len(command) == 1, command
    readme = (REPO / "README.md").read_text()
    assert f"```bash\n{command[0]}\n```" in readme
    extras = command[0].split("-e '.[", 1)[1].split("]'", 1)[0].split(",")
    assert set(extras) <= set(PYPROJECT["project"]["optional-dependencies"]), extras
