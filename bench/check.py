"""`python -m bench check`: the regression gate. Compare a suite's latest records with a committed baseline.

* Records (schema 1 or 2): the newest per (label, configuration, seed), one row per configuration as in the
  leaderboard (:mod:`bench.report.records`); per variant, the seed mean of every test metric and of training
  throughput.
* A score regresses when it is worse than the baseline by more than ``tolerance``: in points (×100) for fractions
  (``max`` metrics); for raw lower-is-better metrics (mse) the same number is read as a percentage of the baseline.
* Throughput regresses when it falls below ``baseline × (1 − throughput_tolerance)``.
* A baseline variant or metric missing from the records is a failure; new variants are only noted.
* Exit 0: within tolerance; 1: a table of what regressed; bad input raises BenchError (the CLI exits 2).

Baseline file (``results/baselines/<suite>.json``)::

    {"schema_version": 1, "suite": "...", "created": "...", "code_version": "...", "split": "test",
     "directions": {task: {metric: "max" | "min"}},
     "variants": {variant: {"n": 2, "metrics": {task: {metric: mean}}, "train_samples_per_s": mean | null}}}
"""

from __future__ import annotations

import json
import math
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from bench.errors import BenchError
from bench.record import Record
from bench.report.records import load_records, metrics_frame, task_specs, telemetry_frame

SPLIT = "test"
BASELINE_SCHEMA_VERSION = 1  # of the baseline file below, independent of the record schema
DEFAULT_TOLERANCE = 1.0
DEFAULT_THROUGHPUT_TOLERANCE = 0.5


def default_baseline(results_dir: Path | str, suite: str) -> Path:
    return Path(results_dir) / "baselines" / f"{suite}.json"


