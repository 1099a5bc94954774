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
  (dotted keys of ``config`` without the leading ``suite.`` / ``params.``), never one mixed row;
* the ``separate`` strategy's ``separate`` rows are the Δm% baselines: a row's baseline is the one with the same data
  and budget fingerprints (:mod:`bench.report.leaderboard`).

Schema 1 and 2 records are both read (docs/records.md); schema 2 adds the configuration, its fingerprints, per-row
budgets, stage provenance and per-example predictions (what intervals and tests need). A row made with a fuse stage
may carry a ``fusion`` object (method, params, ``transductive``, learned ``coefficients``), read by
:func:`fusion_coefficients` and :func:`is_transductive`.

Corrupted or foreign files are skipped with a :class:`RecordWarning` naming the file; an empty result is a
:class:`~bench.errors.BenchError` that says which command produces records.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from bench.errors import BenchError

SCHEMA_VERSION = 2  # the newest record schema this reader knows
SCHEMA_VERSIONS = (1, 2)
BASELINE_VARIANT = "separate"
BASELINE_STRATEGY = "separate"
BUDGET_FIELDS = ("train_samples_seen", "optimizer_steps", "epochs")
REQUIRED_KEYS = ("schema_version", "suite", "strategy", "label", "seed", "tasks", "rows")
TELEMETRY_KEYS = ("wall_time_s", "train_samples_per_s", "peak_memory_mb", "trainable_params")


class RecordWarning(UserWarning):
    """A record file was skipped (unreadable, invalid, or from another suite)."""


def cells_dir(results_dir: Path | str, suite: str) -> Path:
    return Path(results_dir) / suite / "cells"


def label_suffix(label: str) -> str:
    """``'fuse_then_joint[fusion=ties]'`` -> ``'[fusion=ties]'``; ``'naive_mtl'`` -> ``''``."""
    start = label.find("[")
    return label[start:] if start >= 0 and label.endswith("]") else ""


def variant_name(row: str, label: str, strategy: str | None = None) -> str:
    """The leaderboard row name of ``row`` produced by a record labelled ``label`` (module docstring).

    A custom label (``label=naive_mtl_fp32``, not the strategy name plus parameters) names the strategy's own row
    and tags its other rows: ``naive_mtl_fp32``, ``fused[my_label]``."""
    if strategy is not None and label != strategy and not label.startswith(strategy + "["):
        return label if row == strategy else f"{row}[{label}]"
    return row if "[" in row else row + label_suffix(label)


def base_strategy(variant: str) -> str:
    """``'fused[fusion=ties]'`` -> ``'fused'``: what picks a variant's colour and sort position."""
    return variant.split("[", 1)[0]


def _problem(data: Any, suite: str) -> str | None:
    """Why ``data`` is not a usable record of ``suite``, or None when it is."""
    if not isinstance(data, dict):
        return "not a JSON object"
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        return f"missing keys {', '.join(missing)}"
    if data["schema_version"] not in SCHEMA_VERSIONS:
        return f"schema_version {data['schema_version']!r}, expected one of {', '.join(map(str, SCHEMA_VERSIONS))}"
    if data["suite"] != suite:
        return f"belongs to suite {data['suite']!r}, not {suite!r}"
    if data.get("status", "complete") != "complete":
        return f"status {data.get('status')!r}, not 'complete'"
    if not isinstance(data["tasks"], dict) or not data["tasks"]:
        return "no tasks"
    for task, spec in data["tasks"].items():
        if not isinstance(spec, dict) or not isinstance(spec.get("metrics"), dict):
            return f"task {task!r} has no metrics"
        if any(d not in ("max", "min") for d in spec["metrics"].values()):
            return f"task {task!r} has a metric direction other than 'max'/'min'"
    if not isinstance(data["rows"], dict) or not data["rows"]:
        return "no rows"
    for name, row in data["rows"].items():
        metrics = row.get("metrics") if isinstance(row, dict) else None
        if not isinstance(metrics, dict) or not isinstance(metrics.get("test"), dict):
            return f"row {name!r} has no test metrics"
        for split in metrics.values():
            for task, values in split.items():
                if not isinstance(values, dict):
                    return f"row {name!r}: metrics of task {task!r} are not an object"
                for metric, value in values.items():
                    if not isinstance(value, (int, float)) or isinstance(value, bool):
                        return f"row {name!r}: {task}/{metric} is not a number"
        problem = _row_v2_problem(row) or fusion_problem(row.get("fusion"))
        if problem:
            return f"row {name!r}: {problem}"
    if data["schema_version"] >= 2:
        if not isinstance(data.get("config"), dict):
            return "schema 2 record without a 'config' object"
        for key in ("config_fingerprint", "budget_fingerprint"):
            if not isinstance(data.get(key), str) or not data[key]:
                return f"schema 2 record without {key!r}"
    return None


