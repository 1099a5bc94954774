"""What a leaderboard may claim: intervals, tests against the baseline, winner marks, and when a row gets none.

A mark (``*`` against the baseline, bold or ≈ for the best of a column) is a claim a reader will repeat, so a row
gets one only when the claim can hold (docs/statistics.md, "When a row gets no mark"):

* **seeds**: the row and its baseline have at least ``min_seeds`` seeds (3 by default). With fewer, a seed-disjoint
  A/A check marks far more often than α, so the table shows intervals and p-values but no marks, and its caption says
  how many seeds would be needed;
* **budgets**: the row spent what its baseline spent, within ``budget_tolerance`` (samples seen; optimiser steps
  under ``budget.match=steps``). Otherwise a note gives the ratio and the command that runs the matched control, and
  shows the matched control's Δm% when it is in the store.

Tests are the two-level t tests of :mod:`bench.twolevel` (analytic: no Monte Carlo draw decides a mark). ``*``
uses the table's correction over every markable test; bold is an intersection–union test (the best beats every
other markable row at α, so no correction is needed); ≈ marks the rows that the best does not beat after the
table's correction over its comparisons, i.e. the rows a reader may not call worse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench import stats, twolevel
from bench.report.groups import is_group_key
from bench.report.inference import Inference, RowInfo
from bench.rowid import RowId

MIN_SEEDS = 3  # below this a seed-disjoint A/A check marks well above α (docs/statistics.md has the rates)
POWER = 0.8  # of the MDE in the caption
BUDGET_TOLERANCE = 0.05  # relative difference of samples (or steps) to the baseline above which rows get no mark


@dataclass
class Marking:
    """The marks of one board and the facts its caption and notes state."""

    unmarked: dict[str, str] = field(default_factory=dict)  # row -> why it carries no mark
    n_tests: int = 0
    n_group_tests: int = 0  # tests of the per-group Δm% columns: a correction family of their own
    tests_used: tuple[str, ...] = ()
    mde: float = math.nan
    mde_seeds: int = 0
    mde_more: dict[int, float] = field(default_factory=dict)  # more seeds -> the MDE they would give
    budget_notes: list[str] = field(default_factory=list)


def budget_quantity(info: RowInfo) -> str:
    """What a row's budget is compared by: optimiser steps under ``budget.match=steps``, else samples seen."""
    return "optimizer_steps" if info.config.get("budget_match") == "steps" else "train_samples_seen"


def budget_ratio(table: pd.DataFrame, infos: dict[str, RowInfo], row: str, base: str) -> tuple[float, str]:
    """The row's budget over its baseline's (NaN when either is unknown) and the quantity compared."""
    quantity = budget_quantity(infos[row])
    mine, theirs = table.loc[row].get(quantity, math.nan), table.loc[base].get(quantity, math.nan)
    if any(isinstance(v, float) and math.isnan(v) for v in (mine, theirs)) or not theirs:
        return math.nan, quantity
    return float(mine) / float(theirs), quantity


def why_unmarked(table: pd.DataFrame, infos: dict[str, RowInfo], baselines: dict[str, str | None], row: str,
                 min_seeds: int, tolerance: float) -> str:
    """The reason ``row`` may carry no mark, or "" when it may."""
    k = len(infos[row].seeds)
    if k < min_seeds:
        return f"{k} seed{'s' if k != 1 else ''} (marks need {min_seeds})"
    base = baselines.get(row)
    if base is None or base == row:
        return ""
    kb = len(infos[base].seeds)
    if kb < min_seeds:
        return f"its baseline {base} has {kb} seed{'s' if kb != 1 else ''} (marks need {min_seeds})"
    ratio, quantity = budget_ratio(table, infos, row, base)
    if not math.isnan(ratio) and abs(ratio - 1.0) > tolerance:
        what = "optimiser steps" if quantity == "optimizer_steps" else "training samples"
        return f"{ratio:.2f}× the {what} of {base}"
    return ""


def _matched_control(infos: dict[str, RowInfo], row: str, shown_or_all: list[str]) -> str | None:
    """A row of the store that is ``row``'s configuration under ``budget.match`` (samples or steps), if any."""
    def strip(config: dict) -> dict:
        suite = {k: v for k, v in config.get("suite", {}).items() if k != "budget"}
        return {"suite": suite, "strategy": config.get("strategy"), "params": config.get("params")}
    mine = strip(infos[row].config)
    for other in shown_or_all:
        info = infos[other]
        if other == row or info.origin != infos[row].origin or info.config.get("budget_match", "none") == "none":
            continue
        if strip(info.config) == mine:
            return other
    return None


def _overrides(info: RowInfo) -> list[tuple[str, str]]:
    """The strategy parameters a row's name shows (``naive_mtl[weighting=pcgrad]`` -> [("weighting", "pcgrad")])."""
    parts = [p.split("=", 1) for p in RowId.parse(info.name).params if "=" in p]
    return [(k, v) for k, v in parts if "." not in k and k not in ("data", "config", "schema", "budget_match")]