def _none_if_nan(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def build_baseline(records: list[Record], suite: str) -> dict:
    """The baseline of ``records`` (already the newest per (label, configuration, seed))."""
    metrics = metrics_frame(records)
    metrics = metrics[metrics["split"] == SPLIT]
    means = metrics.groupby(["variant", "task", "metric"])["value"].mean()
    seeds = metrics.groupby("variant")["seed"].nunique()
    throughput = telemetry_frame(records).groupby("variant")["train_samples_per_s"].mean()
    variants: dict[str, dict] = {}
    for (variant, task, metric), value in means.items():
        entry = variants.setdefault(variant, {"n": int(seeds[variant]), "metrics": {},
                                              "train_samples_per_s": _none_if_nan(throughput.get(variant))})
        entry["metrics"].setdefault(task, {})[metric] = round(float(value), 10)
    versions = Counter(r.code_version for r in records)
    return {
        "schema_version": BASELINE_SCHEMA_VERSION, "suite": suite,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "code_version": versions.most_common(1)[0][0], "split": SPLIT,
        "directions": {t: dict(spec["metrics"]) for t, spec in task_specs(records).items()},
        "variants": variants,
    }


def read_baseline(path: Path, suite: str) -> dict:
    if not path.is_file():
        raise BenchError(f"no baseline at {path}; create it with `python -m bench check suite={suite} --update`")
    try:
        baseline = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BenchError(f"baseline {path} is not valid JSON ({exc})") from None
    if not isinstance(baseline, dict) or not isinstance(baseline.get("variants"), dict) or "suite" not in baseline:
        raise BenchError(f"{path} is not a bench baseline (needs 'suite' and 'variants')")
    if baseline["suite"] != suite:
        raise BenchError(f"baseline {path} is for suite {baseline['suite']!r}, not {suite!r}; pass "
                         f"baseline={default_baseline('results', suite)} or write one with --update")
    return baseline


def compare(baseline: dict, current: dict, tolerance: float, throughput_tolerance: float) -> pd.DataFrame:
    """One row per compared quantity: variant, task, metric, baseline, now, delta, unit, regressed."""
    rows = []
    directions = {**baseline.get("directions", {}), **current.get("directions", {})}
    for variant, base in baseline["variants"].items():
        now = current["variants"].get(variant)
        for task, metrics in base.get("metrics", {}).items():
            for metric, b in metrics.items():
                value = (now or {}).get("metrics", {}).get(task, {}).get(metric)
                direction = directions.get(task, {}).get(metric, "max")
                if value is None:
                    rows.append((variant, task, metric, b, math.nan, math.nan, "missing", True))
                elif direction == "max":
                    delta = 100.0 * (value - b)
                    rows.append((variant, task, metric, b, value, delta, "pts", -delta > tolerance))
                else:
                    delta = 100.0 * (value - b) / abs(b) if b else (math.inf if value > b else 0.0)
                    rows.append((variant, task, metric, b, value, delta, "%", delta > tolerance))
        b = base.get("train_samples_per_s")
        if b:
            value = (now or {}).get("train_samples_per_s")
            if value is not None:  # a missing variant is already flagged by its metrics
                delta = 100.0 * (value - b) / b
                rows.append((variant, "-", "train_samples_per_s", b, value, delta, "%",
                             value < b * (1.0 - throughput_tolerance)))
    return pd.DataFrame(rows, columns=["variant", "task", "metric", "baseline", "now", "delta", "unit", "regressed"])


def _flag(opts: dict, key: str) -> bool:
    value = opts.get(key, False)
    if isinstance(value, str):
        if value.lower() not in ("true", "false", "1", "0", "yes", "no", ""):
            raise BenchError(f"{key}={value!r} is not a boolean; use {key}=true or {key}=false")
        return value.lower() in ("true", "1", "yes")
    return bool(value)


def _number(opts: dict, key: str, default: float) -> float:
    value = opts.get(key)
    if value is None:
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BenchError(f"{key}={value!r} is not a number") from None
    if not math.isfinite(number) or number < 0:
        raise BenchError(f"{key}={value!r} must be a finite number >= 0")
    return number


def _fmt(value: float, metric: str) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "—"
    return f"{value:,.1f}" if metric == "train_samples_per_s" else f"{value:.4f}"


def check_command(opts: dict) -> int:
    """CLI entry: opts ``suite``, ``results_dir``, ``baseline``, ``tolerance``, ``throughput_tolerance``,
    ``update``. Returns 0 (within tolerance, or baseline written) or 1 (regressions, table printed)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from bench.suites import stored_suite, suite_name

    item = opts.get("suite")
    if not item:
        raise BenchError("check needs a suite: `python -m bench check suite=<name>`")
    item = str(item)
    suite = suite_name(item)  # a name or a suite YAML's path: the name its store and its baseline use
    results_dir = Path(opts.get("results_dir") or "results")
    path = Path(opts["baseline"]) if opts.get("baseline") else default_baseline(results_dir, suite)
    tolerance = _number(opts, "tolerance", DEFAULT_TOLERANCE)
    throughput_tolerance = _number(opts, "throughput_tolerance", DEFAULT_THROUGHPUT_TOLERANCE)
    update = _flag(opts, "update")
    console = Console()

    baseline = None if update else read_baseline(path, suite)  # bad baseline fails before loading records
    current = build_baseline(load_records(results_dir, stored_suite(item, results_dir)), suite)
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(current, indent=2, sort_keys=False) + "\n")
        console.print(f"wrote baseline {path} ({len(current['variants'])} variants)", markup=False)
        return 0

    result = compare(baseline, current, tolerance, throughput_tolerance)
    new = sorted(set(current["variants"]) - set(baseline["variants"]))
    if new:
        console.print(f"not in the baseline (--update adds them): {', '.join(new)}", markup=False)
    fewer = [f"{v} (n={current['variants'][v]['n']}, baseline n={b.get('n')})"
             for v, b in baseline["variants"].items()
             if v in current["variants"] and b.get("n") not in (None, current["variants"][v]["n"])]
    if fewer:
        console.print(f"seed counts differ from the baseline: {', '.join(fewer)}", markup=False)
    limits = f"tolerance {tolerance:g} pts (mse-like: {tolerance:g}%), throughput −{throughput_tolerance:.0%}"
    bad = result[result["regressed"]]
    if bad.empty:
        console.print(f"OK: {len(result)} values of {len(baseline['variants'])} variants within {limits} "
                      f"of {path}", markup=False)
        return 0
    table = Table(title=Text(f"{suite}: {len(bad)} regression(s) vs {path} ({limits})"))
    for name in ("variant", "task", "metric", "baseline", "now", "delta"):
        table.add_column(name, justify="right" if name in ("baseline", "now", "delta") else "left",
                         overflow="fold", no_wrap=name != "variant")
    for row in bad.itertuples():
        delta = "missing" if row.unit == "missing" else f"{row.delta:+.2f} {row.unit}"
        cells = (row.variant, row.task, row.metric, _fmt(row.baseline, row.metric), _fmt(row.now, row.metric), delta)
        table.add_row(*(Text(c) for c in cells))
    console.print(table)
    return 1
