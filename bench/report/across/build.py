"""Build the cross-suite report from the records: the common methods and strata, then every statistic."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.config import BASELINE_STRATEGY
from bench.errors import BenchError, did_you_mean
from bench.record import Record
from bench.report.across.scores import SPLIT, resolve_suites, suite_scores
from bench.report.across.statistics import (
    Ranks,
    pooled_iqm,
    pooled_mean,
    probability_of_improvement,
    profile_at,
    rank_test,
    stratified_interval,
)
from bench.report.records import load_records
from bench.report.style import Styles

TAUS = 201  # points of the performance-profile grid


@dataclass
class AcrossReport:
    suites: list[str]
    methods: list[str]
    baseline: str
    level: float
    reps: int
    scores: pd.DataFrame  # every run: suite, task, metric, direction, method, seed, value, reference, score
    summary: pd.DataFrame  # per method: iqm, mean, above (P(score > 1)), their intervals, rank, runs
    per_suite: pd.DataFrame  # per (method, suite): iqm and interval
    profiles: pd.DataFrame  # tau, method, fraction, lo, hi
    improvement: pd.DataFrame  # x, y, p, lo, hi (every ordered pair of methods, or the compare= pair)
    ranks: Ranks
    compare: tuple[str, str] | None = None
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    styles: Styles = field(default_factory=Styles.of, compare=False, repr=False)  # the methods' order and colours

    @property
    def alpha(self) -> float:
        return 1 - self.level

    @property
    def strata(self) -> list[tuple[str, str]]:
        return list(self.ranks.blocks.index)


def _strata(scores: pd.DataFrame, method: str, strata: list[tuple[str, str]]) -> list[np.ndarray]:
    mine = scores[scores["method"] == method]
    groups = {key: g["score"].to_numpy(float) for key, g in mine.groupby(["suite", "task"], sort=False)}
    return [groups[s] for s in strata]


def _common(frames: dict[str, pd.DataFrame], baseline: str, wanted: list[str] | None,
            styles: Styles) -> tuple[list[str], list[str]]:
    sort_key = styles.sort_key
    present = {suite: set(f["method"]) for suite, f in frames.items()}
    common = set.intersection(*present.values())
    dropped = sorted(set.union(*present.values()) - common, key=sort_key)
    if wanted:
        for name in wanted:
            if name not in common:
                valid = ", ".join(sorted(common, key=sort_key))
                raise BenchError(f"strategy={name!r} is not a method of every selected suite"
                                 f"{did_you_mean(name, common)}; in all of them: {valid}")
        dropped += [m for m in sorted(common, key=sort_key) if m not in wanted]
        common = set(wanted) | {baseline}
    return sorted(common, key=sort_key), dropped


def build_across(results_dir: Path | str, suites, *, level: float = 0.95, bootstrap: int = 2000,
                 compare: tuple[str, str] | None = None, strategies: list[str] | None = None,
                 baseline: str = BASELINE_STRATEGY) -> AcrossReport:
    """The cross-suite report of ``suites`` (names or suite YAML paths, or ``"all"``) from the records."""
    results_dir = Path(results_dir)
    names = resolve_suites(suites, results_dir)
    frames, notes = {}, []
    loaded: list[Record] = []  # every suite's records: a row kind keeps the place and colour of the first with it
    for suite in names:
        records = load_records(results_dir, suite)
        loaded += records
        frames[suite], suite_notes = suite_scores(records, suite, baseline, Styles.of(loaded))
        notes += suite_notes
    styles = Styles.of(loaded)
    methods, dropped = _common(frames, baseline, strategies, styles)
    label = ",".join(names)
    if len(methods) < 2:
        raise BenchError(f"suite={label}: {len(methods)} method(s) in every suite ({', '.join(methods) or 'none'}); "
                         f"the cross-suite report needs 2 or more: run the same strategies on each suite, e.g. "
                         f"`python -m bench run suite={label} strategy={BASELINE_STRATEGY},naive_mtl`")
    if dropped:
        notes.insert(0, f"methods not in every selected suite, left out: {', '.join(dropped)}")
    scores = pd.concat(frames.values(), ignore_index=True)
    scores = scores[scores["method"].isin(methods)]
    blocks = scores.groupby(["suite", "task", "method"], sort=False)["score"].mean().unstack("method")
    blocks = blocks.reindex(columns=methods)
    incomplete = blocks.index[blocks.isna().any(axis=1)]
    if len(incomplete):
        notes.append(f"strata left out (a method has no {SPLIT} score there): "
                     + ", ".join(f"{s}/{t}" for s, t in incomplete))
        blocks = blocks.drop(index=incomplete)
        keep = pd.MultiIndex.from_frame(scores[["suite", "task"]]).isin(blocks.index)
        scores = scores[keep]
    if pd.Index(blocks.index.get_level_values(0)).nunique() < 2:
        raise BenchError(f"suite={label}: fewer than 2 suites have tasks every method was scored on; run the same "
                         "strategies on every suite")
    if compare:
        for name in compare:
            if name not in methods:
                raise BenchError(f"compare: {name!r} is not a method of every selected suite"
                                 f"{did_you_mean(name, methods)}; valid: {', '.join(methods)}")
        if compare[0] == compare[1]:
            raise BenchError(f"compare={compare[0]},{compare[1]} names one method twice; name two")
    strata = list(blocks.index)
    runs = {m: _strata(scores, m, strata) for m in methods}
    ranks = rank_test(blocks, level)
    summary = _summary(runs, ranks, methods, level, bootstrap)
    per_suite = _per_suite(scores, methods, names, level, bootstrap)
    profiles = _profiles(runs, scores, methods, level, bootstrap)
    improvement = _improvement(runs, methods, compare, level, bootstrap)
    sizes = sorted({len(s) for r in runs.values() for s in r})
    if len(sizes) > 1:
        notes.append(f"the number of seeds differs between tasks or methods ({sizes[0]} to {sizes[-1]}): a task "
                     "weighs in IQM, mean and profiles by its number of runs; run the same seeds on every suite")
    if any(len(s) < 2 for r in runs.values() for s in r):
        notes.append("strata with one seed are not resampled: intervals hold the seed-to-seed variance of the "
                     "others only; run seeds=2 or more")
    if k_below := (len(methods) < 3):
        notes.append("Friedman test left out: it needs 3 methods or more")
    if not k_below and ranks.friedman_p >= 1 - level:
        notes.append(f"Friedman p = {ranks.friedman_p:.3g} ≥ α = {1 - level:.3g}: the ranks do not differ "
                     "significantly, so the Nemenyi post-hoc differences are not to be read as significant")
    return AcrossReport(names, methods, baseline, level, bootstrap, scores.reset_index(drop=True), summary,
                        per_suite, profiles, improvement, ranks, tuple(compare) if compare else None, dropped, notes,
                        styles)


def _summary(runs: dict, ranks: Ranks, methods: list[str], level: float, reps: int) -> pd.DataFrame:
    rows = []
    above = profile_at(np.array([1.0]))
    for method in methods:
        strata = runs[method]
        entry = {"method": method}
        for key, statistic in (("iqm", pooled_iqm), ("mean", pooled_mean), ("above", lambda *s: above(*s)[0])):
            lo, hi = stratified_interval(strata, statistic, level, reps)
            entry |= {key: float(statistic(*strata)), f"{key}_lo": float(lo), f"{key}_hi": float(hi)}
        entry |= {"rank": float(ranks.average[method]), "runs": int(sum(len(s) for s in strata)),
                  "strata": len(strata)}
        rows.append(entry)
    return pd.DataFrame(rows)


def _per_suite(scores: pd.DataFrame, methods: list[str], suites: list[str], level: float, reps: int) -> pd.DataFrame:
    rows = []
    for suite in suites:
        mine = scores[scores["suite"] == suite]
        for method in methods:
            strata = [g["score"].to_numpy(float) for _, g in mine[mine["method"] == method].groupby("task", sort=False)]
            if not strata:
                continue
            lo, hi = stratified_interval(strata, pooled_iqm, level, reps)
            rows.append({"suite": suite, "method": method, "iqm": float(pooled_iqm(*strata)), "iqm_lo": float(lo),
                         "iqm_hi": float(hi), "runs": int(sum(len(s) for s in strata))})
    return pd.DataFrame(rows)


def _profiles(runs: dict, scores: pd.DataFrame, methods: list[str], level: float, reps: int) -> pd.DataFrame:
    low, high = float(scores["score"].min()), float(scores["score"].max())
    pad = 0.02 * max(high - low, 1e-6)
    taus = np.linspace(min(low, 1.0) - pad, max(high, 1.0) + pad, TAUS)
    profile = profile_at(taus)
    frames = []
    for method in methods:
        lo, hi = stratified_interval(runs[method], profile, level, reps)
        frames.append(pd.DataFrame({"tau": taus, "method": method, "fraction": profile(*runs[method]),
                                    "lo": lo, "hi": hi}))
    return pd.concat(frames, ignore_index=True)


def _improvement(runs: dict, methods: list[str], compare, level: float, reps: int) -> pd.DataFrame:
    pairs = [tuple(compare)] if compare else [(a, b) for i, a in enumerate(methods) for b in methods[i + 1:]]
    rows = []
    for x, y in pairs:
        t = len(runs[x])

        def statistic(*strata, t=t):
            return probability_of_improvement(list(strata[:t]), list(strata[t:]))

        p = probability_of_improvement(runs[x], runs[y])
        lo, hi = stratified_interval(runs[x] + runs[y], statistic, level, reps)
        rows.append({"x": x, "y": y, "p": p, "lo": float(lo), "hi": float(hi)})
        # U_xy + U_yx = m·n in every stratum, and both come from the same replicates: the reverse is exact
        rows.append({"x": y, "y": x, "p": 1 - p, "lo": 1 - float(hi), "hi": 1 - float(lo)})
    return pd.DataFrame(rows, columns=["x", "y", "p", "lo", "hi"])
