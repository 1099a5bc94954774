"""The pairwise comparison of two rows (``bench report compare=a,b``): per score column both values, the difference
with its two-level t interval, the test and its raw and corrected p (``compare_<a>_vs_<b>.md``)."""

from __future__ import annotations

import math
from dataclasses import replace

import pandas as pd

from bench import stats
from bench.errors import BenchError, did_you_mean
from bench.report.groups import group_of, is_group_key
from bench.report.inference import TESTS
from bench.report.leaderboard.board import Leaderboard
from bench.report.leaderboard.cells import Column, is_nan, number
from bench.report.leaderboard.render_md import md_row
from bench.report.records import BASELINE_VARIANT, config_differences


def _row_or_error(lb: Leaderboard, name: str) -> str:
    valid = list((lb.full_table if lb.full_table is not None else lb.table).index)
    if name not in valid:
        raise BenchError(f"compare: unknown row {name!r}{did_you_mean(name, valid)}; rows: {', '.join(valid)}")
    return name


def compare_rows(lb: Leaderboard, a: str, b: str) -> pd.DataFrame:
    """The paired comparison of rows ``a`` and ``b``: per task (the Δm% metrics and extra splits' primaries), Avg
    and Δm%: both values, the difference a − b with its interval, the test, raw and corrected p."""
    a, b = _row_or_error(lb, a), _row_or_error(lb, b)
    if a == b:
        raise BenchError(f"compare: {a!r} twice; name two different rows, e.g. compare={a},{BASELINE_VARIANT}")
    inference = lb.inference if lb.inference is not None and lb.inference.any() else None
    full = lb.full_table if lb.full_table is not None else lb.table
    keys = lb.score_keys()
    rows = []
    for key in keys:
        va, vb = full.loc[a].get(key, math.nan), full.loc[b].get(key, math.nan)
        lo = hi = p = math.nan
        test = ""
        if inference is not None:
            diff = inference.difference(a, b, key)
            if diff is not None:
                lo, hi = diff.interval(lb.options.level)
            p, test = inference.paired_test(a, b, key)
        label = f"Δm% {group_of(key)}" if is_group_key(key) else {"avg": "Avg", "delta_m": "Δm%"}.get(
            key, key.replace("/", " "))
        rows.append({"column": label, "key": key, a: va, b: vb, "difference": va - vb, "lo": lo, "hi": hi,
                     "test": test, "p": p})
    frame = pd.DataFrame(rows)
    frame["p_adj"] = stats.adjust(frame["p"].to_numpy(dtype=float), lb.options.correction)
    return frame


def compare_markdown(lb: Leaderboard, frame: pd.DataFrame, a: str, b: str) -> str:
    """``compare_<a>_vs_<b>.md``: the comparison table and what its numbers are."""
    o = lb.options
    level = f"{100 * o.level:g}%"
    used = [t for t in dict.fromkeys(frame["test"]) if t]
    how = "; ".join(f"{t}: {TESTS[t]}" for t in used) or "none"
    lines = [f"# {a} vs {b} ({lb.suite}, {lb.split})\n",
             f"Difference = {a} − {b} in points (Δm%: in %), with its {level} two-level t interval (seed variance "
             f"plus the test-set covariance between seeds; paired seed by seed when the rows share their seeds) and "
             f"a two-sided test ({how}); p adjusted over these {frame['p'].notna().sum()} tests with "
             f"{stats.CORRECTIONS[o.correction]}.\n",
             md_row(["column", a, b, "difference", f"{level} interval", "test", "p", "p adj"]),
             "|---|" + "---:|" * 7]
    for row in frame.to_dict("records"):
        delta = row["key"] == "delta_m" or is_group_key(row["key"])
        signed = Column("d", "", "", digits=2 if delta else 1, kind="signed")
        plain = replace(signed, kind="signed" if delta else "float")
        span = "—" if is_nan(row["lo"]) else f"[{number(row['lo'], signed)}, {number(row['hi'], signed)}]"
        lines.append(md_row([row["column"], number(row[a], plain), number(row[b], plain),
                              number(row["difference"], signed), span, row["test"] or "—", _p(row["p"]),
                              _p(row["p_adj"])]))
    if lb.inference is None or not lb.inference.any():
        lines.append("\nNo per-example predictions (records older than schema 2): differences of means only.")
    else:
        few = [f"{n} has {len(lb.inference.infos[n].seeds)}" for n in (a, b)
               if n in lb.inference.infos and len(lb.inference.infos[n].seeds) < o.min_seeds]
        if few:
            lines.append(f"\nNot a claim about training methods: {' and '.join(few)} seed(s), fewer than the "
                         f"{o.min_seeds} a mark needs; with one seed a test is about this test set only.")
    if lb.inference is not None and a in lb.inference.infos and b in lb.inference.infos:
        setup = {n: {k: lb.inference.infos[n].config.get(k) for k in ("suite", "budget_match")} for n in (a, b)}
        diff = config_differences(setup)  # suite and budget settings; strategies and their params differ anyway
        if diff[a]:
            lines.append(f"\nThe rows were trained under different settings: {', '.join(diff[a])} ({a}) vs "
                         f"{', '.join(diff[b])} ({b}).")
    return "\n".join(lines) + "\n"


def _p(p: float) -> str:
    if is_nan(p):
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"
