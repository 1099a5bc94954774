"""Records -> the long pandas tables and per-variant lists the leaderboard and the figures read: metrics, telemetry
(with what the rows' stage provenance adds), budgets, training trajectories and learned fusion coefficients.

Every function takes records whose rows are already named (:func:`bench.report.records.load_records`), and groups
by those names (``variant``)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from bench.record import Record, Row
from bench.report.provenance import deployed_params, stage_curves, wall_split

BUDGET_FIELDS = ("train_samples_seen", "optimizer_steps", "epochs")
TELEMETRY_KEYS = ("wall_time_s", "train_samples_per_s", "peak_memory_mb", "trainable_params")
# derived from the rows' stage provenance (bench/report/provenance.py; docs/records.md, "Cost columns")
PROVENANCE_KEYS = ("wall_own_s", "wall_shared_s", "deployed_params")


def per_label(metric: str) -> bool:
    """A per-label result (``f1@<label>`` of a multi-label task): in the CSV and JSON, never in the Markdown or LaTeX
    tables, Avg or Δm% (one column per label would make those unreadable and weigh a task by its labels)."""
    return "@" in metric


def task_specs(records: list[Record]) -> dict[str, dict]:
    """Task name -> {"target", "primary", "metrics": {metric: direction}}, merged over records in order; a task
    with ratio-of-sums metrics also has "stats" (column names) and "recipes" (:mod:`bench.stats.ratios`)."""
    specs: dict[str, dict] = {}
    for record in records:
        for task, spec in record.tasks.items():
            merged = specs.setdefault(task, {"target": spec.target, "primary": None, "metrics": {}})
            merged["metrics"].update(spec.metrics)
            merged["primary"] = merged["primary"] or spec.primary
            if spec.stats and spec.recipes:  # the first record's columns: predictions.npz of one task agree
                merged.setdefault("stats", list(spec.stats))
                merged.setdefault("recipes", {})
                for metric, recipe in spec.recipes.items():
                    merged["recipes"].setdefault(metric, recipe)
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
            budget = row.spent or {}
            rows.append({"variant": record.variant(name), "seed": record.seed,
                         **{key: _number(budget.get(key)) for key in BUDGET_FIELDS}})
    return pd.DataFrame(rows, columns=["variant", "seed", *BUDGET_FIELDS])
