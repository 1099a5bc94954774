"""The run store: content-addressed stage outputs and cell records, written atomically, locked per entry, sealed.

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
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import psutil
from filelock import FileLock

from bench.errors import StoreError, StoreWarning

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
    if path.name == RECORD and isinstance(obj, dict):
        _FINISHED.append(f"{obj.get('label', '?')} seed={obj.get('seed', '?')}")


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------------------------------- integrity
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


def marker_of(folder: Path) -> str:
    """The marker of the entry in ``folder``: ``record.json`` for ``cells/<strategy>/<cell>``, else ``stage.json``."""
    return RECORD if Path(folder).parent.parent.name == "cells" else STAGE_MARKER


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


# ------------------------------------------------------------------------------------ space and write failures
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
# how libraries that lose the errno say it (safetensors keeps "os error N"; torch's writer only its message)
_IN_TEXT = (("No space left", errno.ENOSPC), ("Disk quota", errno.EDQUOT), ("Read-only file system", errno.EROFS),
            ("Permission denied", errno.EACCES))
_SHORT_WRITE = ("unexpected pos", "file write failed", "PytorchStreamWriter failed")
_OS_ERROR = re.compile(r"(?:os error|Errno) (\d+)")
_PLANNED: dict[str, int] = {}  # suite root or results dir -> bytes the run was estimated to need
_FINISHED: list[str] = []  # the cells whose records this process wrote, as "label seed=N"


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


def _kept(root: Path | None) -> str:
    """What is kept: the cells this process finished, and how many finished cells the suite's store holds."""
    mine = ""
    if _FINISHED:
        more = f" and {len(_FINISHED) - 5} more" if len(_FINISHED) > 5 else ""
        mine = f"finished in this run and kept: {', '.join(_FINISHED[:5])}{more}"
    if root is None:
        return mine or "finished cells are kept"
    n = sum(1 for _ in (root / "cells").glob(f"*/*/{RECORD}")) if (root / "cells").is_dir() else 0
    held = f"{root / 'cells'} holds {n} finished cell(s)"
    return f"{mine}; {held}" if mine else held


def as_store_error(exc: BaseException, path: Path) -> StoreError | None:
    """The one-line StoreError for a failed write to ``path`` (None when ``exc`` is not a write failure)."""
    if isinstance(exc, StoreError):
        return exc
    number = write_errno(exc, path)
    if number is None:
        return None
    path = Path(path)
    root = suite_root(path)
    detail = getattr(exc, "strerror", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
    free = free_bytes(path)
    needed = next((_PLANNED[k] for k in (str(root), str(root.parent)) if k in _PLANNED), None) if root else None
    if number in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
        what = {errno.ENOSPC: "out of disk space", errno.EDQUOT: "over the disk quota",
                errno.EIO: "a write failed (short write)"}[number]
        space = f"{fmt_bytes(free)} free there" if free is not None else "free space unknown"
        if needed:
            space += f", this run needs about {fmt_bytes(needed)}"
        message = (f"{what}: writing {path} failed ({detail}); {space}; {_kept(root)}; no unfinished entry reads "
                   f"as complete. Free space (or give results_dir= a disk with room) and rerun the same command: "
                   f"finished cells and stages are reused")
    else:
        what = f"cannot write {path}: read-only file system" if number == errno.EROFS else \
            f"permission denied: {path}"
        suite = root.name if root else "<suite>"
        done = f"; {_kept(root)}" if _FINISHED else ""
        message = (f"{what}{done}. Reading needs no write access "
                   f"(`python -m bench report suite={suite} out=DIR` writes the report elsewhere); to run cells, "
                   f"give results_dir= a writable folder")
    return StoreError(message, path=str(path), errno=number, free=free, needed=needed)


# CPU-side sizes behind the estimate: each entry's marker, lock and file-system blocks; a record; one kept prediction
ENTRY_BYTES = 16_000
RECORD_BYTES = 32_000
PREDICTION_BYTES = 16  # prediction, target and id of one example, compressed
RESUME_FACTOR = 3  # a training stage's resume state: weights plus AdamW's two moments
def planned_stages(strategies: list[Any], n_tasks: int, seeds: int) -> tuple[int, int]:
    """``(checkpoints, evaluations)`` a plan adds at most: per seed θ0, the T fine-tunes when a strategy uses them
    (shared), and each variant's own stages, as the strategy classes declare them (``Strategy.uses_finetunes``,
    ``Strategy.own_checkpoints``; the defaults count every task fine-tuned, fused and trained jointly). Every
    checkpoint but θ0 and a fusion keeps predictions, and so does the evaluate stage after a fusion."""
    per_seed_ckpt, per_seed_eval = 1, 0
    if any(getattr(s, "uses_finetunes", True) for s in strategies):
        per_seed_ckpt, per_seed_eval = 1 + n_tasks, n_tasks
    for s in strategies:
        own = int(getattr(s, "own_checkpoints", 2))
        per_seed_ckpt += own
        per_seed_eval += own  # a joint stage evaluates; a fusion doesn't, but its evaluate stage does
    return seeds * per_seed_ckpt, seeds * per_seed_eval


def estimate_bytes(model_bytes: int, checkpoints: int, evaluations: int = 0, eval_examples: int = 0,
                   cells: int = 0) -> int:
    """About how many bytes a run adds to the store (an upper bound rather than a lower one).

    ``model_bytes``: one checkpoint, backbone plus heads (:func:`bench.checkpoint.state_bytes`); ``checkpoints``
    and ``evaluations``: the stages that write weights and keep predictions (:func:`planned_stages`);
    ``eval_examples``: examples one evaluation predicts, summed over its tasks and splits; ``cells``: records. The
    training stage in progress also holds its resume state (weights and optimiser moments) until it finishes.

    >>> fmt_bytes(estimate_bytes(24_000, checkpoints=11, evaluations=10, eval_examples=4_800, cells=5))
    '1.6 MB'
    """
    return (checkpoints * (model_bytes + ENTRY_BYTES) + evaluations * (eval_examples * PREDICTION_BYTES + ENTRY_BYTES)
            + cells * RECORD_BYTES + RESUME_FACTOR * model_bytes)


def check_free_space(folder: Path, needed: int) -> str | None:
    """Compare the free space under ``folder`` (the results dir or a suite's store) with ``needed`` bytes (from
    :func:`estimate_bytes`) before training. When short, warn in one line and return the message (else None); a
    later out-of-space error quotes the estimate either way."""
    folder = Path(folder).absolute()
    _PLANNED[str(folder)] = int(needed)
    free = free_bytes(folder)
    if free is None or free >= needed:
        return None
    message = (f"{folder} has {fmt_bytes(free)} free and this run needs about {fmt_bytes(needed)} for its "
               f"checkpoints and predictions; it stops with a message when the disk fills (finished cells are kept). "
               f"Free space or give results_dir= another disk")
    warnings.warn(message, StoreWarning, stacklevel=2)
    return message


# ---------------------------------------------------------------------------------------------------- provenance
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
