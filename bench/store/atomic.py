"""Atomic writes (temp file, fsync, rename: readers see the old file or the whole new one), the sweep of what a
killed writer left, JSON in and out, and the content hash that names store entries."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

from bench.store.failures import as_store_error


def content_hash(obj: Any, n: int = 16) -> str:
    """A stable hash of a JSON-serialisable object (keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


@contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Yield a temporary name next to ``path`` to write; on success it replaces ``path``, so readers see the old
    file or the whole new one, never a torn one. A process killed in between leaves ``<name>.tmp<pid>`` behind,
    which :func:`sweep_partial` removes. A write that fails for want of space or permission is raised as a one-line
    :class:`StoreError` after the temporary file is removed (the space it held is free again)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    except Exception as e:
        _remove(tmp)  # before measuring the free space the message reports
        err = as_store_error(e, path)
        if err is None:
            raise
        raise err from e
    finally:
        _remove(tmp)


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:  # a read-only file system: there is nothing of ours to remove
        pass


@contextmanager
def store_writes(path: Path) -> Iterator[None]:
    """Turn a failed write under ``path`` (space, quota, read-only, permission) into a one-line StoreError; any
    other exception passes unchanged."""
    try:
        yield
    except Exception as e:
        err = as_store_error(e, Path(path))
        if err is None:
            raise
        raise err from e


def sweep_partial(folder: Path) -> list[Path]:
    """Delete the half-written ``*.tmp<pid>`` files in ``folder`` whose writing process no longer runs."""
    removed = []
    for p in orphan_temp_files(folder):
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def orphan_temp_files(folder: Path) -> list[Path]:
    """The ``*.tmp<pid>`` files in ``folder`` whose writing process no longer runs (a killed writer's leftovers)."""
    out = []
    for p in Path(folder).glob("*.tmp*"):
        pid = p.name.rsplit(".tmp", 1)[1]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            out.append(p)
    return out


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
