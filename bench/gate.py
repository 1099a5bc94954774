"""The regression gate's arithmetic: a baseline built from records, read back, and compared with the records of now.

:mod:`bench.check` is the command around it (options, messages, the commands that run a missing row). The rules
(noise or regression, throughput modes, rows not run) are documented there and in ``bench check --help``.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from bench.errors import BenchError

if TYPE_CHECKING:  # imported where used: `bench check --help` and bad options answer without pandas
    import pandas as pd

    from bench.record import Record

SPLIT = "test"
BASELINE_SCHEMA_VERSION = 1  # of the baseline file, independent of the record schema
DEFAULT_TOLERANCE = 1.0
DEFAULT_Z = 3.0
DEFAULT_THROUGHPUT = "off"
THROUGHPUT_MODES = ("off", "relative", "absolute")
DEFAULT_THROUGHPUT_TOLERANCE = 0.5


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