def _command(suite: str, rows: list[RowInfo], base: RowInfo, quantity: str) -> str:
    """One `bench run` that makes the matched controls of ``rows`` (and their matched baseline)."""
    match = "steps" if quantity == "optimizer_steps" else "samples"
    strategies = list(dict.fromkeys([base.strategy, *(r.strategy for r in rows)]))
    params: dict[str, list[str]] = {}
    for row in rows:
        for key, value in _overrides(row):
            params.setdefault(key, [])
            if value not in params[key]:
                params[key].append(value)
    sweep = "".join(f" strategy.{k}={','.join(v)}" for k, v in params.items())
    k = max(max(len(r.seeds) for r in rows), MIN_SEEDS)
    return f"bench run suite={suite} strategy={','.join(strategies)}{sweep} budget.match={match} seeds={k}"


def budget_notes(table: pd.DataFrame, inference: Inference | None, infos: dict[str, RowInfo],
                 baselines: dict[str, str | None], shown: list[str], order: list[str], suite: str,
                 tolerance: float, level: float) -> list[str]:
    """Notes on the rows whose budget differs from their baseline's: the ratio, and the matched control's Δm% with
    its interval when the store has it, else the one command that runs the matched controls (rows with the same
    ratio and baseline share a note)."""
    groups: dict[tuple, list[str]] = {}
    controls: list[str] = []
    for row in shown:
        base = baselines.get(row)
        if base is None or base == row:
            continue
        ratio, quantity = budget_ratio(table, infos, row, base)
        if math.isnan(ratio) or abs(ratio - 1.0) <= tolerance:
            continue
        what = "optimiser steps" if quantity == "optimizer_steps" else "training samples"
        mine, theirs = table.loc[row, quantity], table.loc[base, quantity]
        head = (f"spent {ratio:.2f}× the {what} of its baseline {base} ({mine:,.0f} vs "
                f"{theirs:,.0f}; tolerance ±{100 * tolerance:g}%): no *, bold or ≈ for it")
        control = _matched_control(infos, row, order)
        if control is not None and inference is not None and control in table.index:
            est = inference.estimate(control, "delta_m")
            value = table.loc[control, "delta_m"]
            if est is not None and not math.isnan(value):
                lo, hi = est.interval(level)
                controls.append(f"{row} {head}; its matched control {control}: Δm% {value:+.2f} [{lo:+.2f}, "
                                f"{hi:+.2f}]")
            else:
                controls.append(f"{row} {head}; its matched control is the row {control}")
            continue
        matching = infos[row].config.get("budget_match", "none")
        if matching != "none":  # already run under budget.match: the strategy spends less here by design
            controls.append(f"{row} {head}; it was run under budget.match={matching}, where this row is an "
                            f"intermediate that spends less by design (docs/budgets.md)")
            continue
        if infos[row].config.get("suite", {}).get("schedule"):  # budget.match is refused under a schedule
            controls.append(f"{row} {head}; budgets cannot be matched under a task schedule: the schedule report "
                            f"puts each step's cost next to retrain's (docs/dynamic_tasks.md)")
            continue
        groups.setdefault((head, base, quantity), []).append(row)
    notes = list(controls)
    for (head, base, quantity), rows in groups.items():
        command = _command(suite, [infos[r] for r in rows], infos[base], quantity)
        if len(rows) == 1:
            notes.append(f"{rows[0]} {head}; run the matched control: `{command}`")
        else:
            plural = head.replace("of its baseline", "of their baseline").replace("for it", "for them")
            notes.append(f"rows {', '.join(rows)} {plural}; run the matched controls: `{command}`")
    return notes


