"""The run store: content-addressed stage outputs and cell records, written atomically, locked per entry, sealed.

A stage's key is the hash of everything that changes its output, so any cell that needs the same fine-tune reuses
it. An entry is complete when its marker file (``stage.json`` or ``record.json``) exists and is sound; markers are
written last, atomically (temp file, fsync, rename), so a killed process never leaves a half-written entry that
reads as complete. docs/store.md says what the store promises and what it does not.

The package, one concern a module:

- :mod:`~bench.store.layout`: the names of the store's files;
- :mod:`~bench.store.atomic`: atomic writes, the sweep of a killed writer's leftovers, JSON, content hashes;
- :mod:`~bench.store.integrity`: sealed markers and the checks before reuse (cheap, or ``deep``);
- :mod:`~bench.store.quarantine`: damaged entries moved aside, never deleted;
- :mod:`~bench.store.failures`: failed writes (space, quota, read-only, permission) as one-line errors;
- :mod:`~bench.store.space`: the space a run needs, estimated before training;
- :mod:`~bench.store.provenance`: the code and library versions that produced a stage or a record;
- :mod:`~bench.store.base`: the :class:`Store` (where entries live, their locks).
"""

from bench.store.atomic import (
    atomic_write,
    content_hash,
    now_iso,
    orphan_temp_files,
    read_json,
    store_writes,
    sweep_partial,
)
from bench.store.base import Store
from bench.store.failures import WRITE_ERRNOS, as_store_error, fmt_bytes, free_bytes, suite_root, write_errno
from bench.store.integrity import (
    covered_files,
    damaged_stages,
    entry_problem,
    file_digest,
    is_complete,
    load_marker,
    marker_problem,
    record_stages,
    safetensors_problem,
    seal,
    sealed_files,
    write_json,
)
from bench.store.layout import (
    CHUNK,
    INTEGRITY,
    INTEGRITY_VERSION,
    MARKERS,
    NOT_COVERED,
    QUARANTINE,
    QUARANTINE_NOTE,
    RECORD,
    STAGE_MARKER,
    TMP_NAME,
    marker_of,
)
from bench.store.provenance import PROVENANCE_LIBRARIES, code_version, library_versions, provenance
from bench.store.quarantine import quarantine, quarantine_with_warning
from bench.store.space import (
    ENTRY_BYTES,
    PREDICTION_BYTES,
    RECORD_BYTES,
    RESUME_FACTOR,
    check_free_space,
    estimate_bytes,
    planned_stages,
)

__all__ = [
    "CHUNK", "ENTRY_BYTES", "INTEGRITY", "INTEGRITY_VERSION", "MARKERS", "NOT_COVERED", "PREDICTION_BYTES",
    "PROVENANCE_LIBRARIES", "QUARANTINE", "QUARANTINE_NOTE", "RECORD", "RECORD_BYTES", "RESUME_FACTOR",
    "STAGE_MARKER", "TMP_NAME", "WRITE_ERRNOS", "Store", "as_store_error", "atomic_write", "check_free_space",
    "code_version", "content_hash", "covered_files", "damaged_stages", "entry_problem", "estimate_bytes",
    "file_digest", "fmt_bytes", "free_bytes", "is_complete", "library_versions", "load_marker", "marker_of",
    "marker_problem", "now_iso", "orphan_temp_files", "planned_stages", "provenance", "quarantine",
    "quarantine_with_warning", "read_json", "record_stages", "safetensors_problem", "seal", "sealed_files",
    "store_writes", "suite_root", "sweep_partial", "write_errno", "write_json",
]
