"""Atomic file and directory writes (a reader sees the old version or the new, never half),
per-path locks, and the clean-up of what killed processes left behind.

Temporary files and staging folders carry their owner's pid in their name
(``.<name>.pid<PID>.<random>.tmp``, ``.<name>.staging-<PID>``) so that a later process can tell
leftovers of a dead process, which it removes, from the work of a live one, which it never
touches. OS errors become one-line `StorageError`s naming the path and what was attempted.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from marlbench.errors import BusyError, StorageError


def describe_os_error(exc: OSError) -> str:
    reason = exc.strerror or type(exc).__name__
    if exc.errno == errno.ENOTDIR:
        reason = "a file is in the way (not a folder)"
    elif exc.errno == errno.EEXIST and exc.filename and Path(exc.filename).is_file():
        reason = "a file is in the way (not a folder)"
    return reason


@contextlib.contextmanager
def io_step(action: str, path: Path | str) -> Iterator[None]:
    """Turn an `OSError` inside into a one-line `StorageError`: 'cannot ACTION PATH: reason'."""
    try:
        yield
    except OSError as exc:
        where = exc.filename if exc.filename and str(exc.filename) != str(path) else None
        extra = f" ({where})" if where else ""
        raise StorageError(f"cannot {action} {path}{extra}: {describe_os_error(exc)}") from None


def check_writable_dir(path: Path | str, what: str) -> None:
    """Fail early, with one line, if folder `path` could not be created or written to.

    Nothing is created: the nearest existing ancestor must be a writable folder.
    """
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        if probe.is_symlink():  # dangling link
            raise StorageError(f"cannot write the {what} folder {path}: {probe} is a broken link")
        probe = probe.parent
    if not probe.is_dir():
        raise StorageError(f"cannot write the {what} folder {path}: {probe} is a file, not a "
                           "folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise StorageError(f"cannot write the {what} folder {path}: no write permission on "
                           f"{probe}")


# ------------------------------------------------------------------------------------------------
# Owner processes
# ------------------------------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    return True


_TMP_PID = re.compile(r"\.pid(\d+)\.[^.]*\.tmp$")


def tmp_prefix(path: Path) -> str:
    return f".{path.name}.pid{os.getpid()}."


def remove_dead_tmp(path: Path | str) -> list[Path]:
    """Remove temporary files next to `path` whose owner process is gone; returns them."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.pid*.tmp"):
        m = _TMP_PID.search(tmp.name)
        if m and not pid_alive(int(m[1])):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def remove_dead_staging(path: Path | str) -> list[Path]:
    """Remove staging folders of `path` (``.<name>.staging-<PID>``), and old versions moved
    aside by an overwrite (``.<name>.old-<PID>``), whose process is gone."""
    path = Path(path)
    removed = []
    for kind in ("staging", "old"):
        for left in path.parent.glob(f".{glob_escape(path.name)}.{kind}-*"):
            pid = left.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not pid_alive(int(pid)):
                shutil.rmtree(left, ignore_errors=True)
                removed.append(left)
    return removed


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


# ------------------------------------------------------------------------------------------------
# Locks
# ------------------------------------------------------------------------------------------------


def lock_path(path: Path | str) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def path_lock(path: Path | str, *, wait: bool, what: str = "") -> Iterator[None]:
    """Exclusive lock on `path` (a ``.<name>.lock`` file next to it) for the block.

    The kernel releases it when the holder dies, so a killed process leaves no stale lock.
    `wait=False`: raise `BusyError` at once if a live process holds it. The lock file holds the
    holder's pid (for the message) and is left in place: deleting it would let two processes
    lock two different files of the same name.
    """
    path = Path(path)
    lock = lock_path(path)
    with io_step("create the folder", path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
    with io_step("open the lock file", lock):
        fh = open(lock, "a+")  # noqa: SIM115 - closed below
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip()
            who = f"process {holder}" if holder.isdigit() else "another process"
            raise BusyError(f"{what or path} is being written by {who} right now (lock "
                            f"{lock}); wait for it to finish") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    finally:
        fh.close()


class AtomicFile:
    """A temporary file next to `path` that replaces `path` on `commit()` (atomic rename)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=tmp_prefix(self.path), suffix=".tmp",
                                   dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)

    def commit(self) -> None:
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path` atomically."""
    f = AtomicFile(path)
    try:
        yield f.tmp
        f.commit()
    finally:
        f.discard()


def write_text(path: Path | str, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path | str, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def publish_dir(staging: Path, final: Path, overwrite: bool) -> None:
    """Move a finished staging folder to `final` with a rename (atomic on one filesystem).

    An existing `final` is only replaced when `overwrite` is set; it is moved aside first and
    deleted once the new folder is in place, so a crash never leaves neither.
    """
    if final.exists():
        if not overwrite:
            raise FileExistsError(final)
        aside = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, aside)
        os.replace(staging, final)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, final)