def add_inference(table: pd.DataFrame, inference: Inference, infos: dict[str, RowInfo], shown: list[str],
                  keys: list[str], directions: dict[str, str], baselines: dict[str, str | None], options,
                  ) -> tuple[pd.DataFrame, Marking]:
    """Fill the statistics columns of ``table`` (intervals, components, Wilson cross-checks, tests against the
    baselines corrected over the table, winner marks) and return what the caption needs.

    The tests of the per-group Δm% columns (``delta_m@<group>``) are corrected as a family of their own: they ask
    one question (does sharing help or hurt each group), they re-weigh task differences that the table's family
    already tests, and adding them must not change the marks of the other columns."""
    table = table.copy()
    marking = Marking()
    for name in shown:
        reason = why_unmarked(table, infos, baselines, name, options.min_seeds, options.budget_tolerance)
        if reason:
            marking.unmarked[name] = reason
    families: dict[bool, list[tuple[str, str, float]]] = {False: [], True: []}  # the table's; the per-group Δm%
    used: set[str] = set()
    for name in shown:
        markable = name not in marking.unmarked
        table.loc[name, "unmarked"] = marking.unmarked.get(name, "")
        for key in keys:
            est = inference.estimate(name, key)
            table.loc[name, key + ":markable"] = markable
            if est is not None:
                lo, hi = inference.interval(name, key)
                table.loc[name, [key + ":lo", key + ":hi", key + ":seed_sd", key + ":test_se", key + ":df"]] = [
                    lo, hi, est.seed_sd, est.test_se, est.df]
            if key.endswith("/accuracy"):
                table.loc[name, [key + ":wilson_lo", key + ":wilson_hi"]] = list(
                    inference.wilson(name, key.rsplit("/", 1)[0]))
            base = baselines.get(name)
            if base is None or base == name:
                continue
            p, test = inference.paired_test(name, base, key)
            if math.isnan(p):
                continue
            table.loc[name, key + ":p"] = p
            table.loc[name, key + ":test"] = test
            if markable:
                families[is_group_key(key)].append((name, key, p))
                used.add(test)
    for family in families.values():
        if family:
            adjusted = stats.adjust([p for _, _, p in family], options.correction)
            for (name, key, _), q in zip(family, adjusted):
                table.loc[name, key + ":p_adj"] = float(q)
    for key in keys:
        marks, p_best = winner_marks(table, inference, shown, key, directions[key], options.alpha,
                                     options.correction, set(marking.unmarked))
        for name, mark in marks.items():
            table.loc[name, key + ":mark"] = mark
        for name, p in p_best.items():
            table.loc[name, key + ":p_best"] = p
    marking.n_tests, marking.tests_used = len(families[False]), tuple(sorted(used))
    marking.n_group_tests = len(families[True])
    _power(marking, inference, shown, options)
    return table, marking


def winner_marks(table: pd.DataFrame, inference: Inference, shown: list[str], key: str, direction: str,
                 alpha: float, correction: str = "holm", unmarked: set[str] | frozenset = frozenset(),
                 ) -> tuple[dict[str, str], dict[str, float]]:
    """Marks of one score column: ``{"row": "best"}`` when the best markable row beats every other markable row
    (two-level t, p < alpha each: an intersection–union test), else ``"tie"`` for the best and each row whose
    difference from it is not significant after ``correction`` over those comparisons.

    Only markable rows with estimates compete (``unmarked`` rows and rows without predictions never get a mark);
    when such a row's value is at least the best one, nothing is bold (a win nobody can test). Returns the marks and
    each competitor's raw p against the best.
    """
    values = table[key]
    testable = [r for r in shown if r not in unmarked and not math.isnan(values[r])
                and inference.estimate(r, key) is not None]
    if len(testable) < 2:
        return {}, {}
    sign = 1.0 if direction == "max" else -1.0
    best = max(testable, key=lambda r: (sign * values[r], -shown.index(r)))
    others = [r for r in testable if r != best]
    p_best = {}
    for r in others:
        est = inference.difference(best, r, key)
        p_best[r] = est.p if est is not None and not est.test_only else math.nan
    raw = np.array([p_best[r] for r in others], dtype=float)
    untested_better = any(sign * values[r] >= sign * values[best] for r in shown
                          if r not in testable and not math.isnan(values[r]))
    if np.all(raw < alpha):
        return ({} if untested_better else {best: "best"}), p_best
    adjusted = stats.adjust(raw, correction)
    tied = [r for r, q in zip(others, adjusted) if not q < alpha]
    return {best: "tie", **{r: "tie" for r in tied}}, p_best


def _power(marking: Marking, inference: Inference, shown: list[str], options) -> None:
    """The MDE of Avg for a typical pair of rows at this many seeds, and what more seeds would give."""
    rows = [r for r in shown if inference.estimate(r, "avg") is not None]
    diffs = [inference.difference(a, b, "avg") for i, a in enumerate(rows) for b in rows[i + 1:]]
    diffs = [d for d in diffs if d is not None]
    if not diffs:
        return
    alpha = options.alpha
    marking.mde = twolevel.mde(diffs, alpha=alpha, power=POWER)
    marking.mde_seeds = int(np.median([d.k for d in diffs]))
    paired = [d for d in diffs if d.paired and not d.test_only]
    if not paired:
        return
    seed_var = float(np.median([d.seed_term * d.k for d in paired]))  # per-seed variance of a paired difference
    test_term = float(np.median([d.test_term for d in paired]))
    for k in (5, 10, 20):
        if k > marking.mde_seeds:
            var = seed_var / k + test_term
            df = math.inf if seed_var == 0 else var**2 / ((seed_var / k) ** 2 / (k - 1))
            marking.mde_more[k] = twolevel.mde([twolevel.Estimate(0.0, var, df, seed_var / k, test_term, math.nan,
                                                                  math.nan, False, True, k)], alpha, POWER)

