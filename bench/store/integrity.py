"""Integrity of store entries: a marker (``stage.json``, ``record.json``) is *sealed* when written, with the size
and blake2b hash of every file of its entry and a hash of its own content; reuse checks what is cheap, ``bench
verify deep=true`` re-hashes. Markers written before sealing existed carry no ``integrity`` object and are accepted
as they are (their safetensors headers are still checked)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from bench.store.atomic import atomic_write, read_json, store_writes
from bench.store.layout import (
    CHUNK,
    INTEGRITY,
    INTEGRITY_VERSION,
    MARKERS,
    NOT_COVERED,
    RECORD,
    STAGE_MARKER,
    TMP_NAME,
    marker_of,
)


def write_json(path: Path, obj: Any) -> None:
    """Atomic JSON write (see :func:`atomic_write`). A marker (``stage.json``, ``record.json``) is sealed first: it
    records the size and hash of every other file of its entry (:func:`seal`), so write it last."""
    path = Path(path)
    with store_writes(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    if path.name in MARKERS and isinstance(obj, dict):
        obj = seal(path.parent, obj)
    with atomic_write(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=str, allow_nan=True)
        f.flush()
        os.fsync(f.fileno())


def file_digest(path: Path) -> str:
    """blake2b (32 bytes) of a file, streamed: a checkpoint of any size costs one read and no memory."""
    h = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def covered_files(folder: Path) -> list[str]:
    """The files of an entry its marker covers (relative POSIX paths, sorted): every regular file in it except the
    lock, the markers, temporary files and notes (``NOT_COVERED``)."""
    folder = Path(folder)
    out = []
    for p in folder.rglob("*"):
        if p.is_file() and not p.is_symlink() and p.name not in NOT_COVERED and not TMP_NAME.search(p.name):
            out.append(p.relative_to(folder).as_posix())
    return sorted(out)


def _canonical(obj: Any) -> bytes:
    """The bytes a marker's own hash covers: its JSON with keys sorted, without the ``integrity`` object. Computed
    on the object as it reads back (paths as strings, integer keys as strings), so writer and reader agree."""
    body = {k: v for k, v in obj.items() if k != INTEGRITY}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True, default=str).encode()


def seal(folder: Path, obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` plus an ``integrity`` object: the size and blake2b of every covered file of ``folder`` and a hash of
    ``obj`` itself (its canonical JSON). Hashing costs one read of files just written (still in the page cache)."""
    body = json.loads(json.dumps({k: v for k, v in obj.items() if k != INTEGRITY}, default=str, allow_nan=True))
    files = {name: {"size": (Path(folder) / name).stat().st_size, "blake2b": file_digest(Path(folder) / name)}
             for name in covered_files(folder)}
    integrity = {"version": INTEGRITY_VERSION, "algorithm": "blake2b",
                 "marker": hashlib.blake2b(_canonical(body), digest_size=32).hexdigest(), "files": files}
    return {**body, INTEGRITY: integrity}


def marker_problem(data: Any) -> str | None:
    """Why a parsed marker cannot be trusted by itself (not an object, or its content no longer matches its own
    hash), or None. An unsealed marker (written before sealing existed) is accepted, and so is one sealed in a
    newer format this bench cannot check (:func:`sealed_files` then gives no sizes to compare: never quarantined
    for being newer)."""
    if not isinstance(data, dict):
        return "is not a JSON object"
    integrity = data.get(INTEGRITY)
    if integrity is None or _newer(integrity):
        return None
    if not isinstance(integrity, dict) or not isinstance(integrity.get("files"), dict) \
            or not isinstance(integrity.get("version"), int):
        return f"has a malformed {INTEGRITY!r} object"
    if hashlib.blake2b(_canonical(data), digest_size=32).hexdigest() != integrity.get("marker"):
        return "does not match its own hash (edited or corrupted after it was written)"
    return None


def _newer(integrity: Any) -> bool:
    return isinstance(integrity, dict) and isinstance(integrity.get("version"), int) \
        and integrity["version"] > INTEGRITY_VERSION


