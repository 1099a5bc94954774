"""The names of the store's files: the markers that complete an entry, the quarantine, what no marker covers."""

from __future__ import annotations

import re
from pathlib import Path

STAGE_MARKER = "stage.json"
RECORD = "record.json"
MARKERS = (STAGE_MARKER, RECORD)
QUARANTINE = "quarantine"
QUARANTINE_NOTE = "quarantined.json"  # why and when an entry was moved aside, next to its files
INTEGRITY = "integrity"  # the marker's key that seals its entry
INTEGRITY_VERSION = 1
CHUNK = 1 << 20  # hashing reads this many bytes at a time
# files of an entry no marker covers: the lock, the markers, what a failed or killed writer leaves, notes
NOT_COVERED = {".lock", *MARKERS, "failed.json", "resume.pt", "resume_fit.pt", "resume.safetensors",
               "resume_fit.safetensors", QUARANTINE_NOTE}
TMP_NAME = re.compile(r"\.tmp\d+$")  # atomic_write's temporary names: <name>.tmp<pid>


def marker_of(folder: Path) -> str:
    """The marker of the entry in ``folder``: ``record.json`` for ``cells/<strategy>/<cell>``, else ``stage.json``."""
    return RECORD if Path(folder).parent.parent.name == "cells" else STAGE_MARKER