def _row_v2_problem(row: dict) -> str | None:
    """Why the schema-2 parts of a row (predictions, budget, stages) are malformed, or None."""
    predictions = row.get("predictions")
    if predictions is not None:
        if not isinstance(predictions, dict) or not all(isinstance(t, dict) for t in predictions.values()):
            return "'predictions' is not an object {split: {task: path}}"
        if not all(isinstance(p, str) for t in predictions.values() for p in t.values()):
            return "a predictions path is not a string"
    budget = row.get("budget")
    if budget is not None and not isinstance(budget, dict):
        return "'budget' is not an object"
    if row.get("stages") is not None and not isinstance(row["stages"], list):
        return "'stages' is not a list"
    return None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fusion_problem(fusion: Any) -> str | None:
    """Why a row's optional ``fusion`` object (docs/records.md) is malformed, or None (also when it is absent).

    Light checks only: the shapes the report relies on. ``coefficients.values`` must be ``len(layers)`` lists of
    ``len(tasks)`` finite numbers, because the heatmap indexes it as a layers × tasks matrix."""
    if fusion is None:
        return None
    if not isinstance(fusion, dict):
        return "'fusion' is not an object"
    if not isinstance(fusion.get("method"), str) or not fusion["method"]:
        return "'fusion' has no 'method' name"
    if fusion.get("params") is not None and not isinstance(fusion["params"], dict):
        return "'fusion.params' is not an object"
    if fusion.get("transductive") is not None and not isinstance(fusion["transductive"], bool):
        return "'fusion.transductive' is not true/false"
    coefficients = fusion.get("coefficients")
    if coefficients is None:
        return None
    if not isinstance(coefficients, dict):
        return "'fusion.coefficients' is not an object {layers, tasks, values}"
    for key in ("layers", "tasks"):
        names = coefficients.get(key)
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            return f"'fusion.coefficients.{key}' is not a non-empty list of names"
    layers, tasks, values = coefficients["layers"], coefficients["tasks"], coefficients.get("values")
    if not isinstance(values, list) or len(values) != len(layers):
        got = f"{len(values)} rows" if isinstance(values, list) else "not a list"
        return f"'fusion.coefficients.values' is {got}, expected {len(layers)} (one per layer)"
    for layer, row in zip(layers, values):
        if not isinstance(row, list) or len(row) != len(tasks):
            return (f"'fusion.coefficients.values' row of layer {layer!r} does not have {len(tasks)} numbers "
                    f"(one per task)")
        if not all(_finite(v) for v in row):
            return f"'fusion.coefficients.values' row of layer {layer!r} has a value that is not a finite number"
    return None


def read_record(path: Path, suite: str) -> dict:
    """Read and validate one record; raises ValueError with the reason when it is unusable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"unreadable ({type(exc).__name__}: {exc})") from None
    problem = _problem(data, suite)
    if problem:
        raise ValueError(problem)
    data["_path"] = str(path)
    return data


def _created(record: dict) -> datetime:
    text = str(record.get("created") or "")
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_of(record: dict) -> dict:
    """Everything that decided a record's results except seed and label (schema 1: its budget, strategy, params)."""
    if record.get("schema_version", 1) >= 2 and isinstance(record.get("config"), dict):
        return record["config"]
    return {"suite": {"train": record.get("budget") or {}}, "strategy": record.get("strategy"),
            "params": record.get("params") or {}}


def config_fingerprint(record: dict) -> str:
    """The record's ``config_fingerprint``; for schema-1 records a hash of their ``budget`` and ``params``."""
    if record.get("schema_version", 1) >= 2 and record.get("config_fingerprint"):
        return str(record["config_fingerprint"])
    return "v1-" + _hash({"budget": record.get("budget") or {}, "params": record.get("params") or {}})


def budget_fingerprint(record: dict) -> str:
    """What a Δm% baseline must share with a row (schema 1: a hash of the ``budget`` dict; no budget matching)."""
    if record.get("schema_version", 1) >= 2 and record.get("budget_fingerprint"):
        return str(record["budget_fingerprint"])
    return "v1-" + _hash({"budget": record.get("budget") or {}})


def data_fingerprint(record: dict) -> str:
    return str(record.get("data_fingerprint") or "")


