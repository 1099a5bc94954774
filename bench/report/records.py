"""Load and validate the ``record.json`` files a suite's finished cells leave (schema in docs/records.md).

Row naming rule (one leaderboard row per *variant*):

* a record's ``rows`` dict names the variants its strategy produced (``fuse_then_joint`` gives ``fused`` and
  ``fuse_then_joint``);
* when the record's ``label`` carries parameters (``fuse_then_joint[fusion=ties]``), that bracket suffix is appended
  to every row name that has none of its own: ``fused[fusion=ties]``, ``fuse_then_joint[fusion=ties]``;
* a custom label (``label=NAME`` on the command line) replaces the strategy's own row name: ``NAME``;
* a row is *one configuration*: records of one variant name whose configurations differ (``config_fingerprint``,
  or for schema-1 records their ``budget`` + ``params``; or whose data fingerprints differ) become separate rows, the
  differing configuration keys appended in the brackets: ``naive_mtl[train.epochs=3]``, ``naive_mtl[train.epochs=2]``
  (dotted keys of ``config`` without the leading ``suite.`` / ``params.``, each once, spelled as on the command
  line: ``budget.match=samples``, :func:`short_key`), never one mixed row;
* a row that two configurations computed identically (the same stages and test metrics, seed by seed) is one row
  (:func:`merge_unchanged`): a re-run that changed nothing it depends on does not list it twice;
* the ``separate`` strategy's ``separate`` rows are the Δm% baselines: a row's baseline is the one with the same data
  and budget fingerprints (:mod:`bench.report.leaderboard`).

Records are read and validated by the typed models of :mod:`bench.record` (schema 1 is migrated there, a newer
schema refused); schema 2 adds the configuration, its fingerprints, per-row budgets, stage provenance and
per-example predictions (what intervals and tests need); schema 3 renames the budgets (``train``, ``spent``) and
lets each row describe its style. A row made with a fuse stage may carry a ``fusion`` object (method, params,
``transductive``, learned ``coefficients``), read by :func:`bench.report.frames.fusion_coefficients` and
:func:`bench.report.frames.is_transductive`; the long tables of :mod:`bench.report.frames` are re-exported here.

A row never mixes plug-in versions: the newest record is kept per (label, configuration, data, plug-in source
hashes, seed), and of one (label, configuration, data) only the newest plug-in versions are reported
(:func:`one_plugin_version`; the leaderboard notes the seeds left out).

Corrupted, foreign or newer-schema files are skipped with a :class:`RecordWarning` naming the file and the reason;
an empty result is a :class:`~bench.errors.BenchError` that says which command produces records.
"""

from __future__ import annotations

import json
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.config import BASELINE_STRATEGY
from bench.errors import BenchError, BenchWarning
from bench.record import SCHEMA_VERSION, Record, base_strategy, label_suffix, variant_name
from bench.report.frames import (  # noqa: F401  (the tables of the records: imported from here by check, tests)
    BUDGET_FIELDS,
    PROVENANCE_KEYS,
    TELEMETRY_KEYS,
    budget_frame,
    fusion_coefficients,
    is_transductive,
    metrics_frame,
    per_label,
    task_specs,
    telemetry_frame,
    trajectories,
)
from bench.report.style import Styles
from bench.rowid import RowId
from bench.store import RECORD, load_marker

__all__ = ["SCHEMA_VERSION", "Record", "base_strategy", "label_suffix", "variant_name"]

BASELINE_VARIANT = BASELINE_STRATEGY  # the baseline strategy's own row is the Δm% reference


class RecordWarning(BenchWarning):
    """A record file was skipped (unreadable, invalid, from a newer schema, or from another suite)."""


def cells_dir(results_dir: Path | str, suite: str) -> Path:
    return Path(results_dir) / suite / "cells"


def read_record(path: Path, suite: str) -> Record:
    """Read and validate one record; raises ValueError with the reason when it is unusable."""
    try:
        return Record.read(path, suite)
    except BenchError as e:
        raise ValueError(str(e)) from None


def _created(record: Record) -> datetime:
    text = record.created
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def config_of(record: Record) -> dict:
    """Everything that decided a record's results except seed and label (schema 1: rebuilt by the migration)."""
    return record.config


def config_fingerprint(record: Record) -> str:
    return record.config_fingerprint