def sealed_files(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The files a sound marker covers, ``{name: {"size", "blake2b"}}``; empty when it is unsealed or sealed in a
    newer format."""
    integrity = data.get(INTEGRITY)
    return {} if integrity is None or _newer(integrity) else integrity["files"]


def safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file is unusable, read from its header alone (8 bytes of length, then JSON): empty,
    truncated, a header that does not parse, or data offsets that do not end where the file ends."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return "is empty" if size == 0 else f"is truncated ({size} bytes, no header)"
            n = int.from_bytes(head, "little")
            if n > size - 8:
                return f"is truncated ({size} bytes; its header alone claims {n})"
            header = json.loads(f.read(n))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"has an unreadable header ({type(e).__name__})"
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        return "has a malformed header"
    if 8 + n + end != size:
        return f"holds {size} bytes but its header describes {8 + n + end} (truncated or overwritten)"
    return None


def load_marker(folder: Path, marker: str | None = None) -> tuple[Any, str | None]:
    """``(parsed marker, None)`` or ``(None, why it is unusable)``; a missing marker is a problem too."""
    marker = marker or marker_of(folder)
    try:
        data = read_json(Path(folder) / marker)
    except FileNotFoundError:
        return None, f"{marker} is missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        first = (str(e).splitlines() or [""])[0]
        return None, f"{marker} is unreadable ({type(e).__name__}: {first})"
    problem = marker_problem(data)
    return (None, f"{marker} {problem}") if problem else (data, None)


def entry_problem(folder: Path, marker: str | None = None, deep: bool = False, data: Any = None) -> str | None:
    """Why the finished entry in ``folder`` cannot be reused, or None when it can. Cheap by default: the marker
    parses and matches its own hash, every covered file exists with its recorded size, and safetensors headers
    describe their files; ``deep`` also re-hashes every file (a full read). The first problem found is returned."""
    folder = Path(folder)
    marker = marker or marker_of(folder)
    if data is None:
        data, problem = load_marker(folder, marker)
        if problem:
            return problem
    files = sealed_files(data)
    for name, spec in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != spec.get("size"):
            return f"{name} holds {size} bytes, {marker} recorded {spec.get('size')}"
    names = set(files) or set(covered_files(folder))  # an unsealed marker: check what is there
    for name in sorted(n for n in names if n.endswith(".safetensors")):
        problem = safetensors_problem(folder / name)
        if problem:
            return f"{name} {problem}"
    if deep:
        for name, spec in files.items():
            if file_digest(folder / name) != spec.get("blake2b"):
                return f"{name} does not match its recorded blake2b hash (same size, different bytes)"
    return None


def record_stages(data: dict[str, Any]) -> list[tuple[str, str]]:
    """The (stage, key) pairs a record's rows were made from, in order, without repeats."""
    out: list[tuple[str, str]] = []
    rows = data.get("rows") if isinstance(data, dict) else None
    for row in (rows or {}).values():
        for s in (row.get("stages") or []) if isinstance(row, dict) else []:
            if isinstance(s, dict) and isinstance(s.get("stage"), str) and isinstance(s.get("key"), str):
                if (s["stage"], s["key"]) not in out:
                    out.append((s["stage"], s["key"]))
    return out


def damaged_stages(cell_folder: Path, data: dict[str, Any], deep: bool = False,
                   memo: dict[Path, str | None] | None = None) -> list[str]:
    """The stages a record was made from that are present but damaged, as ``"<stage>/<key> (why)"``. A stage that
    is absent is not listed (a strategy may discard what it no longer needs; ``bench verify`` reports those).
    ``memo``: stage folder -> problem, shared by the checks of one pass over many records (they share stages)."""
    root = Path(cell_folder).parents[2]
    out = []
    memo = {} if memo is None else memo
    for stage, key in record_stages(data):
        folder = root / "stages" / stage / key
        if folder not in memo:
            memo[folder] = entry_problem(folder, STAGE_MARKER, deep) if (folder / STAGE_MARKER).exists() else None
        if memo[folder]:
            out.append(f"{stage}/{key} ({memo[folder]})")
    return out


def is_complete(folder: Path, marker: str = STAGE_MARKER, memo: dict[Path, str | None] | None = None) -> bool:
    """The entry can be reused: its marker exists, the cheap checks pass and, for a record, none of the stages it
    was made from is damaged (so rerunning its command recomputes a damaged stage). ``memo``: see
    :func:`damaged_stages`."""
    folder = Path(folder)
    if not (folder / marker).exists():
        return False
    data, problem = load_marker(folder, marker)
    if problem or entry_problem(folder, marker, data=data):
        return False
    return marker != RECORD or not damaged_stages(folder, data, memo=memo)
