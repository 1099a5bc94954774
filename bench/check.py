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
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import BenchError, did_you_mean

if TYPE_CHECKING:  # imported where used: `bench check --help` and bad options answer without pandas
    import pandas as pd

    from bench.record import Record

SPLIT = "test"
BASELINE_SCHEMA_VERSION = 1  # of the baseline file below, independent of the record schema
DEFAULT_TOLERANCE = 1.0
DEFAULT_Z = 3.0
DEFAULT_THROUGHPUT = "off"
THROUGHPUT_MODES = ("off", "relative", "absolute")
DEFAULT_THROUGHPUT_TOLERANCE = 0.5
OPTIONS = ("suite", "results_dir", "baseline", "tolerance", "z", "throughput", "throughput_tolerance",
           "require_all", "update")

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


def default_baseline(results_dir: Path | str, suite: str) -> Path:
    return Path(results_dir) / "baselines" / f"{suite}.json"


def _none_if_nan(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def _throughputs(records: list[Record]) -> dict[str, float]:
    """Per row: the seed mean of its training samples/s (rows that trained nothing are left out)."""
    import numpy as np

    values: dict[str, list[float]] = {}
    for record in records:
        for name, row in record.rows.items():
            v = row.telemetry.train_samples_per_s
            if v is not None and math.isfinite(v):
                values.setdefault(record.variant(name), []).append(float(v))
    return {k: float(np.mean(v)) for k, v in values.items()}


def build_baseline(records: list[Record], suite: str) -> dict:
    """The baseline of ``records`` (already the newest per (label, configuration, seed))."""
    from bench.report.records import metrics_frame, task_specs

    metrics = metrics_frame(records)
    metrics = metrics[metrics["split"] == SPLIT]
    grouped = metrics.groupby(["variant", "task", "metric"])["value"]
    means, sds = grouped.mean(), grouped.std(ddof=1)
    seeds = metrics.groupby("variant")["seed"].unique()
    throughput = _throughputs(records)
    origin: dict[str, tuple[str, set[str]]] = {}
    for record in records:
        for row in record.rows:
            strategy, configs = origin.setdefault(record.variant(row), (record.strategy, set()))
            configs.add(record.config_fingerprint)
    variants: dict[str, dict] = {}
    for (variant, task, metric), value in means.items():
        entry = variants.setdefault(variant, {
            "n": int(len(seeds[variant])), "metrics": {}, "train_samples_per_s": _none_if_nan(throughput.get(variant)),
            "strategy": origin[variant][0], "seeds": sorted(int(s) for s in seeds[variant]),
            "configs": sorted(origin[variant][1])})
        entry["metrics"].setdefault(task, {})[metric] = round(float(value), 10)
        sd = sds[(variant, task, metric)]
        if entry["n"] > 1 and math.isfinite(sd):
            entry.setdefault("sd", {}).setdefault(task, {})[metric] = round(float(sd), 10)
    versions = Counter(r.code_version for r in records)
    return {
        "schema_version": BASELINE_SCHEMA_VERSION, "suite": suite,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "code_version": versions.most_common(1)[0][0], "split": SPLIT,
        "directions": {t: dict(spec["metrics"]) for t, spec in task_specs(records).items()},
        "variants": variants,
    }


def empty_current() -> dict:
    return {"variants": {}, "directions": {}}


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


def match_rows(baseline: dict, current: dict) -> dict[str, str | None]:
    """Baseline row -> the current row it is compared with: the same name, else (baselines that stored them) the
    row of the same configuration fingerprints under another name, else None (not run)."""
    by_configs = {tuple(v.get("configs") or ()): name for name, v in current["variants"].items() if v.get("configs")}
    out: dict[str, str | None] = {}
    for name, base in baseline["variants"].items():
        if name in current["variants"]:
            out[name] = name
        else:
            out[name] = by_configs.get(tuple(base.get("configs") or ())) if base.get("configs") else None
    return out


def _relative(throughputs: dict[str, float]) -> dict[str, float]:
    """Each row's samples/s over the median of the rows given (one run's rows: the reference is measured with them)."""
    import numpy as np

    if not throughputs:
        return {}
    median = float(np.median(list(throughputs.values())))
    return {k: v / median for k, v in throughputs.items()} if median > 0 else {}


def _sd(base: dict, now: dict | None, task: str, metric: str) -> float | None:
    for entry in (base, now or {}):
        sd = (entry.get("sd") or {}).get(task, {}).get(metric)
        if sd is not None and math.isfinite(sd):
            return float(sd)
    return None


COLUMNS = ["variant", "task", "metric", "baseline", "now", "delta", "limit", "unit", "status"]


def compare(baseline: dict, current: dict, tolerance: float = DEFAULT_TOLERANCE, z: float = DEFAULT_Z,
            throughput: str = DEFAULT_THROUGHPUT, throughput_tolerance: float = DEFAULT_THROUGHPUT_TOLERANCE,
            ) -> pd.DataFrame:
    """One row per baseline quantity: variant, task, metric, baseline, now, delta, the limit it was judged by, unit
    (``pts`` / ``%``) and status: ``ok``, ``regressed`` or ``not run``."""
    import pandas as pd

    rows = []
    directions = {**baseline.get("directions", {}), **current.get("directions", {})}
    matched = match_rows(baseline, current)
    for variant, base in baseline["variants"].items():
        now = current["variants"].get(matched[variant]) if matched[variant] else None
        n_base, n_now = base.get("n") or 1, (now or {}).get("n") or 1
        for task, metrics in base.get("metrics", {}).items():
            for metric, b in metrics.items():
                value = (now or {}).get("metrics", {}).get(task, {}).get(metric)
                if value is None:
                    rows.append((variant, task, metric, b, math.nan, math.nan, math.nan, "", "not run"))
                    continue
                sd = _sd(base, now, task, metric)
                noise = z * sd * math.sqrt(1 / n_base + 1 / n_now) if sd is not None else 0.0
                if directions.get(task, {}).get(metric, "max") == "max":
                    delta, limit, unit = 100.0 * (value - b), max(tolerance, 100.0 * noise), "pts"
                    worse = -delta
                else:
                    delta = 100.0 * (value - b) / abs(b) if b else (math.inf if value > b else 0.0)
                    limit = max(tolerance, 100.0 * noise / abs(b)) if b else tolerance
                    unit, worse = "%", delta
                rows.append((variant, task, metric, b, value, delta, limit, unit,
                             "regressed" if worse > limit else "ok"))
    if throughput != "off":
        base_tp = {v: b["train_samples_per_s"] for v, b in baseline["variants"].items()
                   if b.get("train_samples_per_s") and matched[v]
                   and current["variants"][matched[v]].get("train_samples_per_s")}
        now_tp = {v: current["variants"][matched[v]]["train_samples_per_s"] for v in base_tp}
        if throughput == "relative":  # the reference: the median of the rows compared, in each run
            base_tp, now_tp = _relative(base_tp), _relative(now_tp)
        for variant, b in base_tp.items():
            value = now_tp[variant]
            rows.append((variant, "-", "train_samples_per_s" if throughput == "absolute" else
                         "train_samples_per_s/median", b, value, 100.0 * (value - b) / b,
                         100.0 * throughput_tolerance, "%", "regressed" if value < b * (1.0 - throughput_tolerance)
                         else "ok"))
    return pd.DataFrame(rows, columns=COLUMNS)


def _split(inner: str) -> list[str]:
    """``"a=1,b=[x,y]"`` -> ``["a=1", "b=[x,y]"]``: commas outside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(inner):
        depth += ch in "[{" and 1 or ch in "]}" and -1 or 0
        if ch == "," and depth == 0:
            parts.append(inner[start:i])
            start = i + 1
    parts.append(inner[start:])
    return [p for p in parts if p]


def run_commands(baseline: dict, variants: list[str], item: str, results_dir: Path) -> list[str]:
    """The ``bench run`` command(s) that produce the rows ``variants`` of ``baseline`` (rows of one command line
    joined into ``strategy=a,b``): the strategy (stored in the baseline, else the strategy whose rows include the
    row's name), the row's bracket keys (``strategy.``-prefixed when they are parameters of the strategy), a custom
    label, and the baseline's seeds."""
    from bench.strategy import STRATEGIES, discover

    discover()
    by_row = {}
    for name in STRATEGIES.names():
        for row in (*STRATEGIES.get(name).rows, name):
            by_row.setdefault(row, name)
    groups: dict[tuple, list[str]] = {}
    for variant in variants:
        base = baseline["variants"][variant]
        head, _, inner = variant.partition("[")
        parts = _split(inner[:-1]) if inner.endswith("]") else []
        strategy = base.get("strategy") or by_row.get(head)
        cls = STRATEGIES.get(strategy) if strategy in STRATEGIES.names() else None
        extra = []
        if cls is None or head not in (strategy, *cls.rows):
            extra.append(f"label={head}")  # a custom label names the row
        fields = set(cls.Params.model_fields) if cls is not None else set()
        for part in parts:
            key = part.split("=", 1)[0]
            if "=" not in part:
                extra.append(f"label={part}")
            elif key.split(".")[0] in fields:
                extra.append(f"strategy.{part}")
            elif not key.startswith("config") and key not in ("schema", "data"):
                extra.append(part)
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


def _bool(opts: dict, key: str) -> bool:
    value = opts.get(key, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise BenchError(f"{key}={value!r} is not a boolean; use {key}=true or {key}=false")


def _number(opts: dict, key: str, default: float) -> float:
    value = opts.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        raise BenchError(f"{key}={value!r} is not a number; e.g. {key}={default:g}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BenchError(f"{key}={value!r} is not a number; e.g. {key}={default:g}") from None
    if not math.isfinite(number) or number < 0:
        raise BenchError(f"{key}={value!r} must be a finite number >= 0; e.g. {key}={default:g}")
    return number


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
    item = opts.get("suite")
    if not item:
        raise BenchError("check needs a suite: `python -m bench check suite=<name>`")
    item = str(item)
    suite = suite_name(item)  # a name or a suite YAML's path: the name its store and its baseline use
    results_dir = Path(opts.get("results_dir") or "results")
    path = Path(opts["baseline"]) if opts.get("baseline") else default_baseline(results_dir, suite)
    tolerance = _number(opts, "tolerance", DEFAULT_TOLERANCE)
    z = _number(opts, "z", DEFAULT_Z)
    throughput = str(opts.get("throughput", DEFAULT_THROUGHPUT))
    if throughput not in THROUGHPUT_MODES:
        raise BenchError(f"throughput={throughput!r}{did_you_mean(throughput, THROUGHPUT_MODES)}; valid: "
                         f"{', '.join(THROUGHPUT_MODES)}")
    throughput_tolerance = _number(opts, "throughput_tolerance", DEFAULT_THROUGHPUT_TOLERANCE)
    require_all, update = _bool(opts, "require_all"), _bool(opts, "update")
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
