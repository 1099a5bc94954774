"""Failed store writes as one-line errors: a write that fails for want of space, quota or permission, or on a
read-only file system (the ``OSError``, torch's short-write ``RuntimeError``, safetensors' ``SafetensorError``),
becomes a :class:`~bench.errors.StoreError` that says what failed, the space free against the run's estimate, and
which finished cells are kept."""

from __future__ import annotations

import errno
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from bench.errors import StoreError
from bench.store.layout import CHUNK, QUARANTINE, RECORD

WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
# how libraries that lose the errno say it (safetensors keeps "os error N"; torch's writer only its message)
_IN_TEXT = (("No space left", errno.ENOSPC), ("Disk quota", errno.EDQUOT), ("Read-only file system", errno.EROFS),
            ("Permission denied", errno.EACCES))
_SHORT_WRITE = ("unexpected pos", "file write failed", "PytorchStreamWriter failed")
_OS_ERROR = re.compile(r"(?:os error|Errno) (\d+)")


def write_errno(exc: BaseException, path: Path) -> int | None:
    """The errno of a failed store write, or None when ``exc`` is not one (a bug keeps its traceback). A short write
    without an errno (torch's ``unexpected pos``) is ENOSPC when the disk is (nearly) full, else EIO."""
    if isinstance(exc, OSError):
        return exc.errno if exc.errno in WRITE_ERRNOS else None
    if not isinstance(exc, RuntimeError) and type(exc).__name__ != "SafetensorError":
        return None
    text = str(exc)
    found = _OS_ERROR.search(text)
    if found and int(found.group(1)) in WRITE_ERRNOS:
        return int(found.group(1))
    for phrase, number in _IN_TEXT:
        if phrase in text:
            return number
    if any(s in text for s in _SHORT_WRITE):
        free = free_bytes(path)
        return errno.ENOSPC if free is not None and free < 4 * CHUNK else errno.EIO
    return None


def free_bytes(path: Path) -> int | None:
    """Free bytes on the file system that holds ``path`` (its nearest existing ancestor), or None."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def suite_root(path: Path) -> Path | None:
    """``results/<suite>`` for a path inside a suite's store (its stages, cells, cache, quarantine, report)."""
    path = Path(path).absolute()
    for p in (path, *path.parents):
        if p.name in ("stages", "cells", "cache", QUARANTINE, "report") and p.parent != p:
            return p.parent
    return None


def fmt_bytes(n: float) -> str:
    """``1_700_000`` -> ``'1.7 MB'`` (decimal units, like ``df -H``)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def _kept(root: Path | None, finished: Sequence[str]) -> str:
    """What is kept: the cells this run finished, and how many finished cells the suite's store holds."""
    mine = ""
    if finished:
        more = f" and {len(finished) - 5} more" if len(finished) > 5 else ""
        mine = f"finished in this run and kept: {', '.join(finished[:5])}{more}"
    if root is None:
        return mine or "finished cells are kept"
    n = sum(1 for _ in (root / "cells").glob(f"*/*/{RECORD}")) if (root / "cells").is_dir() else 0
    held = f"{root / 'cells'} holds {n} finished cell(s)"
    return f"{mine}; {held}" if mine else held


def as_store_error(exc: BaseException, path: Path, needed: int | None = None,
                   finished: Sequence[str] = ()) -> StoreError | None:
    """The one-line StoreError for a failed write to ``path`` (None when ``exc`` is not a write failure).

    What only the run knows it passes (:meth:`bench.run_context.RunContext.explain`): ``needed``, the bytes it was
    estimated to need, and ``finished``, the cells it finished (``"label seed=N"``)."""
    if isinstance(exc, StoreError):
        return exc
    number = write_errno(exc, path)
    if number is None:
        return None
    path = Path(path)
    root = suite_root(path)
    detail = getattr(exc, "strerror", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
    free = free_bytes(path)
    if number in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
        what = {errno.ENOSPC: "out of disk space", errno.EDQUOT: "over the disk quota",
                errno.EIO: "a write failed (short write)"}[number]
        space = f"{fmt_bytes(free)} free there" if free is not None else "free space unknown"
        if needed:
            space += f", this run needs about {fmt_bytes(needed)}"
        message = (f"{what}: writing {path} failed ({detail}); {space}; {_kept(root, finished)}; no unfinished "
                   f"entry reads as complete. Free space (or give results_dir= a disk with room) and rerun the same "
                   f"command: finished cells and stages are reused")
    else:
        what = f"cannot write {path}: read-only file system" if number == errno.EROFS else \
            f"permission denied: {path}"
        suite = root.name if root else "<suite>"
        done = f"; {_kept(root, finished)}" if finished else ""
        message = (f"{what}{done}. Reading needs no write access "
                   f"(`python -m bench report suite={suite} out=DIR` writes the report elsewhere); to run cells, "
                   f"give results_dir= a writable folder")
    return StoreError(message, path=str(path), errno=number, free=free, needed=needed)
