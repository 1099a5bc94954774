"""Quarantine: a damaged entry found under its lock is moved to ``<suite>/quarantine/`` (never deleted), with a
note saying why, and recomputed."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

from bench.errors import StoreWarning
from bench.store.atomic import now_iso, store_writes
from bench.store.layout import QUARANTINE, QUARANTINE_NOTE


def quarantine(folder: Path, reason: str) -> Path:
    """Move the files of a damaged entry to ``<suite>/quarantine/<stages|cells>/<stage|strategy>/<key>/`` (a
    numbered sibling when that exists), with ``quarantined.json`` saying why; the entry's folder and its lock stay,
    so a waiting process finds an empty entry and recomputes it. Nothing is deleted. Call it holding the lock."""
    folder = Path(folder)
    root = folder.parents[2]
    dest = root / QUARANTINE / folder.relative_to(root)
    n = 1
    while dest.exists():
        n += 1
        dest = dest.with_name(f"{folder.name}.{n}")
    with store_writes(dest):
        dest.mkdir(parents=True)
        for child in sorted(folder.iterdir()):
            if child.name != ".lock":
                os.replace(child, dest / child.name)
        note = {"reason": reason, "entry": folder.relative_to(root).as_posix(), "moved": now_iso()}
        (dest / QUARANTINE_NOTE).write_text(json.dumps(note, indent=1) + "\n")
    return dest


def quarantine_with_warning(folder: Path, reason: str, then: str = "recomputing it") -> Path:
    """:func:`quarantine`, and one warning line that names the entry, why, and where it went."""
    dest = quarantine(folder, reason)
    warnings.warn(f"damaged entry {folder} ({reason}); moved to {dest}, {then}", StoreWarning, stacklevel=3)
    return dest
