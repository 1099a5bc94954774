"""`python -m bench report suite=a,b,c` (or ``suite=all``): the cross-suite summary (docs/across_suites.md).

Scores. Per suite, task and seed, a method's primary *test* metric N is divided by the mean B over seeds of the
suite's ``separate`` row on that task (N/B for a higher-is-better metric, B/N for a lower-is-better one), so every
task's separate mean is 1 and a score of 1.05 means "5 % better than separate fine-tunes" whatever the metric.
A run is one seed; a stratum is one (suite, task); a method is a leaderboard row name, the same in every suite (a
``suite=<name>`` part that a ``bench run suite=a,b`` sweep adds to labels is dropped). Only methods present in
every selected suite are compared (the others are named in a note), and only strata where each of them has a score.

Statistics, after Agarwal et al. (2021, "Deep RL at the edge of the statistical precipice") and Demšar (2006):

* interquartile mean (IQM: :func:`scipy.stats.trim_mean` with 0.25 of all runs of all strata, as rliable's
  ``aggregate_iqm``), the mean, and the fraction of runs above the separate mean (score > 1), each with a
  stratified percentile bootstrap interval (seeds resampled with replacement within each stratum, the strata kept:
  :func:`scipy.stats.bootstrap` with one independent sample per stratum);
* performance profiles: the fraction of runs with score > τ on a grid of τ, with pointwise stratified bands;
* probability of improvement P(X > Y): per stratum the Mann–Whitney U / (m·n) of X's runs against Y's (ties
  count one half), averaged over strata, with a stratified bootstrap that resamples X and Y independently;
* average ranks of the methods over the strata (seed means; rank 1 = best), the Friedman test
  (:func:`scipy.stats.friedmanchisquare`, three methods or more), the Nemenyi post-hoc
  (:func:`scikit_posthocs.posthoc_nemenyi_friedman`) and Demšar's critical difference, drawn by
  :func:`scikit_posthocs.critical_difference_diagram` (:mod:`bench.report.across_plots`).

rliable itself is not a dependency: its only release pins ``arch<8``, whose releases fail to import under pandas 3
(and arch 8 refuses the ``random_state`` argument rliable passes), so its bootstrap cannot run beside this
project's pandas; the definitions above are rliable's, computed with scipy (docs/across_suites.md, "Libraries").
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from scipy import stats as st

from bench.config import BASELINE_STRATEGY
from bench.errors import BenchError, did_you_mean
from bench.record import base_strategy
from bench.report.records import load_records, metrics_frame, row_name, task_specs
from bench.report.style import sort_key
from bench.suites import stored_suite, stored_suites

ALL = "all"
SPLIT = "test"  # the only split the cross-suite report reads
TAUS = 201  # points of the performance-profile grid
SEED = 0  # the bootstrap's seed: the same records give the same files
OPTIONS = ("suite", "results_dir", "out", "level", "bootstrap", "compare", "strategy", "baseline", "split")

__all__ = ["AcrossReport", "across_command", "build_across", "iqm", "method_name", "probability_of_improvement",
           "resolve_suites", "stratified_interval", "write_across"]


# ------------------------------------------------------------------------------------------------ suites


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


# ----------------------------------------------------------------------------------------------- scores


def _parts(inner: str) -> list[str]:
    """``"fusion=ties,weights=[1,2]"`` -> ``["fusion=ties", "weights=[1,2]"]`` (commas inside brackets kept)."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(inner):
        depth += char in "[{("
        depth -= char in "]})"
        if char == "," and depth == 0:
            parts.append(inner[start:i])
            start = i + 1
    parts.append(inner[start:])
    return [p for p in parts if p]


def method_name(variant: str) -> str:
    """A row name as a cross-suite method: the ``suite=…`` part a suite sweep adds to labels is dropped.

    >>> method_name("naive_mtl[suite=synthetic]"), method_name("fused[fusion=ties,suite=text]")
    ('naive_mtl', 'fused[fusion=ties]')
    >>> method_name("naive_mtl[weights=[1,2],train.epochs=3]")
    'naive_mtl[weights=[1,2],train.epochs=3]'
    """
    base, bracket, rest = variant.partition("[")
    if not bracket or not variant.endswith("]"):
        return variant
    parts = [p for p in _parts(rest[:-1]) if not p.startswith("suite=")]
    return f"{base}[{','.join(parts)}]" if parts else base


