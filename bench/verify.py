"""``python -m bench verify [suite=…] [results_dir=…] [deep=true] [repair=true]``: check a results store, like
``git fsck``.

Every stage entry (``stages/<stage>/<key>/``) and cell (``cells/<strategy>/<cell>/``) is checked: its marker parses
and matches its own hash, every file it covers has its recorded size (``deep=true``: and its blake2b hash, a full
read), safetensors headers describe their files, the marker belongs to its folder, a record's schema is one this
bench reads, and the stages a record was made from are present and sound. It also lists what killed runs left
(temporary files of dead processes, entries without a marker) and entries whose lock a running process holds
(skipped: a lock is an ``flock``, released by the kernel when its holder dies, so it cannot go stale).

One table, then exit 1 when something is damaged, 0 when not. ``repair=true`` moves each damaged entry, and every
record made from a damaged or missing stage, to ``<suite>/quarantine/`` (nothing is deleted but dead processes'
temporary files), so the next ``bench run`` of the same command recomputes exactly those; exit 0 once all is
repaired. What the store promises: docs/store.md.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from bench.errors import BenchError
from bench.store import (
    INTEGRITY,
    QUARANTINE,
    QUARANTINE_NOTE,
    RECORD,
    STAGE_MARKER,
    entry_problem,
    load_marker,
    marker_of,
    orphan_temp_files,
    quarantine,
    record_stages,
    store_writes,
)

OPTIONS = ("suite", "results_dir", "deep", "repair")


@dataclass
class Finding:
    """One line of the table: an entry (relative to the results dir), its status, and why."""

    status: str  # damaged | missing stage | repaired | incomplete | in use | orphan file | note
    entry: str
    problem: str
    damage: bool = False  # counts towards exit 1 until repaired
    seen: tuple[int, int] | None = field(default=None, repr=False)  # the marker's (mtime, size) when judged


def _stamp(marker: Path) -> tuple[int, int] | None:
    try:
        st = marker.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


@dataclass
class Verdict:
    """What one walk over a store found."""

    findings: list[Finding] = field(default_factory=list)
    stages: int = 0
    cells: int = 0
    unsealed: int = 0  # sound entries whose markers predate sealing (no sizes or hashes to compare)
    quarantined: int = 0  # entries already in quarantine (moved aside by runs or earlier repairs)

    @property
    def damaged(self) -> list[Finding]:
        return [f for f in self.findings if f.damage]


def lock_held(folder: Path) -> bool:
    """Whether a running process holds the entry's lock. Probed with a non-blocking ``flock`` on the existing lock
    file opened read-only, so checking never creates a file (a read-only store can be verified)."""
    path = Path(folder) / ".lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _folder_problem(folder: Path, data: dict[str, Any], suite: str) -> str | None:
    """A sound marker in the wrong place, or a record this bench cannot read."""
    marker = marker_of(folder)
    if marker == STAGE_MARKER:
        if data.get("key") not in (None, folder.name):
            return f"{marker} belongs to key {data.get('key')!r}, not to this folder"
        if data.get("stage") not in (None, folder.parent.name):
            return f"{marker} belongs to stage {data.get('stage')!r}, not {folder.parent.name!r}"
        return None
    from bench.record import SCHEMA_VERSION

    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= SCHEMA_VERSION:
        return f"{RECORD} has schema_version {version!r}; this bench reads 1 to {SCHEMA_VERSION}"
    if data.get("suite") not in (None, suite):
        return f"{RECORD} belongs to suite {data.get('suite')!r}, not {suite!r}"
    if data.get("cell") not in (None, folder.name) or data.get("strategy") not in (None, folder.parent.name):
        return f"{RECORD} belongs to {data.get('strategy')}/{data.get('cell')}, not to this folder"
    if data.get("status", "complete") != "complete":
        return f"{RECORD} has status {data.get('status')!r}"
    return None


def _rel(path: Path, base: Path) -> str:
    return Path(path).relative_to(base).as_posix()


def _check_entry(folder: Path, suite: str, deep: bool, verdict: Verdict, base: Path) -> tuple[bool, dict | None]:
    """Check one entry; returns (sound, its parsed marker when sound). Entries in use or unfinished are listed,
    not judged."""
    for tmp in orphan_temp_files(folder):
        verdict.findings.append(Finding("orphan file", _rel(tmp, base), "left half-written by a process that died"))
    if lock_held(folder):
        verdict.findings.append(Finding("in use", _rel(folder, base), "a running process holds its lock; skipped"))
        return True, None
    marker = marker_of(folder)
    if not (folder / marker).exists():
        if any(p.name != ".lock" for p in folder.iterdir()):  # an emptied (quarantined) entry is not listed
            verdict.findings.append(Finding("incomplete", _rel(folder, base), f"no {marker}: a run stopped while "
                                            "computing it; rerunning its command resumes or recomputes it"))
        return True, None
    data, problem = load_marker(folder, marker)
    problem = problem or entry_problem(folder, marker, deep, data=data) or _folder_problem(folder, data, suite)
    if problem:
        verdict.findings.append(Finding("damaged", _rel(folder, base), problem, damage=True,
                                        seen=_stamp(folder / marker)))
        return False, None
    if data.get(INTEGRITY) is None:
        verdict.unsealed += 1
    return True, data


def verify_suite(root: Path, deep: bool = False, repair: bool = False, verdict: Verdict | None = None,
                 base: Path | None = None) -> Verdict:
    """Walk one suite's store (``results/<suite>``), adding what it finds to ``verdict``; with ``repair``, move the
    damaged entries and the records made from damaged or missing stages to quarantine."""
    verdict = verdict or Verdict()
    root = Path(root)
    base = base or root.parent
    damaged_stages: set[tuple[str, str]] = set()
    for folder in sorted(p for p in root.glob("stages/*/*") if p.is_dir()):
        verdict.stages += 1
        ok, _ = _check_entry(folder, root.name, deep, verdict, base)
        if not ok:
            damaged_stages.add((folder.parent.name, folder.name))
    for folder in sorted(p for p in root.glob("cells/*/*") if p.is_dir()):
        verdict.cells += 1
        ok, data = _check_entry(folder, root.name, deep, verdict, base)
        if data is not None:
            problem = _stage_problem(root, data, damaged_stages)
            if problem:
                verdict.findings.append(Finding("missing stage", _rel(folder, base), problem, damage=True,
                                                seen=_stamp(folder / RECORD)))
    for tmp in orphan_temp_files(root / "cache") if (root / "cache").is_dir() else []:
        verdict.findings.append(Finding("orphan file", _rel(tmp, base), "left half-written by a process that died"))
    quarantined = root / QUARANTINE
    verdict.quarantined += sum(1 for _ in quarantined.rglob(QUARANTINE_NOTE)) if quarantined.is_dir() else 0
    if repair:
        _repair(verdict, base)
    return verdict


def _stage_problem(root: Path, data: dict[str, Any], damaged: set[tuple[str, str]]) -> str | None:
    """Why a sound record cannot be trusted for lack of a stage: one it was made from is damaged, or its
    predictions (what the report's intervals need) live in a stage that is gone. A missing stage the record only
    names (a strategy may discard an intermediate one) is not a problem."""
    predictions = {p for row in data.get("rows", {}).values() if isinstance(row, dict)
                   for split in (row.get("predictions") or {}).values() if isinstance(split, dict)
                   for p in split.values()}
    for stage, key in record_stages(data):
        if (stage, key) in damaged:
            return f"made from the damaged stage {stage}/{key}"
        if not (root / "stages" / stage / key / STAGE_MARKER).exists():
            if any(str(p).startswith(f"stages/{stage}/{key}/") for p in predictions):
                return f"its predictions are in stage {stage}/{key}, which is missing"
    return None


def _repair(verdict: Verdict, base: Path) -> None:
    """Quarantine every damaged entry (under its lock, and only if its marker is still the one judged: a run may
    have healed it meanwhile) and remove dead processes' temporary files."""
    for finding in verdict.findings:
        path = base / finding.entry
        if finding.status == "orphan file":
            with store_writes(path):
                path.unlink(missing_ok=True)
            finding.status, finding.problem = "repaired", f"removed: {finding.problem}"
            continue
        if not finding.damage:
            continue
        try:
            with store_writes(path), FileLock(str(path / ".lock"), timeout=0):
                if _stamp(path / marker_of(path)) != finding.seen:
                    finding.problem += " (rewritten since it was checked: left alone; run verify again)"
                    continue
                dest = quarantine(path, finding.problem)
                finding.problem += f"; moved to {dest.relative_to(base).as_posix()}, rerun its command"
                finding.status, finding.damage = "repaired", False
        except Timeout:
            finding.problem += " (in use: not moved; run verify again when the run ends)"


def verify(results_dir: Path, suite: str | None = None, deep: bool = False, repair: bool = False) -> Verdict:
    """Check one suite's store, or every suite under ``results_dir`` when ``suite`` is None."""
    results_dir = Path(results_dir)
    if suite is not None:
        from bench.suites import stored_suite

        roots = [results_dir / stored_suite(suite, results_dir, records=False)]  # a name or a suite YAML's path
    else:
        roots = sorted(p for p in results_dir.iterdir() if (p / "stages").is_dir() or (p / "cells").is_dir()) \
            if results_dir.is_dir() else []
        if not roots:
            raise BenchError(f"no suite stores under {results_dir} (folders with stages/ or cells/); give "
                             "results_dir= the folder `bench run` wrote to")
    verdict = Verdict()
    for root in roots:
        verify_suite(root, deep, repair, verdict, base=results_dir)
    return verdict


def verify_command(opts: dict[str, Any]) -> int:
    """CLI entry: print one table of findings and a summary; exit 1 while something is damaged, else 0."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from bench.overrides import as_bool

    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise BenchError(f"verify takes {', '.join(f'{k}=' for k in OPTIONS)}, not {unknown[0]!r}")
    results_dir = Path(str(opts.get("results_dir") or "results"))
    suite = str(opts["suite"]) if opts.get("suite") else None
    deep, repair = as_bool(opts, "deep", False), as_bool(opts, "repair", False)
    verdict = verify(results_dir, suite, deep, repair)
    what = "sizes, headers and hashes" if deep else "markers, sizes and headers (deep=true also reads every hash)"
    title = f"{results_dir}: {verdict.stages} stage(s) and {verdict.cells} cell(s) checked: {what}"
    console = Console(width=max(160, Console().width), soft_wrap=True)
    if verdict.findings:
        table = Table(title=escape(title), title_justify="left")
        for column in ("status", "entry", "problem"):
            table.add_column(column, overflow="fold")
        for f in verdict.findings:
            style = "red" if f.damage else "green" if f.status == "repaired" else ""
            table.add_row(f"[{style}]{f.status}[/]" if style else f.status, escape(f.entry), escape(f.problem))
        console.print(table, soft_wrap=False)
    else:
        console.print(escape(title), highlight=False)
    notes = []
    if verdict.unsealed:
        notes.append(f"{verdict.unsealed} sound entr{'y' if verdict.unsealed == 1 else 'ies'} written before markers "
                     "recorded sizes and hashes (checked by parsing only; accepted as they are)")
    if verdict.quarantined:
        n = verdict.quarantined
        notes.append(f"{n} entr{'y' if n == 1 else 'ies'} in quarantine, moved aside "
                     f"by runs or repairs (<suite>/{QUARANTINE}/; delete them once you no longer need them)")
    for note in notes:
        console.print(f"note: {note}", highlight=False)
    damaged = verdict.damaged
    target = f" suite={suite}" if suite else ""
    where = f" results_dir={results_dir}" if str(results_dir) != "results" else ""
    if damaged:
        console.print(f"{len(damaged)} damaged: `python -m bench verify{target}{where} repair=true` moves them to "
                      "quarantine; rerunning their `bench run` command then recomputes exactly them", highlight=False)
        return 1
    repaired = [f for f in verdict.findings if f.status == "repaired"]
    if repaired:
        console.print(f"repaired {len(repaired)}: rerun the commands that made them to recompute what was moved",
                      highlight=False)
    else:
        console.print("clean: nothing damaged", highlight=False)
    return 0