def budget_fingerprint(record: Record) -> str:
    """What a Δm% baseline must share with a row (schema 1: a hash of its ``budget``; no budget matching)."""
    return record.budget_fingerprint


def data_fingerprint(record: Record) -> str:
    return record.data_fingerprint


def latest_per_seed(records: list[Record]) -> list[Record]:
    """Keep the newest record (by ``created``) per (label, configuration, data, plug-in versions, seed); older
    re-runs are ignored.

    Records of one label with another configuration or data are *not* re-runs: they are kept (and become rows of
    their own, see :func:`assign_names`). Records made with another version of a user plug-in are kept apart too,
    for :func:`one_plugin_version` to choose between."""
    newest: dict[tuple, Record] = {}
    for record in records:
        key = (record.label, record.config_fingerprint, record.data_fingerprint, record.plugin_versions(), record.seed)
        if key not in newest or _created(record) >= _created(newest[key]):
            newest[key] = record
    return sorted(newest.values(), key=lambda r: (r.label, r.config_fingerprint, r.seed))


def one_plugin_version(records: list[Record]) -> tuple[list[Record], list[str]]:
    """A row never mixes versions of a plug-in: of the records of one (label, configuration, data), only those made
    with the newest plug-in versions (the group with the newest record) are kept. Returns the records kept, in their
    order, and one note per left-out group naming its seeds and the plug-ins that changed."""
    groups: dict[tuple, dict[tuple, list[Record]]] = {}
    for record in records:
        identity = (record.label, record.config_fingerprint, record.data_fingerprint)
        groups.setdefault(identity, {}).setdefault(record.plugin_versions(), []).append(record)
    dropped: set[int] = set()
    notes = []
    for (label, *_), by_version in groups.items():
        if len(by_version) < 2:
            continue
        newest = max(by_version, key=lambda v: max(_created(r) for r in by_version[v]))
        for version, old in by_version.items():
            if version == newest:
                continue
            dropped |= {id(r) for r in old}
            changed = sorted({k for k, _ in set(version) ^ set(newest)})
            seeds = ", ".join(str(s) for s in sorted({r.seed for r in old}))
            notes.append(f"{label}: seed(s) {seeds} made with an earlier version of {', '.join(changed)} left out "
                         f"(a row never mixes plug-in versions); rerun them to include them")
    return [r for r in records if id(r) not in dropped], notes


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"suite": {"train": {"epochs": 3}}}`` -> ``{"suite.train.epochs": 3}`` (lists stay leaves)."""
    if not isinstance(config, dict):
        return {prefix: config} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            out |= flatten(value, name)
        else:
            out[name] = value
    return out


# config keys that repeat another under an internal spelling: shown once, as the command line spells it
KEY_ALIASES = {"budget_match": "budget.match"}  # the top-level copy of suite.budget.match (bench.plan.Variant.config)


def short_key(key: str) -> str:
    """How a dotted config key is shown in a row name, spelled as on the command line: ``suite.train.epochs`` ->
    ``train.epochs``, ``params.fusion`` -> ``fusion``, ``budget_match`` -> ``budget.match``.

    >>> short_key("suite.budget.match"), short_key("budget_match"), short_key("params.fusion")
    ('budget.match', 'budget.match', 'fusion')
    """
    for prefix in ("suite.", "params."):
        if key.startswith(prefix):
            return key[len(prefix):]
    return KEY_ALIASES.get(key, key)


def format_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def config_differences(configs: dict[Any, dict]) -> dict[Any, list[str]]:
    """Per key of ``configs``: ``["train.epochs=3", ...]``, the keys (present in every config) whose values differ,
    each once under its command-line spelling (:func:`short_key`; a key stored twice is shown once).

    >>> a = {"suite": {"budget": {"match": "none"}}, "budget_match": "none"}
    >>> b = {"suite": {"budget": {"match": "samples"}}, "budget_match": "samples"}
    >>> config_differences({"a": a, "b": b})
    {'a': ['budget.match=none'], 'b': ['budget.match=samples']}
    """
    flats = {key: flatten(config) for key, config in configs.items()}
    first = next(iter(flats.values()), {})
    common = [k for k in first if all(k in f for f in flats.values())]
    differing = [k for k in common if len({json.dumps(f[k], sort_keys=True, default=str) for f in flats.values()}) > 1]
    shown = list({short_key(k): k for k in reversed(differing)}.items())[::-1]  # first of each spelling, in order
    return {key: [f"{name}={format_value(flat[k])}" for name, k in shown] for key, flat in flats.items()}


def with_suffix(name: str, parts: list[str]) -> str:
    """``("fused[fusion=ties]", ["train.epochs=3"])`` -> ``"fused[fusion=ties,train.epochs=3]"``."""
    return str(RowId.parse(name).with_params(parts)) if parts else name


def _computation(record: Record, row: str) -> tuple | None:
    """What decides a row's numbers: the keys of the stages it was made from and its test metrics (None when the
    record does not say: schema 1, or a row without stage provenance)."""
    r = record.rows[row]
    if not r.stages:
        return None
    return tuple(sorted(s.key for s in r.stages)), json.dumps(r.metrics.get("test"), sort_keys=True, default=str)


def merge_unchanged(records: list[Record]) -> list[Record]:
    """Rows that two runs computed identically are one row: of the rows of one variant name, configurations that
    differ only in keys the row's stages do not depend on (a ``budget.match=samples`` re-run of ``naive_mtl``, whose
    matched budget is its own) have, seed by seed, the same stage keys and the same test metrics. One configuration
    of each such set is kept (one whose budget has a Δm% baseline row, the newest of those) and the other records'
    copies of the row are left out, so the row is listed, counted and tested once. Δm% baseline rows are never
    merged: each budget keeps its own reference. Returns the records (copies where a row was left out; a record with
    no row left is dropped)."""
    groups: dict[str, dict[tuple[str, str], list[tuple[Record, str]]]] = {}
    for record in records:
        for row in record.rows:
            origin = variant_name(row, record.label, record.strategy)
            groups.setdefault(origin, {}).setdefault((record.config_fingerprint, record.data_fingerprint), []).append(
                (record, row))
    references = {(r.budget_fingerprint, r.data_fingerprint) for r in records for row in r.rows
                  if is_baseline_row(r, row)}
    drop: set[tuple[int, str]] = set()
    for by_identity in groups.values():
        if len(by_identity) < 2 or any(is_baseline_row(r, row) for items in by_identity.values() for r, row in items):
            continue
        same: dict[tuple, list[tuple[str, str]]] = {}
        for identity, items in by_identity.items():
            done = [(r.seed, _computation(r, row)) for r, row in items]
            if all(c is not None for _, c in done) and len({seed for seed, _ in done}) == len(done):
                same.setdefault((identity[1], tuple(sorted(done))), []).append(identity)
        preference = {identity: ((items[0][0].budget_fingerprint, identity[1]) in references,
                                 max(_created(r) for r, _ in items), identity)
                      for identity, items in by_identity.items()}
        for identities in same.values():
            if len(identities) < 2:
                continue
            keep = max(identities, key=preference.__getitem__)
            drop |= {(id(r), row) for identity in identities if identity != keep for r, row in by_identity[identity]}
    if not drop:
        return records
    out = []
    for record in records:
        rows = {k: v for k, v in record.rows.items() if (id(record), k) not in drop}
        if len(rows) == len(record.rows):
            out.append(record)
        elif rows:
            kept = record.model_copy(update={"rows": rows})
            kept._names, kept._origins = {}, {}
            out.append(kept)
    return out


def assign_names(records: list[Record]) -> list[Record]:
    """Give every (record, row) its leaderboard row name (:meth:`Record.variant` then returns it); returns the
    records, rows that two runs computed identically kept once (:func:`merge_unchanged`).

    One row per (variant name, configuration, data): when one variant name comes from several configurations, each
    gets the differing keys appended (module docstring); a difference the keys cannot show (a schema-1 record next to
    a schema-2 one, different data) gets ``schema=1`` / ``data=<fingerprint>`` / ``config=<fingerprint>``."""
    records = merge_unchanged(records)
    groups: dict[str, dict[tuple[str, str], list[tuple[Record, str]]]] = {}
    for record in records:
        for row in record.rows:
            origin = variant_name(row, record.label, record.strategy)
            identity = (record.config_fingerprint, record.data_fingerprint)
            groups.setdefault(origin, {}).setdefault(identity, []).append((record, row))
    for origin, by_identity in groups.items():
        names = {identity: origin for identity in by_identity}
        if len(by_identity) > 1:
            firsts = {identity: items[0][0] for identity, items in by_identity.items()}
            parts = config_differences({i: config_of(r) for i, r in firsts.items()})
            legacies = {r.legacy for r in firsts.values()}
            datas = {i[1] for i in firsts}
            for identity, record in firsts.items():
                if len(legacies) > 1 and record.legacy:
                    parts[identity].append("schema=1")
                if len(datas) > 1:
                    parts[identity].append(f"data={identity[1][:8] or 'none'}")
            names = {identity: with_suffix(origin, parts[identity]) for identity in by_identity}
            counts: dict[str, int] = {}
            for name in names.values():
                counts[name] = counts.get(name, 0) + 1
            for identity, name in names.items():
                if counts[name] > 1:  # the shown keys do not tell them apart: the fingerprint does
                    names[identity] = with_suffix(name, [f"config={identity[0][:8]}"])
        for identity, items in by_identity.items():
            for record, row in items:
                record._names[row] = names[identity]
                record._origins[row] = origin
    return records


def row_name(record: Record, row: str) -> str:
    """The leaderboard row name of ``row`` of ``record`` (after :func:`assign_names`; else the naming rule)."""
    return record.variant(row)


def row_origin(record: Record, row: str) -> str:
    """The row's name before any configuration suffix (the plain naming rule)."""
    return record._origins.get(row) or variant_name(row, record.label, record.strategy)