def suite_scores(results_dir: Path, suite: str, baseline: str) -> tuple[pd.DataFrame, list[str]]:
    """One suite's normalised scores: a row per (method, task, seed) with the raw primary test metric ``value``,
    the ``baseline`` mean ``reference`` and ``score`` (1 = the baseline's mean); and notes on what was left out."""
    records = load_records(results_dir, suite)
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
        present = sorted(set(frame["method"]), key=sort_key)
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


# ------------------------------------------------------------------------------------------- statistics


def iqm(values) -> float:
    """Interquartile mean of all values (rliable's ``aggregate_iqm``: scipy's trim_mean cutting 25 % per side).

    >>> iqm([[1.0, 2.0, 3.0, 100.0], [2.0, 2.0, 3.0, -50.0]])
    2.25
    """
    return float(st.trim_mean(np.asarray(values, dtype=float), 0.25, axis=None))


def _iqm(*strata):
    return st.trim_mean(np.concatenate(strata, axis=-1), 0.25, axis=-1)


def _mean(*strata):
    return np.concatenate(strata, axis=-1).mean(axis=-1)


def _profile(taus: np.ndarray) -> Callable:
    def fraction_above(*strata):
        runs = np.concatenate(strata, axis=-1)
        return np.moveaxis((runs[..., None, :] > taus[:, None]).mean(axis=-1), -1, 0)  # (taus, *batch)

    return fraction_above


def probability_of_improvement(x: list[np.ndarray], y: list[np.ndarray]):
    """P(X > Y): per stratum the share of (x run, y run) pairs with x > y, ties counting one half (Mann–Whitney U
    over m·n, rliable's ``probability_of_improvement``), averaged over strata. Leading batch axes broadcast.

    >>> probability_of_improvement([np.array([1.0, 3.0])], [np.array([2.0, 3.0])])  # (0 + 0 + 1 + 0.5) / 4
    0.375
    """
    per = [(a[..., :, None] > b[..., None, :]).mean(axis=(-2, -1))
           + 0.5 * (a[..., :, None] == b[..., None, :]).mean(axis=(-2, -1)) for a, b in zip(x, y)]
    out = np.mean(per, axis=0)
    return float(out) if np.ndim(out) == 0 else out


def stratified_interval(strata: list[np.ndarray], statistic: Callable, level: float, reps: int,
                        seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval at ``level`` of ``statistic(*strata)`` under the stratified bootstrap: each stratum's
    runs resampled with replacement, independently, its size kept (:func:`scipy.stats.bootstrap`, one sample per
    stratum). A one-run stratum stays as it is (its only resample); with no stratum of two runs the interval is NaN.
    ``statistic`` takes arrays with leading batch axes and reduces the last one."""
    strata = [np.asarray(s, dtype=float) for s in strata]
    varying = [i for i, s in enumerate(strata) if len(s) >= 2]
    shape = np.shape(statistic(*strata))
    if not varying:
        return np.full(shape, np.nan), np.full(shape, np.nan)

    def resampled(*samples, axis=-1):
        batch = samples[0].shape[:-1]
        full = [np.broadcast_to(s, batch + s.shape) for s in strata]
        for i, sample in zip(varying, samples):
            full[i] = sample
        return statistic(*full)

    result = st.bootstrap([strata[i] for i in varying], resampled, n_resamples=reps, paired=False,
                          vectorized=True, method="percentile", confidence_level=level, axis=-1,
                          rng=np.random.default_rng(seed))
    return np.asarray(result.confidence_interval.low), np.asarray(result.confidence_interval.high)


# ----------------------------------------------------------------------------------------------- report


@dataclass
class Ranks:
    """Average ranks over the strata (1 = best), the Friedman test, the Nemenyi p-values and the CD."""

    blocks: pd.DataFrame  # strata × methods: seed-mean scores
    average: pd.Series  # method -> average rank
    friedman: float  # χ² (NaN with fewer than 3 methods)
    friedman_p: float
    nemenyi: pd.DataFrame  # methods × methods p-values
    cd: float  # Demšar's critical difference at α


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


def rank_test(blocks: pd.DataFrame, level: float) -> Ranks:
    """Ranks of the methods (columns) within each stratum (row) of seed-mean scores, 1 = best (ties share the
    average rank), averaged; Friedman (scipy) when there are 3 methods or more; Nemenyi p-values
    (scikit-posthocs); Demšar's CD = q_α √(k(k+1)/(6N)), q_α the studentized range quantile over √2."""
    import scikit_posthocs as sp

    values = blocks.to_numpy(float)
    n, k = values.shape
    average = pd.Series(st.rankdata(-values, axis=1).mean(axis=0), index=blocks.columns)
    friedman = friedman_p = math.nan
    if k >= 3 and n >= 2:
        test = st.friedmanchisquare(*values.T)
        friedman, friedman_p = float(test.statistic), float(test.pvalue)
    nemenyi = sp.posthoc_nemenyi_friedman(pd.DataFrame(values, columns=list(blocks.columns)))
    nemenyi = nemenyi.loc[list(blocks.columns), list(blocks.columns)]
    cd = float(st.studentized_range.ppf(level, k, np.inf) / math.sqrt(2) * math.sqrt(k * (k + 1) / (6 * n)))
    return Ranks(blocks, average, friedman, friedman_p, nemenyi, cd)


def _common(frames: dict[str, pd.DataFrame], baseline: str, wanted: list[str] | None) -> tuple[list[str], list[str]]:
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
    for suite in names:
        frames[suite], suite_notes = suite_scores(results_dir, suite, baseline)
        notes += suite_notes
    methods, dropped = _common(frames, baseline, strategies)
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
                        per_suite, profiles, improvement, ranks, tuple(compare) if compare else None, dropped, notes)


