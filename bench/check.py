"""`python -m bench check`: the regression gate. Compare a suite's latest records with a committed baseline.

* Records (schema 1 or 2): the newest per (label, configuration, seed), one row per configuration as in the
  leaderboard (:mod:`bench.report.records`); per row, the seed mean of every test metric and of training
  throughput. A baseline row is found by its name, or (baselines written since the gate stored them) by its
  configuration fingerprints when a later run renamed it (``naive_mtl`` -> ``naive_mtl[train.epochs=2]``).
* **Metrics: noise or regression.** A score regresses when it is worse than the baseline by more than
  ``max(tolerance, z · sd · sqrt(1/n_baseline + 1/n_now))``: ``sd`` is the between-seed standard deviation of that
  metric for that row (the baseline's own spread when it has 2+ seeds, else the current run's when it has, else
  none and ``tolerance`` alone decides), so a drop within the seed noise of a multi-seed baseline passes and a drop
  that is ``z`` standard errors of the difference of the two means fails. Units: points (×100) for fractions
  (``max`` metrics); for raw lower-is-better metrics (mse) the same numbers read as a percentage of the baseline.
* **Throughput** is not gated by default (``throughput=off``): samples/s measured on a shared machine move by
  −70 % with the load while no metric moves; the speed gate is the benchmarks' ratios to a plain loop measured in
  the same process (docs/performance.md). ``throughput=relative`` gates each row's samples/s *relative to the
  median row of the same run* (a strategy that got slower than the others; a uniform slowdown passes);
  ``throughput=absolute`` compares samples/s with the baseline's (a dedicated, idle machine). Either fails below
  ``1 − throughput_tolerance`` times the baseline.
* **Rows not run**: a baseline row (or metric) absent from the store is listed as *not run* with the ``bench run``
  command that runs it, not as a regression; ``require_all=true`` makes it fail. A gate that compared nothing at
  all (every baseline row absent) fails. New rows are only noted.
* Exit 0: nothing regressed; 1: a table of what regressed (or nothing compared); bad input raises BenchError (the
  CLI exits 2).

Baseline file (``results/baselines/<suite>.json``; ``sd``, ``strategy``, ``seeds`` and ``configs`` are optional,
written since the gate reads them, so older baselines stay valid)::

    {"schema_version": 1, "suite": "...", "created": "...", "code_version": "...", "split": "test",
     "directions": {task: {metric: "max" | "min"}},
     "variants": {variant: {"n": 2, "metrics": {task: {metric: mean}}, "train_samples_per_s": mean | null,
                            "sd": {task: {metric: between-seed sd}}, "strategy": "...", "seeds": [0, 1],
                            "configs": [config fingerprint, ...]}}}
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ValidationInfo, field_validator

from bench.errors import BenchError, did_you_mean
from bench.gate import (  # noqa: F401  (BASELINE_SCHEMA_VERSION, SPLIT: read by tests and scripts from here)
    BASELINE_SCHEMA_VERSION,
    COLUMNS,
    DEFAULT_THROUGHPUT,
    DEFAULT_THROUGHPUT_TOLERANCE,
    DEFAULT_TOLERANCE,
    DEFAULT_Z,
    SPLIT,
    THROUGHPUT_MODES,
    build_baseline,
    compare,
    default_baseline,
    empty_current,
    match_rows,
    read_baseline,
)
from bench.options import RENAMED, Options, one_line
from bench.rowid import RowId


class CheckOptions(Options):
    """The options of ``bench check`` (:data:`HELP` explains each); switches as every command reads them."""

    SWITCHES: ClassVar[tuple[str, ...]] = ("require_all", "update")

    suite: str
    results_dir: Path = Path("results")
    baseline: Path | None = None  # None: <results_dir>/baselines/<suite>.json
    tolerance: float = DEFAULT_TOLERANCE
    z: float = DEFAULT_Z
    throughput: str = DEFAULT_THROUGHPUT
    throughput_tolerance: float = DEFAULT_THROUGHPUT_TOLERANCE
    require_all: bool = False
    update: bool = False

    @field_validator("suite", mode="before")
    @classmethod
    def _suite(cls, value: Any) -> str:
        return str(value)

    @field_validator("results_dir", mode="before")
    @classmethod
    def _results(cls, value: Any) -> Any:
        return value or "results"

    @field_validator("baseline", mode="before")
    @classmethod
    def _baseline(cls, value: Any) -> Any:
        return value or None

    @field_validator("tolerance", "z", "throughput_tolerance", mode="before")
    @classmethod
    def _number(cls, value: Any, info: ValidationInfo) -> float:
        key, default = info.field_name, cls.model_fields[str(info.field_name)].default
        not_a_number = one_line(f"{key}={value!r} is not a number; e.g. {key}={default:g}")
        if isinstance(value, bool):
            raise not_a_number
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise not_a_number from None
        if not math.isfinite(number) or number < 0:
            raise one_line(f"{key}={value!r} must be a finite number >= 0; e.g. {key}={default:g}")
        return number

    @field_validator("throughput", mode="before")
    @classmethod
    def _throughput(cls, value: Any) -> str:
        value = str(value)
        if value not in THROUGHPUT_MODES:
            raise one_line(f"throughput={value!r}{did_you_mean(value, THROUGHPUT_MODES)}; valid: "
                           f"{', '.join(THROUGHPUT_MODES)}")
        return value


OPTIONS = tuple(CheckOptions.model_fields)

_OPTION_HELP = [
    ("suite=NAME|path.yaml", "the suite (a name or its YAML file, as for bench run)"),
    ("results_dir=results", "where bench run wrote the records"),
    ("baseline=PATH", "default: <results_dir>/baselines/<suite>.json"),
    (f"tolerance={DEFAULT_TOLERANCE:g}", "a metric regresses when it is worse than the baseline by more than "
     "max(tolerance, z * sd * sqrt(1/n_baseline + 1/n_now)): points (x100) for fractions, percent of the baseline "
     "for lower-is-better raw metrics (mse)"),
    (f"z={DEFAULT_Z:g}", "standard errors of seed noise a drop must exceed (sd: the row's between-seed standard "
     "deviation, the baseline's when it has 2+ seeds, else this run's; z=0: tolerance alone)"),
    (f"throughput={DEFAULT_THROUGHPUT}", "off: not gated (load on a shared machine moves samples/s, not metrics); "
     "relative: each row's samples/s over the median row of its own run, against the same in the baseline; "
     "absolute: samples/s against the baseline's"),
    (f"throughput_tolerance={DEFAULT_THROUGHPUT_TOLERANCE:g}", "with throughput=relative|absolute: a row fails below "
     "(1 - this) x its baseline"),
    ("require_all=false", "true: a baseline row absent from the store fails (default: listed as not run, with the "
     "command that runs it)"),
    ("--update", "(or update=true) write the baseline from the latest records instead of comparing"),
]


def _help() -> str:
    import textwrap

    lines = ["options (key=value):"]
    for key, text in _OPTION_HELP:
        wrapped = textwrap.wrap(text, 84)
        lines.append(f"  {key:<27}{wrapped[0]}")
        lines += [f"  {'':<27}{w}" for w in wrapped[1:]]
    lines.append("exit codes: 0 nothing regressed; 1 a regression, or no baseline row in the store; 2 bad input")
    return "\n".join(lines) + "\n"


HELP = _help()


def run_commands(baseline: dict, variants: list[str], item: str, results_dir: Path) -> list[str]:
    """The ``bench run`` command(s) that produce the rows ``variants`` of ``baseline`` (rows of one command line
    joined into ``strategy=a,b``): the strategy (stored in the baseline, else the strategy whose rows include the
    row's kind), the row's bracket items (``strategy.``-prefixed when they are parameters of the strategy; an old
    key under its new name), a custom label, and the baseline's seeds. What strategies declare is read from their
    files (:mod:`bench.report.declared`), so no plug-in is imported."""
    from bench.plugins.scan import Scan  # here: `bench --help` and every command import this module for HELP
    from bench.report.declared import declared_kinds  # (bench.report imports pandas)

    kinds = declared_kinds(())
    scan = Scan.of()
    groups: dict[tuple, list[str]] = {}
    for variant in variants:
        base = baseline["variants"][variant]
        row = RowId.parse(variant)
        head = row.kind
        strategy = base.get("strategy") or (kinds[head].strategy if head in kinds else None)
        known = strategy in scan.names("strategy")
        extra = []
        if not known or head not in {strategy, *(k for k, d in kinds.items() if d.strategy == strategy)}:
            extra.append(f"label={head}")  # a custom label names the row
        model = scan.params(strategy) if known else None
        fields = set(model.model_fields) if model is not None else set()
        for part in (p for p in row.params if p):
            key = part.split("=", 1)[0]
            if "=" not in part:
                extra.append(f"label={part}")
            elif key.split(".")[0] in fields:
                extra.append(f"strategy.{part}")
            elif not key.startswith("config") and key not in ("schema", "data"):
                extra.append(f"{RENAMED.get(key, key)}={part.split('=', 1)[1]}")
        seeds = base.get("seeds") or list(range(base.get("n") or 1))
        if seeds != [0]:
            extra.append(f"seeds={len(seeds)}" if seeds == list(range(len(seeds))) else
                         f"seed=[{','.join(map(str, seeds))}]")
        key = tuple(extra)
        if strategy is None:
            strategy = "<its strategy>"
        if strategy not in groups.setdefault(key, []):
            groups[key].append(strategy)
    where = "" if results_dir == Path("results") else f" results_dir={results_dir}"
    return [f"python -m bench run suite={item} strategy={','.join(s)}{''.join(' ' + e for e in extra)}{where}"
            for extra, s in groups.items()]


def _fmt(value: float, metric: str) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "—"
    if metric == "train_samples_per_s":
        return f"{value:,.1f}"
    return f"{value:.3f}" if metric.startswith("train_samples_per_s") else f"{value:.4f}"


def check_command(opts: dict) -> int:
    """CLI entry: the options of :data:`HELP`. Returns 0 (nothing regressed, or baseline written) or 1 (a table of
    regressions, or no baseline row in the store)."""
    import numpy as np
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from bench.report.records import load_records
    from bench.suites import stored_suite, suite_name

    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise BenchError(f"check takes {', '.join(f'{k}=' for k in OPTIONS)}, not {unknown[0]!r}"
                         f"{did_you_mean(unknown[0], OPTIONS)} (`python -m bench check --help` explains each)")
    if not opts.get("suite"):
        raise BenchError("check needs a suite: `python -m bench check suite=<name>`")
    o = CheckOptions.of(opts)
    item = o.suite
    suite = suite_name(item)  # a name or a suite YAML's path: the name its store and its baseline use
    results_dir, path = o.results_dir, o.baseline or default_baseline(o.results_dir, suite)
    tolerance, z, throughput, throughput_tolerance = o.tolerance, o.z, o.throughput, o.throughput_tolerance
    require_all, update = o.require_all, o.update
    console = Console(width=max(150, Console().width))  # a CI log's 80 columns would squeeze the row names out

    def say(text: str) -> None:  # one line, as written (no markup, no highlighting, no wrapping)
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    if update:
        current = build_baseline(load_records(results_dir, stored_suite(item, results_dir)), suite)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(current, indent=2, sort_keys=False) + "\n")
        say(f"wrote baseline {path} ({len(current['variants'])} variants)")
        return 0
    baseline = read_baseline(path, suite)  # a bad baseline fails before loading records
    has_records = next((results_dir / suite / "cells").glob("*/*/record.json"), None) is not None
    current = build_baseline(load_records(results_dir, suite), suite) if has_records else empty_current()

    result = compare(baseline, current, tolerance, z, throughput, throughput_tolerance)
    matched = match_rows(baseline, current)
    renamed = [f"{b} as {c}" for b, c in matched.items() if c is not None and c != b]
    if renamed:
        say(f"compared by configuration (renamed since the baseline): {', '.join(renamed)}")
    new = sorted(set(current["variants"]) - {c for c in matched.values() if c})
    if new:
        say(f"not in the baseline (--update adds them): {', '.join(new)}")
    fewer = [f"{v} (n={current['variants'][c]['n']}, baseline n={b.get('n')})"
             for v, b in baseline["variants"].items() if (c := matched[v]) is not None
             and b.get("n") not in (None, current["variants"][c]["n"])]
    if fewer:
        say(f"seed counts differ from the baseline: {', '.join(fewer)}")

    not_run = result[result["status"] == "not run"]
    absent = [v for v in baseline["variants"] if matched[v] is None]
    partial = sorted(set(not_run["variant"]) - set(absent))
    if absent:
        say(f"not run ({len(absent)} of {len(baseline['variants'])} baseline rows are not in "
            f"{results_dir / suite}; not checked): {', '.join(absent)}")
        for command in run_commands(baseline, absent, item, results_dir):
            say(f"  run them with: {command}")
    if partial:
        missing = not_run[not_run["variant"].isin(partial)]
        what = ", ".join(f"{r.variant} {r.task} {r.metric}" for r in missing.itertuples())
        say(f"not measured (not checked): {what}")

    limits = (f"tolerance {tolerance:g} pts (mse-like: {tolerance:g}%) or z={z:g} seed SEs, whichever is wider; "
              + ("throughput not gated" if throughput == "off" else
                 f"throughput ({throughput}) −{throughput_tolerance:.0%}"))
    compared = result[result["status"] != "not run"]
    bad = result[result["status"] == "regressed"]
    if throughput == "off":
        tp = [(current["variants"][c].get("train_samples_per_s"), b.get("train_samples_per_s"))
              for v, b in baseline["variants"].items() if (c := matched[v]) is not None]
        ratios = [now / base for now, base in tp if now and base]
        if ratios:
            say(f"throughput (not gated; throughput=relative gates it): median now/baseline "
                f"{np.median(ratios):.2f}x over {len(ratios)} rows")
    if compared.empty:
        say(f"FAILED: no row of {path} is in {results_dir / suite}: nothing was compared")
        return 1
    if bad.empty:
        fail_missing = require_all and not not_run.empty
        verdict = "FAILED (require_all=true: rows not run)" if fail_missing else "OK"
        say(f"{verdict}: {len(compared)} values of {len(baseline['variants']) - len(absent)} rows within "
            f"{limits} of {path}")
        return 1 if fail_missing else 0
    table = Table(title=Text(f"{suite}: {len(bad)} regression(s) vs {path} ({limits})"))
    for name in ("variant", "task", "metric", "baseline", "now", "delta", "limit"):
        table.add_column(name, justify="right" if name in ("baseline", "now", "delta", "limit") else "left",
                         overflow="fold", no_wrap=True)
    for row in bad.itertuples():
        cells = (row.variant, row.task, row.metric, _fmt(row.baseline, row.metric), _fmt(row.now, row.metric),
                 f"{row.delta:+.2f} {row.unit}", f"{row.limit:.2f} {row.unit}")
        table.add_row(*(Text(c) for c in cells))
    console.print(table)
    return 1