def is_baseline_row(record: Record, row: str) -> bool:
    """A Δm% baseline candidate: the baseline strategy's own row (``BASELINE_STRATEGY`` in bench.config)."""
    return record.strategy == BASELINE_STRATEGY and row == BASELINE_VARIANT


def load_records(results_dir: Path | str, suite: str, latest: bool = True,
                 plugin_dirs: list[str] | tuple[str, ...] = ()) -> list[Record]:
    """All usable records of ``suite`` (when ``latest``: the newest per (label, configuration, data, seed), of the
    newest plug-in versions, :func:`one_plugin_version`), named (:func:`assign_names`); what they say about their
    rows' order, colours and families is in the result's ``styles`` (:meth:`bench.report.style.Styles.of`; older
    records fall back to the plug-in files of ``plugin_dirs``, read without importing them).

    Unusable files are skipped with a :class:`RecordWarning` naming them. Raises BenchError when none is left.
    """
    root = cells_dir(results_dir, suite)
    records, skipped = [], []
    for path in sorted(root.glob("*/*/record.json")):
        damage = load_marker(path.parent, RECORD)[1]  # unreadable, or changed since it was sealed
        try:
            if damage:
                raise ValueError(damage)
            records.append(read_record(path, suite))
        except ValueError as exc:
            skipped.append(str(path))
            where = "" if Path(results_dir) == Path("results") else f" results_dir={results_dir}"
            fix = (f"; `python -m bench verify suite={suite}{where} repair=true` moves it aside, then rerunning "
                   "its `bench run` command recomputes it") if damage else ""
            warnings.warn(f"skipping record {path}: {exc}{fix}", RecordWarning, stacklevel=2)
    if not records:
        raise BenchError(
            f"no records for suite {suite!r} under {root}; "
            f"`python -m bench run suite={suite}` produces them"
        )
    left_out: list[str] = []
    if latest:
        records, left_out = one_plugin_version(latest_per_seed(records))
    records = assign_names(records)
    return Loaded(records, skipped, left_out, Styles.of(records, plugin_dirs))


class Loaded(list):
    """What :func:`load_records` returns: the records; in ``skipped`` the record files it could not use (the
    leaderboard's footnote counts them, so a damaged cell is never left out silently); in ``left_out`` a note per
    group of records made with an earlier version of a plug-in (:func:`one_plugin_version`); in ``styles`` the rows'
    order, colours and families (:class:`bench.report.style.Styles`)."""

    def __init__(self, records: list[Record], skipped: list[str], left_out: list[str] | None = None,
                 styles: Styles | None = None):
        super().__init__(records)
        self.skipped = list(skipped)
        self.left_out = list(left_out or [])
        self.styles = styles if styles is not None else Styles.of(records)
