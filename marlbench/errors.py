"""User-facing errors: the CLI prints them as one clear line and exits non-zero."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MarlbenchError(Exception):
    """An error caused by input the user can fix; shown without a traceback."""


class UnknownNameError(MarlbenchError, KeyError):
    """A name (algorithm, environment, dataset, option) that is not registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str],
                 listing: Iterable[str] | None = None):
        """`listing`: names to list in full (e.g. the tasks of the family the name looks
        like); otherwise the known names are listed only when none is close."""
        known = sorted(set(known))
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        if listing is not None:
            listing = f" Available: {', '.join(sorted(listing))}."
        else:
            listing = "" if close else f" Known: {_abbreviate(known)}."
        super().__init__(f"unknown {kind} {name!r}.{hint}{listing}")
        self.kind, self.name, self.suggestions = kind, name, close

    def __str__(self) -> str:  # KeyError would add quotes around the message
        return self.args[0]


class NoRunsError(MarlbenchError):
    """A results folder (or its filters) holds no completed run."""


class DatasetError(MarlbenchError):
    """A dataset file that is missing, corrupt, of another schema, or for another env."""


class ConfigError(MarlbenchError):
    """An invalid algorithm option or override."""


class CheckpointError(MarlbenchError):
    """A checkpoint that does not belong to the algorithm/config it is loaded into."""


class StorageError(MarlbenchError):
    """A file-system operation that failed (permissions, a file where a folder should be, a full
    disk); the message names the path and what was attempted."""


class BusyError(MarlbenchError):
    """Another live process holds the lock of what this one was about to do."""


class ContractError(MarlbenchError):
    """A plugin broke the plugin contract (`marlbench.api`); the message names the rule."""


class TrainingDiverged(MarlbenchError):
    """The loss became NaN/inf; the last good checkpoint was kept."""


def _abbreviate(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