def _summary(runs: dict, ranks: Ranks, methods: list[str], level: float, reps: int) -> pd.DataFrame:
    rows = []
    above = _profile(np.array([1.0]))
    for method in methods:
        strata = runs[method]
        entry = {"method": method}
        for key, statistic in (("iqm", _iqm), ("mean", _mean), ("above", lambda *s: above(*s)[0])):
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
            lo, hi = stratified_interval(strata, _iqm, level, reps)
            rows.append({"suite": suite, "method": method, "iqm": float(_iqm(*strata)), "iqm_lo": float(lo),
                         "iqm_hi": float(hi), "runs": int(sum(len(s) for s in strata))})
    return pd.DataFrame(rows)


def _profiles(runs: dict, scores: pd.DataFrame, methods: list[str], level: float, reps: int) -> pd.DataFrame:
    low, high = float(scores["score"].min()), float(scores["score"].max())
    pad = 0.02 * max(high - low, 1e-6)
    taus = np.linspace(min(low, 1.0) - pad, max(high, 1.0) + pad, TAUS)
    profile = _profile(taus)
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


# ------------------------------------------------------------------------------------------------ output


def _num(value: float, digits: int = 3) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _interval(point: float, lo: float, hi: float, digits: int = 3) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return _num(point, digits)
    return f"{_num(point, digits)} [{_num(lo, digits)}, {_num(hi, digits)}]"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def caption(report: AcrossReport) -> str:
    pct = f"{report.level * 100:g}%"
    n_strata = len(report.strata)
    return (f"Suites {', '.join(report.suites)}: {n_strata} tasks. Score = primary {SPLIT} metric / the suite's "
            f"{report.baseline} mean on the task (inverted for lower-is-better metrics), so {report.baseline} = 1; "
            f"runs = seeds. IQM = interquartile mean of all runs; `> 1` = fraction of runs above the "
            f"{report.baseline} mean; rank = average rank over the {n_strata} tasks (seed means, 1 = best). "
            f"Brackets: {pct} stratified percentile bootstrap intervals ({report.reps} replicates, seeds resampled "
            f"within each task).")


def main_table(report: AcrossReport) -> str:
    header = ["method", "IQM", "mean", "> 1", "rank", "runs"]
    rows = [[r.method, _interval(r.iqm, r.iqm_lo, r.iqm_hi), _interval(r.mean, r.mean_lo, r.mean_hi),
             _interval(r.above, r.above_lo, r.above_hi, 2), f"{r.rank:.2f}", str(r.runs)]
            for r in report.summary.itertuples()]
    return _md_table(header, rows)


