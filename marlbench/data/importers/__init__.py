"""Importers for published offline MARL datasets, and export to the OG-MARL vault format.

One module per format; each exposes `open_source(path, allow_pickle=...) -> Source` (see
`common`), and `write_dataset` turns any `Source` into a schema-v1 dataset file through the
same `DatasetWriter` collection uses.

| format         | what                                             | module          |
|----------------|--------------------------------------------------|-----------------|
| `ogmarl-vault` | OG-MARL / flashbax vault (needs tensorstore)     | `ogmarl_vault`  |
| `pymarl-npy`   | PyMARL episode-batch dump (AlberDICE RWARE)      | `pymarl_npy`    |
| `madt`         | MADT SMAC episodes, torch.save pickles           | `madt`          |
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from marlbench.data.importers import madt, ogmarl_vault, pymarl_npy
from marlbench.data.importers.common import Episode, Source, write_dataset
from marlbench.errors import UnknownNameError

IMPORTERS: dict[str, Callable[..., Source]] = {
    ogmarl_vault.FORMAT: ogmarl_vault.open_source,
    pymarl_npy.FORMAT: pymarl_npy.open_source,
    madt.FORMAT: madt.open_source,
}
EXPORTERS: dict[str, Callable[..., Path]] = {ogmarl_vault.FORMAT: ogmarl_vault.export}

__all__ = ["EXPORTERS", "IMPORTERS", "Episode", "Source", "default_name", "open_source",
           "write_dataset"]


def open_source(fmt: str, path: Path | str, *, allow_pickle: bool = False) -> Source:
    """Open PATH as format FMT (nothing is written)."""
    if fmt not in IMPORTERS:
        raise UnknownNameError("dataset format", fmt, IMPORTERS)
    return IMPORTERS[fmt](Path(path), allow_pickle=allow_pickle)


def exporter(fmt: str) -> Callable[..., Path]:
    if fmt not in EXPORTERS:
        raise UnknownNameError("export format", fmt, EXPORTERS)
    return EXPORTERS[fmt]


def default_name(fmt: str, path: Path | str) -> str:
    """A dataset name from the source's path: format prefix + the telling folder names."""
    p = Path(path).resolve()
    if fmt == ogmarl_vault.FORMAT:
        uid_dir = ogmarl_vault.find_uid_dir(p)
        parts = ["ogmarl", uid_dir.parent.name.removesuffix(".vlt"), uid_dir.name]
    elif fmt == madt.FORMAT:
        parts = ["madt", p.parent.name, p.name] if p.is_dir() else ["madt", p.parent.name]
    else:
        parts = ["pymarl", p.name]
    name = "-".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", x).strip("_.-") for x in parts if x)
    return name.lower()
