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
per-example predictions (what intervals and tests need). A row made with a fuse stage may carry a ``fusion`` object
(method, params, ``transductive``, learned ``coefficients``), read by :func:`fusion_coefficients` and
:func:`is_transductive`.

Corrupted, foreign or newer-schema files are skipped with a :class:`RecordWarning` naming the file and the reason;
an empty result is a :class:`~bench.errors.BenchError` that says which command produces records.
"""

from __future__ import annotations

import json
import math
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from bench.config import BASELINE_STRATEGY
from bench.errors import BenchError, BenchWarning
from bench.record import SCHEMA_VERSION, Record, Row, base_strategy, label_suffix, variant_name
from bench.store import RECORD, load_marker

__all__ = ["SCHEMA_VERSION", "Record", "base_strategy", "label_suffix", "variant_name"]

BASELINE_VARIANT = BASELINE_STRATEGY  # the baseline strategy's own row is the Δm% reference
BUDGET_FIELDS = ("train_samples_seen", "optimizer_steps", "epochs")
TELEMETRY_KEYS = ("wall_time_s", "train_samples_per_s", "peak_memory_mb", "trainable_params")
# derived from the rows' stage provenance (bench/report/provenance.py; docs/records.md, "Cost columns")
PROVENANCE_KEYS = ("wall_own_s", "wall_shared_s", "deployed_params")


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
    """Keep the newest record (by ``created``) per (label, configuration, data, seed); older re-runs are ignored.

    Records of one label with another configuration or data are *not* re-runs: they are kept (and become rows of
    their own, see :func:`assign_names`)."""
    newest: dict[tuple, Record] = {}
    for record in records:
        key = (record.label, record.config_fingerprint, record.data_fingerprint, record.seed)
        if key not in newest or _created(record) >= _created(newest[key]):
            newest[key] = record
    return sorted(newest.values(), key=lambda r: (r.label, r.config_fingerprint, r.seed))


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
    if not parts:
        return name
    if name.endswith("]") and "[" in name:
        return name[:-1] + "," + ",".join(parts) + "]"
    return f"{name}[{','.join(parts)}]"


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
            schemas = {r.schema_version for r in firsts.values()}
            datas = {i[1] for i in firsts}
            for identity, record in firsts.items():
                if len(schemas) > 1 and record.schema_version == 1:
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


def load_records(results_dir: Path | str, suite: str, latest: bool = True) -> list[Record]:
    """All usable records of ``suite`` (the newest per (label, seed) when ``latest``).

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
    return Loaded(assign_names(latest_per_seed(records) if latest else records), skipped)


class Loaded(list):
    """What :func:`load_records` returns: the records, and in ``skipped`` the record files it could not use (the
    leaderboard's footnote counts them, so a damaged cell is never left out silently)."""

    def __init__(self, records: list[Record], skipped: list[str]):
        super().__init__(records)
        self.skipped = list(skipped)


def task_specs(records: list[Record]) -> dict[str, dict]:
    """Task name -> {"target", "primary", "metrics": {metric: direction}}, merged over records in order."""
    specs: dict[str, dict] = {}
    for record in records:
        for task, spec in record.tasks.items():
            merged = specs.setdefault(task, {"target": spec.target, "primary": None, "metrics": {}})
            merged["metrics"].update(spec.metrics)
            merged["primary"] = merged["primary"] or spec.primary
    return specs


def metrics_frame(records: list[Record]) -> pd.DataFrame:
    """Long table: one row per (variant, seed, split, task, metric) with the record's raw value."""
    rows = []
    for record in records:
        for name, row in record.rows.items():
            variant = record.variant(name)
            for split, tasks in row.metrics.items():
                for task, values in tasks.items():
                    for metric, value in values.items():
                        rows.append(
                            {"variant": variant, "label": record.label, "strategy": record.strategy,
                             "seed": record.seed, "split": split, "task": task, "metric": metric,
                             "value": float(value)}
                        )
    return pd.DataFrame(rows, columns=["variant", "label", "strategy", "seed", "split", "task", "metric", "value"])