def rank_text(report: AcrossReport) -> str:
    r = report.ranks
    k, n = r.blocks.shape[1], r.blocks.shape[0]
    friedman = (f"Friedman χ²({k - 1}) = {r.friedman:.2f}, p = {r.friedman_p:.3g}" if math.isfinite(r.friedman)
                else "Friedman: needs 3 methods or more")
    return (f"{friedman}; Nemenyi critical difference at α = {report.alpha:.3g}: {r.cd:.2f} ranks "
            f"(k = {k} methods, N = {n} tasks): two methods whose average ranks differ by more are significantly "
            "different.")


def to_rich(report: AcrossReport, compact: bool = False):
    """The summary table for the terminal (``compact``: without the mean column)."""
    from rich.table import Table

    table = Table(title=f"Across suites: {' + '.join(report.suites)} ({SPLIT})", title_justify="left")
    header = ["method", "IQM", "mean", "> 1", "rank", "runs"]
    if compact:
        header.remove("mean")
    for name in header:
        table.add_column(name, no_wrap=True, justify="left" if name == "method" else "right")
    for r in report.summary.itertuples():
        cells = {"method": r.method, "IQM": _interval(r.iqm, r.iqm_lo, r.iqm_hi),
                 "mean": _interval(r.mean, r.mean_lo, r.mean_hi), "> 1": _interval(r.above, r.above_lo, r.above_hi, 2),
                 "rank": f"{r.rank:.2f}", "runs": str(r.runs)}
        table.add_row(*(cells[name] for name in header))
    return table


def to_markdown(report: AcrossReport) -> str:
    out = [f"# Across suites: {' + '.join(report.suites)}\n", caption(report) + "\n", main_table(report) + "\n"]
    if report.notes:
        out.append("\n".join(f"* {note}" for note in report.notes) + "\n")
    out.append("## IQM per suite\n")
    table = report.per_suite
    header = ["method", *report.suites]
    rows = []
    for method in report.methods:
        cells = [method]
        for suite in report.suites:
            hit = table[(table["method"] == method) & (table["suite"] == suite)]
            cells.append(_interval(*hit[["iqm", "iqm_lo", "iqm_hi"]].iloc[0]) if len(hit) else "—")
        rows.append(cells)
    out.append(_md_table(header, rows) + "\n")
    out.append("## Probability of improvement\n")
    out.append("P(X > Y): the probability that a run of X scores above a run of Y on a task, averaged over tasks "
               "(Mann–Whitney U / (m·n), ties count one half); 0.5 = no difference. P(Y > X) = 1 − P(X > Y).\n")
    pairs = report.improvement
    shown = pairs if report.compare else pairs.iloc[::2]
    out.append(_md_table(["X", "Y", "P(X > Y)"], [[r.x, r.y, _interval(r.p, r.lo, r.hi, 2)]
                                                   for r in shown.itertuples()]) + "\n")
    out.append("## Ranks\n")
    out.append(rank_text(report) + "\n")
    nem = report.ranks.nemenyi
    out.append("Nemenyi p-values:\n")
    out.append(_md_table(["", *nem.columns], [[m, *(_p(v) for v in nem.loc[m])] for m in nem.index]) + "\n")
    return "\n".join(out)


def _p(value: float) -> str:
    return "—" if not math.isfinite(value) else (f"{value:.3f}" if value >= 0.001 else f"{value:.1e}")


def _json(report: AcrossReport) -> str:
    r = report.ranks
    data = {
        "suites": report.suites, "split": SPLIT, "baseline": report.baseline, "level": report.level,
        "bootstrap": report.reps, "methods": report.methods, "dropped_methods": report.dropped, "notes": report.notes,
        "normalisation": f"score = value / mean({report.baseline}) for higher-is-better metrics, "
                         f"mean({report.baseline}) / value for lower-is-better ones, per suite and task",
        "summary": report.summary.to_dict(orient="records"),
        "per_suite": report.per_suite.to_dict(orient="records"),
        "probability_of_improvement": report.improvement.to_dict(orient="records"),
        "ranks": {"average": r.average.to_dict(), "friedman_chi2": r.friedman, "friedman_p": r.friedman_p,
                  "critical_difference": r.cd, "tasks": [f"{s}/{t}" for s, t in r.blocks.index],
                  "nemenyi_p": r.nemenyi.to_dict()},
        "profiles": report.profiles.to_dict(orient="records"),
        "scores": report.scores.to_dict(orient="records"),
    }
    return json.dumps(_finite(data), indent=1, default=_plain, allow_nan=False) + "\n"


