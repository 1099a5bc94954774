"""The cross-suite report as text: its caption, the Markdown file and the terminal table."""

from __future__ import annotations

import math

from bench.report.across.build import AcrossReport
from bench.report.across.scores import SPLIT


def _num(value: float, digits: int = 3) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def with_interval(point: float, lo: float, hi: float, digits: int = 3) -> str:
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
    rows = [[r.method, with_interval(r.iqm, r.iqm_lo, r.iqm_hi), with_interval(r.mean, r.mean_lo, r.mean_hi),
             with_interval(r.above, r.above_lo, r.above_hi, 2), f"{r.rank:.2f}", str(r.runs)]
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
        cells = {"method": r.method, "IQM": with_interval(r.iqm, r.iqm_lo, r.iqm_hi),
                 "mean": with_interval(r.mean, r.mean_lo, r.mean_hi),
                 "> 1": with_interval(r.above, r.above_lo, r.above_hi, 2),
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
            cells.append(with_interval(*hit[["iqm", "iqm_lo", "iqm_hi"]].iloc[0]) if len(hit) else "—")
        rows.append(cells)
    out.append(_md_table(header, rows) + "\n")
    out.append("## Probability of improvement\n")
    out.append("P(X > Y): the probability that a run of X scores above a run of Y on a task, averaged over tasks "
               "(Mann–Whitney U / (m·n), ties count one half); 0.5 = no difference. P(Y > X) = 1 − P(X > Y).\n")
    pairs = report.improvement
    shown = pairs if report.compare else pairs.iloc[::2]
    out.append(_md_table(["X", "Y", "P(X > Y)"], [[r.x, r.y, with_interval(r.p, r.lo, r.hi, 2)]
                                                   for r in shown.itertuples()]) + "\n")
    out.append("## Ranks\n")
    out.append(rank_text(report) + "\n")
    nem = report.ranks.nemenyi
    out.append("Nemenyi p-values:\n")
    out.append(_md_table(["", *nem.columns], [[m, *(_p(v) for v in nem.loc[m])] for m in nem.index]) + "\n")
    return "\n".join(out)


def _p(value: float) -> str:
    return "—" if not math.isfinite(value) else (f"{value:.3f}" if value >= 0.001 else f"{value:.1e}")
