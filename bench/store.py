"""The run store: content-addressed stage outputs and cell records, written atomically, locked per entry.

A stage's key is the hash of everything that changes its output, so any cell that needs the same fine-tune reuses
it. An entry is complete when its marker file (``stage.json`` or ``record.json``) exists; markers are written last,
atomically (temp file, fsync, rename), so a killed process never leaves a half-written entry that reads as complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import psutil
from filelock import FileLock

STAGE_MARKER = "stage.json"
RECORD = "record.json"
SCHEMA_VERSION = 2  # 2: per-example predictions, config and budget fingerprints, stage provenance


def content_hash(obj: Any, n: int = 16) -> str:
    """A stable hash of a JSON-serialisable object (keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


@contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Yield a temporary name next to ``path`` to write; on success it replaces ``path``, so readers see the old
    file or the whole new one, never a torn one. A process killed in between leaves ``<name>.tmp<pid>`` behind,
    which :func:`sweep_partial` removes."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def sweep_partial(folder: Path) -> list[Path]:
    """Delete the half-written ``*.tmp<pid>`` files in ``folder`` whose writing process no longer runs."""
    removed = []
    for p in Path(folder).glob("*.tmp*"):
        pid = p.name.rsplit(".tmp", 1)[1]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def write_json(path: Path, obj: Any) -> None:
    """Atomic JSON write (see :func:`atomic_write`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=str, allow_nan=True)
        f.flush()
        os.fsync(f.fileno())


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus the git commit of the source tree (``+dirty`` when it has uncommitted changes)."""
    from importlib.metadata import version

    try:
        v = version("mtbench")
    except Exception:  # pragma: no cover - running from a source tree without install
        v = "0+unknown"
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        if sha:
            v += f"+g{sha}" + (".dirty" if dirty else "")
    except Exception:
        pass
    return v


PROVENANCE_LIBRARIES = ("torch", "transformers", "timm", "numpy", "scikit-learn", "scipy", "tokenizers", "safetensors")


@lru_cache(maxsize=1)
def library_versions() -> dict[str, str]:
    """Installed versions of the libraries whose behaviour can change a result (absent ones are left out)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in PROVENANCE_LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def provenance() -> dict[str, Any]:
    """What produced a stage or a record: the code version and the library versions."""
    return {"code_version": code_version(), "versions": library_versions()}


class Store:
    """``results/<suite>/stages/<stage>/<key>/`` and ``results/<suite>/cells/<strategy>/<cell>/``."""

    def __init__(self, results_dir: Path, suite: str):
        self.root = Path(results_dir) / suite
        self.reused: list[str] = []  # stage keys served from the store in this process
        self.computed: list[str] = []

    def stage_dir(self, stage: str, key: str) -> Path:
        return self.root / "stages" / stage / key

    def cell_dir(self, strategy: str, cell: str) -> Path:
        return self.root / "cells" / strategy / cell

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @staticmethod
    def done(folder: Path, marker: str = STAGE_MARKER) -> bool:
        return (folder / marker).exists()

    @contextmanager
    def lock(self, folder: Path):
        """An exclusive lock on one entry: a second process waits, then finds the entry complete and reuses it.
        Taking it also clears what a killed holder left half-written."""
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder / ".lock")):
            sweep_partial(folder)
            yield

    @staticmethod
    def reset(folder: Path) -> None:
        """Forget an entry (``force=true``): remove the marker first so a crash mid-delete reads as incomplete."""
        for marker in (STAGE_MARKER, RECORD):
            (folder / marker).unlink(missing_ok=True)
        for child in folder.iterdir() if folder.exists() else []:
            if child.name != ".lock":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
