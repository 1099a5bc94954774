"""Load and validate the ``record.json`` files a suite's finished cells leave (schema in docs/records.md).

Row naming rule (one leaderboard row per *variant*):

* a record's ``rows`` dict names the variants its strategy produced (``fuse_then_joint`` gives ``fused`` and
  ``fuse_then_joint``);
* when the record's ``label`` carries parameters (``fuse_then_joint[fusion=ties]``), that bracket suffix is appended
  to every row name that has none of its own: ``fused[fusion=ties]``, ``fuse_then_joint[fusion=ties]``;
* a custom label (``label=NAME`` on the command line) replaces the strategy's own row name: ``NAME``;
* so only the plain ``separate`` row of the default ``separate`` strategy is the Δm% baseline.

Corrupted or foreign files are skipped with a :class:`RecordWarning` naming the file; an empty result is a
:class:`~bench.errors.BenchError` that says which command produces records.
"""

from __future__ import annotations

import json
import math
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from bench.errors import BenchError

SCHEMA_VERSION = 1
BASELINE_VARIANT = "separate"
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
    if data["schema_version"] != SCHEMA_VERSION:
        return f"schema_version {data['schema_version']!r}, expected {SCHEMA_VERSION}"
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


def latest_per_seed(records: list[dict]) -> list[dict]:
    """Keep the newest record (by ``created``) per (label, seed); older re-runs of a cell are ignored."""
    newest: dict[tuple[str, int], dict] = {}
    for record in records:
        key = (record["label"], record["seed"])
        if key not in newest or _created(record) >= _created(newest[key]):
            newest[key] = record
    return sorted(newest.values(), key=lambda r: (r["label"], r["seed"]))


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
    return latest_per_seed(records) if latest else records


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
            variant = variant_name(name, record["label"], record["strategy"])
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
            entry = {"variant": variant_name(name, record["label"], record["strategy"]), "label": record["label"],
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
                out.setdefault(variant_name(name, record["label"], record["strategy"]), []).append(
                    {**trajectory, "seed": record["seed"]}
                )
    return out