def _plain(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def _finite(value):
    """NaN -> null, recursively (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return None
    return value


def default_out(results_dir: Path | str, suites, names: list[str]) -> Path:
    """``results_dir/across/<suites joined by +>`` (``all`` for ``suite=all``)."""
    tag = ALL if isinstance(suites, str) and suites == ALL else "+".join(names)
    return Path(results_dir) / "across" / re.sub(r"[^A-Za-z0-9_.+=-]+", "_", tag)


def write_across(report: AcrossReport, out_dir: Path) -> dict[str, Path]:
    """across.{md,json}, the CSV tables and the figures (PNG + PDF); returns name -> path."""
    from bench.report.across_plots import write_figures

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"md": out_dir / "across.md", "json": out_dir / "across.json"}
    paths["md"].write_text(to_markdown(report))
    paths["json"].write_text(_json(report))
    nem = report.ranks.nemenyi.copy()
    nem.index.name = "method"
    tables = {"summary": report.summary, "per_suite": report.per_suite, "improvement": report.improvement,
              "ranks": report.ranks.average.rename("rank").rename_axis("method").reset_index(),
              "nemenyi": nem.reset_index(), "profiles": report.profiles, "scores": report.scores}
    for name, table in tables.items():
        path = out_dir / f"across_{name}.csv"
        table.to_csv(path, index=False)
        paths[f"{name}_csv"] = path
    paths |= write_figures(report, out_dir)
    return paths


def check_options(level=None, bootstrap=None) -> tuple[float, int]:
    """``level`` in (0, 1) (default 0.95) and ``bootstrap`` replicates, a whole number >= 100 (default 2000)."""
    if level is None:
        level = 0.95
    elif isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise BenchError(f"level={level!r} must be a confidence level in (0, 1), e.g. level=0.95")
    if bootstrap is None:
        bootstrap = 2000
    elif isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 100:
        raise BenchError(f"bootstrap={bootstrap!r} must be a whole number of replicates >= 100, e.g. bootstrap=2000")
    return float(level), int(bootstrap)


def _names(value) -> list[str] | None:
    if value is None or value == "":
        return None
    items = value.split(",") if isinstance(value, str) else [str(getattr(v, "text", v)) for v in value]
    return [s.strip() for s in items if s.strip()]


def across_command(opts: dict) -> int:
    """CLI entry of ``bench report suite=a,b,…|all``: options ``results_dir``, ``out``, ``level``, ``bootstrap``,
    ``compare=a,b``, ``strategy=a,b`` (methods to keep; the baseline always stays), ``baseline`` (the row that
    scores are normalised to, default ``separate``); ``split`` can only be ``test``."""
    from rich.console import Console

    from bench.report import compare_names

    unknown = [k for k in opts if k not in OPTIONS]
    if unknown:
        raise BenchError(f"{unknown[0]}= is not an option of the cross-suite report (suite=a,b,...); it takes "
                         f"{', '.join(OPTIONS)}")
    if str(opts.get("split") or SPLIT) != SPLIT:
        raise BenchError(f"split={opts['split']}: the cross-suite report reads the {SPLIT} split only; drop split=")
    level, reps = check_options(opts.get("level"), opts.get("bootstrap"))
    pair = compare_names(opts.get("compare"))
    results_dir = Path(opts.get("results_dir") or "results")
    suites = opts["suite"]
    report = build_across(results_dir, suites, level=level, bootstrap=reps,
                          compare=tuple(pair) if pair else None, strategies=_names(opts.get("strategy")),
                          baseline=str(opts.get("baseline") or BASELINE_STRATEGY))
    out_dir = Path(opts["out"]) if opts.get("out") else default_out(results_dir, suites, report.suites)
    paths = write_across(report, out_dir)
    console = Console()
    console.print(to_rich(report, compact=console.width < 110))

    def line(text: str) -> None:
        console.print(text, highlight=False, markup=False, soft_wrap=True)

    line(caption(report) + ("" if console.width >= 110 else " (narrow terminal: the means are in the files)"))
    for note in report.notes:
        line(f"note: {note}")
    line(rank_text(report))
    if report.compare:
        for r in report.improvement.itertuples():
            line(f"P({r.x} > {r.y}) = {_interval(r.p, r.lo, r.hi, 2)}")
    line(f"wrote {len(paths)} files to {out_dir}:")
    for path in paths.values():
        line(f"  {path}")
    return 0
