"""What a result or dataset records about the code and machine that made it."""

from __future__ import annotations

import functools
import importlib.metadata as md
import platform
import subprocess
import sys
import time
from pathlib import Path

_PACKAGES = ("marlbench", "torch", "numpy", "h5py", "gymnasium", "rware", "jax", "jaxmarl",
             "scipy", "pandas")


@functools.lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


@functools.lru_cache(maxsize=1)
def code_commit() -> str | None:
    """Git commit of the marlbench source tree (suffixed '-dirty' if modified), if known."""
    src = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=src, capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=src, capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def command_line() -> str:
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])


def creation_record(started: float) -> dict:
    """How a dataset was made, for its card: the command, when, how long since `started`
    (a `time.perf_counter()` reading) and the package versions."""
    return {"created_with": command_line(), "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "collection_seconds": round(time.perf_counter() - started, 2),
            "packages": package_versions()}