def latest_per_seed(records: list[dict]) -> list[dict]:
    """Keep the newest record (by ``created``) per (label, configuration, data, seed); older re-runs are ignored.

    Records of one label with another configuration or data are *not* re-runs: they are kept (and become rows of
    their own, see :func:`assign_names`)."""
    newest: dict[tuple, dict] = {}
    for record in records:
        key = (record["label"], config_fingerprint(record), data_fingerprint(record), record["seed"])
        if key not in newest or _created(record) >= _created(newest[key]):
            newest[key] = record
    return sorted(newest.values(), key=lambda r: (r["label"], config_fingerprint(r), r["seed"]))


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


def short_key(key: str) -> str:
    """How a dotted config key is shown in a row name: ``suite.train.epochs`` -> ``train.epochs``,
    ``params.fusion`` -> ``fusion``."""
    for prefix in ("suite.", "params."):
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def format_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def config_differences(configs: dict[Any, dict]) -> dict[Any, list[str]]:
    """Per key of ``configs``: ``["train.epochs=3", ...]``, the keys (present in every config) whose values differ."""
    flats = {key: flatten(config) for key, config in configs.items()}
    first = next(iter(flats.values()), {})
    common = [k for k in first if all(k in f for f in flats.values())]
    differing = [k for k in common if len({json.dumps(f[k], sort_keys=True, default=str) for f in flats.values()}) > 1]
    return {key: [f"{short_key(k)}={format_value(flat[k])}" for k in differing] for key, flat in flats.items()}


def with_suffix(name: str, parts: list[str]) -> str:
    """``("fused[fusion=ties]", ["train.epochs=3"])`` -> ``"fused[fusion=ties,train.epochs=3]"``."""
    if not parts:
        return name
    if name.endswith("]") and "[" in name:
        return name[:-1] + "," + ",".join(parts) + "]"
    return f"{name}[{','.join(parts)}]"


def assign_names(records: list[dict]) -> list[dict]:
    """Give every (record, row) its leaderboard row name, stored in ``record["_names"][row]``.

    One row per (variant name, configuration, data): when one variant name comes from several configurations, each
    gets the differing keys appended (module docstring); a difference the keys cannot show (a schema-1 record next to
    a schema-2 one, different data) gets ``schema=1`` / ``data=<fingerprint>`` / ``config=<fingerprint>``."""
    groups: dict[str, dict[tuple[str, str], list[tuple[dict, str]]]] = {}
    for record in records:
        for row in record["rows"]:
            origin = variant_name(row, record["label"], record["strategy"])
            identity = (config_fingerprint(record), data_fingerprint(record))
            groups.setdefault(origin, {}).setdefault(identity, []).append((record, row))
    for origin, by_identity in groups.items():
        names = {identity: origin for identity in by_identity}
        if len(by_identity) > 1:
            firsts = {identity: items[0][0] for identity, items in by_identity.items()}
            parts = config_differences({i: config_of(r) for i, r in firsts.items()})
            schemas = {r.get("schema_version", 1) for r in firsts.values()}
            datas = {i[1] for i in firsts}
            for identity, record in firsts.items():
                if len(schemas) > 1 and record.get("schema_version", 1) == 1:
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
                record.setdefault("_names", {})[row] = names[identity]
                record.setdefault("_origins", {})[row] = origin
    return records


def row_name(record: dict, row: str) -> str:
    """The leaderboard row name of ``row`` of ``record`` (after :func:`assign_names`; else the naming rule)."""
    return record.get("_names", {}).get(row) or variant_name(row, record["label"], record["strategy"])


def row_origin(record: dict, row: str) -> str:
    """The row's name before any configuration suffix (the plain naming rule)."""
    return record.get("_origins", {}).get(row) or variant_name(row, record["label"], record["strategy"])


def is_baseline_row(record: dict, row: str) -> bool:
    """A Δm% baseline candidate: the ``separate`` row of the ``separate`` strategy."""
    return record["strategy"] == BASELINE_STRATEGY and row == BASELINE_VARIANT


def load_records(results_dir: Path | str, suite: str, latest: bool = True) -> list[dict]:
    """All usable records of ``suite`` (the newest per (label, seed) when ``latest``).

    Unusable files are skipped with a :class:`RecordWarning` naming them. Raises BenchError when none is left.
    """
    root = cells_dir(results_dir, suite)
    records = []
    for path in sorted(root.glob("*/*/record.json")):
        try:
            records.append(read_record(path, suite))
        except ValueError as exc:
            warnings.warn(f"skipping record {path}: {exc}", RecordWarning, stacklevel=2)
    if not records:
        raise BenchError(
            f"no records for suite {suite!r} under {root}; "
            f"`python -m bench run suite={suite}` produces them"
        )
    return assign_names(latest_per_seed(records) if latest else records)