def _number(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return math.nan


def telemetry_frame(records: list[Record], variants: list[str] | None = None) -> pd.DataFrame:
    """One row per (variant, seed) with the row's telemetry (missing numbers are NaN), and what its stage provenance
    adds (:mod:`bench.report.provenance`): ``wall_own_s`` / ``wall_shared_s`` (the wall time of the stages only this
    row uses / that another row of ``variants`` uses too; all rows when None) and ``deployed_params`` (the model(s)
    its test predictions come from). ``trainable_params`` is the record's: trained, summed over training stages."""
    from bench.report.provenance import deployed_params, wall_split

    rows = []
    entries = []
    for record in records:
        for name, row in record.rows.items():
            telemetry = row.telemetry
            entry = {"variant": record.variant(name), "label": record.label,
                     "seed": record.seed, "memory_kind": telemetry.memory_kind}
            entry.update({key: _number(getattr(telemetry, key, None)) for key in TELEMETRY_KEYS})
            entry["deployed_params"] = deployed_params(record, row)
            rows.append(entry)
            entries.append((entry["variant"], record, row))
    chosen = set(variants) if variants is not None else None
    split = wall_split([e for e in entries if chosen is None or e[0] in chosen])
    for entry in rows:
        entry["wall_own_s"], entry["wall_shared_s"] = split.get((entry["variant"], entry["seed"]), (math.nan,) * 2)
    columns = ["variant", "label", "seed", "memory_kind", *TELEMETRY_KEYS, *PROVENANCE_KEYS]
    return pd.DataFrame(rows, columns=columns)


def trajectories(records: list[Record]) -> dict[str, list[dict]]:
    """Variant -> list of non-empty ``trajectories`` dicts (one per seed, with ``seed`` and the weighting's
    ``weights_label`` added). A row's own ``trajectories`` are those of its last training stage; ``stages`` adds the
    curves of every training stage it used, read from the store (:func:`bench.report.provenance.stage_curves`: each
    fine-tune of a ``separate`` row, the fine-tunes and the joint phase of ``fuse_then_joint``)."""
    from bench.report.provenance import stage_curves

    out: dict[str, list[dict]] = {}
    for record in records:
        for name, row in record.rows.items():
            curves = stage_curves(record, row)
            if row.trajectories.get("step") or curves:
                out.setdefault(record.variant(name), []).append(
                    {**row.trajectories, "seed": record.seed, "weights_label": row.weights_label, "stages": curves}
                )
    return out


def is_transductive(row: Row) -> bool:
    """Whether a record row's fusion coefficients were adapted on unlabeled *test* inputs (``fusion.transductive``):
    such rows are not comparable to inductive ones, and the leaderboard marks them."""
    return row.fusion is not None and row.fusion.transductive


def fusion_coefficients(records: list[Record]) -> dict[str, list[dict]]:
    """Variant -> list of learned fusion coefficient sets, one per seed, for rows whose ``fusion`` has
    ``coefficients``: ``{"seed", "method", "transductive", "layers", "tasks", "values"}`` (``values``: layers × tasks,
    ``layers == ["all"]`` for a task-wise method). Rows that share one fuse stage (a strategy's fused row and its
    fine-tuned row) carry the same coefficients; :mod:`bench.report.plots` draws each set once."""
    out: dict[str, list[dict]] = {}
    for record in records:
        for name, row in record.rows.items():
            if row.fusion is None or row.fusion.coefficients is None:
                continue
            c = row.fusion.coefficients
            out.setdefault(record.variant(name), []).append(
                {"seed": record.seed, "method": row.fusion.method, "transductive": row.fusion.transductive,
                 "layers": list(c.layers), "tasks": list(c.tasks), "values": [[float(v) for v in r] for r in c.values]}
            )
    return out


def budget_frame(records: list[Record]) -> pd.DataFrame:
    """One row per (variant, seed) with the row's training budget (schema 2; NaN for schema-1 records)."""
    rows = []
    for record in records:
        for name, row in record.rows.items():
            budget = row.budget or {}
            rows.append({"variant": record.variant(name), "seed": record.seed,
                         **{key: _number(budget.get(key)) for key in BUDGET_FIELDS}})
    return pd.DataFrame(rows, columns=["variant", "seed", *BUDGET_FIELDS])
