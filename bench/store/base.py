"""The :class:`Store`: content-addressed stage outputs and cell records, written atomically, locked per entry, sealed.

A stage's key is the hash of everything that changes its output, so any cell that needs the same fine-tune reuses
it. An entry is complete when its marker file (``stage.json`` or ``record.json``) exists and is sound; markers are
written last, atomically (temp file, fsync, rename), so a killed process never leaves a half-written entry that
reads as complete.

**Integrity.** A marker is *sealed* when written: it records the size and blake2b hash of every file of its entry
and a hash of its own content (:func:`seal`). Reuse checks what is cheap (the marker parses and matches its own hash,
sizes match, safetensors headers parse and describe the file's length); ``bench verify deep=true`` also re-hashes the
files. A damaged entry found under its lock is moved to ``<suite>/quarantine/`` (never deleted) and recomputed.
Markers written before sealing existed carry no ``integrity`` object and are accepted as they are (their
safetensors headers are still checked).

**Write failures.** A write that fails for want of space, quota or permission, or on a read-only file system (the
``OSError``, torch's short-write ``RuntimeError``, safetensors' ``SafetensorError``), becomes a one-line
:class:`~bench.errors.StoreError` where it happens (:func:`atomic_write`, :func:`write_json`, :meth:`Store.lock`):
what failed, the space free against the run's estimate, and which finished cells are kept. docs/store.md says what
the store promises and what it does not.
"""

from __future__ import annotations

import errno
import shutil
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock

from bench.store.atomic import sweep_partial
from bench.store.failures import as_store_error
from bench.store.integrity import entry_problem, is_complete
from bench.store.layout import MARKERS, STAGE_MARKER, marker_of
from bench.store.quarantine import quarantine_with_warning


class Store:
    """``results/<suite>/stages/<stage>/<key>/`` and ``results/<suite>/cells/<strategy>/<cell>/``."""

    def __init__(self, results_dir: Path, suite: str):
        self.root = Path(results_dir) / suite

    def stage_dir(self, stage: str, key: str) -> Path:
        return self.root / "stages" / stage / key

    def cell_dir(self, strategy: str, cell: str) -> Path:
        return self.root / "cells" / strategy / cell

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @staticmethod
    def done(folder: Path, marker: str = STAGE_MARKER, memo: dict[Path, str | None] | None = None) -> bool:
        """The entry is finished and sound (:func:`is_complete`): a damaged one reads as not done, so the caller
        takes the lock, which moves it to quarantine, and recomputes it."""
        return is_complete(folder, marker, memo)

    @contextmanager
    def lock(self, folder: Path):
        """An exclusive lock on one entry: a second process waits, then finds the entry complete and reuses it.
        Taking it also clears what a killed holder left half-written and moves a damaged entry to quarantine (one
        warning line), so the holder recomputes it. On a store it cannot write, a finished entry is read without a
        lock (nothing will change it); anything else raises a one-line StoreError."""
        held = self._acquire(folder)
        try:
            if held is not None:
                sweep_partial(folder)
                marker = marker_of(folder)
                if (folder / marker).exists():
                    problem = entry_problem(folder, marker)
                    if problem:
                        quarantine_with_warning(folder, problem)
            yield
        finally:
            if held is not None:
                held.release()

    @staticmethod
    def _acquire(folder: Path) -> FileLock | None:
        """The entry's lock, held; None when the store cannot be written and the entry is finished."""
        try:
            folder.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(folder / ".lock"))
            lock.acquire()
            return lock
        except OSError as e:
            err = as_store_error(e, folder)
            if err is None:
                raise
            if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM) and is_complete(folder, marker_of(folder)):
                return None
            raise err from e

    @staticmethod
    def reset(folder: Path) -> None:
        """Forget an entry (``force=true``): remove the marker first so a crash mid-delete reads as incomplete."""
        for marker in MARKERS:
            (folder / marker).unlink(missing_ok=True)
        for child in folder.iterdir() if folder.exists() else []:
            if child.name != ".lock":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