def task_specs(records: list[dict]) -> dict[str, dict]:
    """Task name -> {"target", "primary", "metrics": {metric: direction}}, merged over records in order."""
    specs: dict[str, dict] = {}
    for record in records:
        for task, spec in record["tasks"].items():
            merged = specs.setdefault(task, {"target": spec.get("target"), "primary": None, "metrics": {}})
            merged["metrics"].update(spec["metrics"])
            merged["primary"] = merged["primary"] or spec.get("primary") or next(iter(spec["metrics"]))
    return specs


def metrics_frame(records: list[dict]) -> pd.DataFrame:
    """Long table: one row per (variant, seed, split, task, metric) with the record's raw value."""
    rows = []
    for record in records:
        for name, row in record["rows"].items():
            variant = row_name(record, name)
            for split, tasks in row["metrics"].items():
                for task, values in tasks.items():
                    for metric, value in values.items():
                        rows.append(
                            {"variant": variant, "label": record["label"], "strategy": record["strategy"],
                             "seed": record["seed"], "split": split, "task": task, "metric": metric,
                             "value": float(value)}
                        )
    return pd.DataFrame(rows, columns=["variant", "label", "strategy", "seed", "split", "task", "metric", "value"])


def _number(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return math.nan


def telemetry_frame(records: list[dict]) -> pd.DataFrame:
    """One row per (variant, seed) with the row's telemetry (missing numbers are NaN)."""
    rows = []
    for record in records:
        for name, row in record["rows"].items():
            telemetry = row.get("telemetry") or {}
            entry = {"variant": row_name(record, name), "label": record["label"],
                     "seed": record["seed"], "memory_kind": telemetry.get("memory_kind")}
            entry.update({key: _number(telemetry.get(key)) for key in TELEMETRY_KEYS})
            rows.append(entry)
    columns = ["variant", "label", "seed", "memory_kind", *TELEMETRY_KEYS]
    return pd.DataFrame(rows, columns=columns)


def trajectories(records: list[dict]) -> dict[str, list[dict]]:
    """Variant -> list of non-empty ``trajectories`` dicts (one per seed, with ``seed`` added)."""
    out: dict[str, list[dict]] = {}
    for record in records:
        for name, row in record["rows"].items():
            trajectory = row.get("trajectories") or {}
            if trajectory.get("step"):
                out.setdefault(row_name(record, name), []).append(
                    {**trajectory, "seed": record["seed"]}
                )
    return out


def is_transductive(row: dict) -> bool:
    """Whether a record row's fusion coefficients were adapted on unlabeled *test* inputs (``fusion.transductive``):
    such rows are not comparable to inductive ones, and the leaderboard marks them."""
    fusion = row.get("fusion")
    return isinstance(fusion, dict) and fusion.get("transductive") is True


def fusion_coefficients(records: list[dict]) -> dict[str, list[dict]]:
    """Variant -> list of learned fusion coefficient sets, one per seed, for rows whose ``fusion`` has
    ``coefficients``: ``{"seed", "method", "transductive", "layers", "tasks", "values"}`` (``values``: layers × tasks,
    ``layers == ["all"]`` for a task-wise method). Rows that share one fuse stage (a strategy's fused row and its
    fine-tuned row) carry the same coefficients; :mod:`bench.report.plots` draws each set once."""
    out: dict[str, list[dict]] = {}
    for record in records:
        for name, row in record["rows"].items():
            fusion = row.get("fusion")
            if not isinstance(fusion, dict) or not isinstance(fusion.get("coefficients"), dict):
                continue
            coefficients = fusion["coefficients"]
            out.setdefault(row_name(record, name), []).append(
                {"seed": record["seed"], "method": fusion["method"], "transductive": is_transductive(row),
                 "layers": list(coefficients["layers"]), "tasks": list(coefficients["tasks"]),
                 "values": [[float(v) for v in values] for values in coefficients["values"]]}
            )
    return out


def budget_frame(records: list[dict]) -> pd.DataFrame:
    """One row per (variant, seed) with the row's training budget (schema 2; NaN for schema-1 records)."""
    rows = []
    for record in records:
        for name, row in record["rows"].items():
            budget = row.get("budget") or {}
            rows.append({"variant": row_name(record, name), "seed": record["seed"],
                         **{key: _number(budget.get(key)) for key in BUDGET_FIELDS}})
    return pd.DataFrame(rows, columns=["variant", "seed", *BUDGET_FIELDS])
