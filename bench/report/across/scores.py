"""Scores of the cross-suite report: which suites, and each run's primary test metric over the baseline's mean.

Per suite, task and seed, a method's primary *test* metric N is divided by the mean B over seeds of the suite's
baseline row (``separate``) on that task: N/B for a higher-is-better metric, B/N for a lower-is-better one.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from bench.config import BASELINE_STRATEGY
from bench.errors import BenchError, did_you_mean
from bench.record import Record, base_strategy
from bench.report.records import metrics_frame, row_name, task_specs
from bench.report.style import Styles
from bench.rowid import RowId
from bench.suites import stored_suite, stored_suites

ALL = "all"
SPLIT = "test"  # the only split the cross-suite report reads


def resolve_suites(value, results_dir: Path | str) -> list[str]:
    """``suite=`` of a cross-suite report (a list, or ``all``) -> suite names in the store, at least two."""
    results_dir = Path(results_dir)
    if isinstance(value, str) and value == ALL:
        names = stored_suites(results_dir)
        if len(names) < 2:
            raise BenchError(f"suite=all found {len(names)} suite(s) with records under {results_dir} "
                             f"({', '.join(names) or 'none'}); the cross-suite report needs 2 or more: run "
                             f"`python -m bench run suite=<another suite>` first")
        return names
    items = [value] if isinstance(value, str) else [str(getattr(v, "text", v)) for v in value]
    names = [stored_suite(item, results_dir) for item in items]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise BenchError(f"suite={','.join(items)} names suite {twice[0]!r} twice; name each suite once")
    if len(names) < 2:
        raise BenchError(f"suite={','.join(items)}: the cross-suite report needs 2 or more suites, e.g. "
                         f"suite={items[0]},<another> or suite=all; for one suite: `python -m bench report "
                         f"suite={names[0]}`")
    return names


def method_name(variant: str) -> str:
    """A row name as a cross-suite method: the ``suite=…`` part a suite sweep adds to labels is dropped.

    >>> method_name("naive_mtl[suite=synthetic]"), method_name("fused[fusion=ties,suite=text]")
    ('naive_mtl', 'fused[fusion=ties]')
    >>> method_name("naive_mtl[weights=[1,2],train.epochs=3]")
    'naive_mtl[weights=[1,2],train.epochs=3]'
    """
    rid = RowId.parse(variant)
    return str(RowId(rid.kind, tuple(p for p in rid.params if p and not p.startswith("suite="))))


def suite_scores(records: list[Record], suite: str, baseline: str, styles: Styles) -> tuple[pd.DataFrame, list[str]]:
    """One suite's normalised scores from its loaded ``records``: a row per (method, task, seed) with the raw
    primary test metric ``value``, the ``baseline`` mean ``reference`` and ``score`` (1 = the baseline's mean); and
    notes on what was left out (a missing baseline names the rows present, in ``styles`` order)."""
    specs = task_specs(records)
    frame = metrics_frame(records)
    frame = frame[frame["split"] == SPLIT]
    primary = frame["task"].map(lambda t: specs.get(t, {}).get("primary"))
    frame = frame[frame["metric"] == primary].copy()
    names = {row_name(r, row) for r in records for row in r.rows}
    renamed = {v: method_name(v) for v in names}
    clashes = {m for m in renamed.values() if list(renamed.values()).count(m) > 1}
    frame["method"] = frame["variant"].map(lambda v: v if renamed[v] in clashes else renamed[v])
    notes = []
    if baseline not in set(frame["method"]):
        present = sorted(set(frame["method"]), key=styles.sort_key)
        fix = (f"run `python -m bench run suite={suite} strategy={BASELINE_STRATEGY}`"
               if base_strategy(baseline) == BASELINE_STRATEGY else "pick another with baseline=<row>")
        raise BenchError(f"suite {suite!r} has no {baseline!r} row to normalise by{did_you_mean(baseline, present)} "
                         f"(rows: {', '.join(present)}); {fix}")
    if frame.empty:
        raise BenchError(f"records of suite {suite!r} have no {SPLIT} metrics; rerun its `bench run` command")
    reference = frame[frame["method"] == baseline].groupby("task")["value"].mean()
    frame["suite"] = suite
    frame["direction"] = [specs[t]["metrics"].get(m, "max") for t, m in zip(frame["task"], frame["metric"])]
    frame["reference"] = frame["task"].map(reference)
    bad = sorted(t for t, b in reference.items() if not (math.isfinite(b) and b > 0))
    if bad:
        notes.append(f"{suite}: tasks {', '.join(bad)} left out: the {baseline} mean of their primary metric is "
                     "not positive, so a ratio to it means nothing")
        frame = frame[~frame["task"].isin(bad)]
    value, ref = frame["value"].to_numpy(float), frame["reference"].to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        frame["score"] = np.where(frame["direction"] == "min", ref / value, value / ref)
    broken = frame[~np.isfinite(frame["score"])]
    if len(broken):
        notes.append(f"{suite}: {len(broken)} runs left out (a lower-is-better metric of 0: no finite ratio)")
        frame = frame[np.isfinite(frame["score"])]
    columns = ["suite", "task", "metric", "direction", "method", "seed", "value", "reference", "score"]
    return frame[columns].reset_index(drop=True), notes
