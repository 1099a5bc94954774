"""A board's caption and notes as sentences: what the numbers are, the intervals, Δm%'s metrics, what ``*``, bold
and ≈ mean, and what the cost columns count (Markdown, terminal and JSON; LaTeX keeps the short form)."""

from __future__ import annotations

import math
import re

from bench import stats
from bench.report.inference import TESTS
from bench.report.leaderboard.board import TRANSDUCTIVE_NOTE, Leaderboard
from bench.report.leaderboard.cells import known
from bench.report.leaderboard.escape import latex_text, tex
from bench.report.marks import POWER


def _examples_text(lb: Leaderboard) -> str:
    if not lb.examples:
        return ""
    counts = set(lb.examples.values())
    if len(counts) == 1:
        return f" ({counts.pop():,} examples per task)"
    return " (" + ", ".join(f"{t} {n:,}" for t, n in lb.examples.items()) + " examples)"


def delta_m_metrics_text(lb: Leaderboard) -> str:
    return ", ".join(f"{t} {m}" for t, m in lb.delta_metrics)


def caption_sentences(lb: Leaderboard, latex: bool = False) -> list[str]:
    """The caption of a board as plain sentences (LaTeX symbols are substituted by :func:`caption`)."""
    o, m = lb.options, lb.marking
    level = f"{100 * o.level:g}%"
    alpha = f"{o.alpha:g}"
    seeds = [int(n) for n in lb.table["n"].dropna()] if "n" in lb.table else []
    out = []
    if lb.has_intervals:
        shape = "[lo, hi]" if o.interval == "brackets" else "as ± half their width"
        without = ""
        task_keys = [k + ":lo" for k in lb.score_keys() if "/" in k and k + ":lo" in lb.table]
        if task_keys and lb.table[task_keys].isna().all(axis=1).any():
            without = ("; rows without predictions: ± std over seeds" if o.interval == "brackets"
                       else "; rows without predictions: (sd) std over seeds")
        joint = ("; the tasks share their inputs, so their test-set errors are correlated"
                 if lb.inference is not None and lb.inference.joint else "")
        if seeds and max(seeds) < 2:
            out.append(f"Mean with {level} intervals {shape} of the test-set variance only (jackknife over the "
                       f"{lb.split} examples{joint}): one seed per row, so the seed variance is unknown and the "
                       f"intervals say nothing about training noise{without}; fractions ×100, mse raw.")
        else:
            one = "; rows with n=1: test-set variance only" if seeds and min(seeds) < 2 else ""
            out.append(f"Mean over seeds (n per row) with {level} two-level t intervals {shape}: mean ± "
                       f"t_ν·√(s²/n + c_e), s the SD over seeds, c_e the test-set covariance between seeds "
                       f"(jackknife over the {lb.split} examples{joint}), ν Welch–Satterthwaite{one}{without}; "
                       f"fractions ×100, mse raw.")
    else:
        out.append("Mean ± std over seeds (n per row); fractions ×100, mse raw; no intervals, tests or significance "
                   "marks (no row has per-example predictions).")
    out.append(f"Δm% (Maninis et al., 2019) vs the separate row of the same budget and data, over: "
               f"{delta_m_metrics_text(lb)}.")
    if m.n_tests:
        correction = ("without correction" if o.correction == "none"
                      else f"after {stats.CORRECTIONS[o.correction]} correction")
        how = "; ".join(TESTS[t] for t in m.tests_used)
        out.append(f"*: differs from separate at α={alpha} {correction} over the table's {m.n_tests} tests ({how}; "
                   f"per task, Avg and Δm%; raw and adjusted p in the CSV/JSON).")
    if lb.groups:
        out.append(group_sentence(lb))
    if lb.has_intervals:
        shown = [v for v in lb.table.index if v not in m.unmarked]
        if seeds and not shown:
            fewest = min(seeds)
            out.append(f"No *, bold or ≈: rows have {fewest} seed{'s' if fewest != 1 else ''}, and marks need ≥ "
                       f"{o.min_seeds} seeds per row and baseline (`seeds={o.min_seeds}`); with fewer, two copies of "
                       f"one configuration are marked different far more often than α.")
        else:
            tie = "underlined" if latex else "≈"
            correction = "" if o.correction == "none" else f" after {stats.CORRECTIONS[o.correction]} correction"
            out.append(f"Bold: best of its column and significantly better than every other markable row (two-level "
                       f"t, p < {alpha} each); {tie}: not significantly worse than the best{correction}; rows with "
                       f"fewer than {o.min_seeds} seeds, another budget than their baseline, or no predictions are "
                       f"never marked. Cost columns: best in bold, untested.")
        if not math.isnan(m.mde):
            more = ", ".join(f"{k} seeds: {v:.1f}" for k, v in m.mde_more.items())
            out.append(f"MDE (Avg, α={alpha}, power {POWER:g}): {m.mde:.1f} points at n={m.mde_seeds}"
                       + (f" ({more})." if more else "."))
    else:
        out.append("Cost columns: best in bold, untested.")
    out.append(f"Samples seen: training examples processed by the row's training stages; peak memory is "
               f"{lb.memory_kind}.")
    if lb.any_transductive:
        out.append(TRANSDUCTIVE_NOTE)
    return out


def groups_text(lb: Leaderboard) -> str:
    return "; ".join(f"{g}: {', '.join(tasks)}" for g, tasks in lb.groups.items())


def group_sentence(lb: Leaderboard) -> str:
    """What the per-group Δm% columns are, and the correction family of their tests."""
    o, n = lb.options, lb.marking.n_group_tests
    family = ""
    if n and o.correction != "none":
        family = (f"; their * is after {stats.CORRECTIONS[o.correction]} correction over their own {n} tests, a "
                  f"family apart from the table's, so the other columns' marks are as without them")
    elif n:
        family = f"; their * is without correction ({n} tests)"
    return (f"Δm% <group> ({groups_text(lb)}): Δm% over that group's tasks only, against the same separate row, with "
            f"the same two-level interval and test{family}.")


def caption(lb: Leaderboard, latex: bool = False) -> str:
    """The board's caption. Markdown, terminal and JSON: the facts, every statistics sentence and what the cost
    columns are. LaTeX: the facts, the split and the cost columns only (a paper's caption); the statistics and the
    notes go to the table's footnote (:mod:`bench.report.render_latex`)."""
    seeds = ", ".join(str(s) for s in lb.seeds)
    split = f"{lb.split.capitalize()} split{_examples_text(lb)}."
    if not latex:
        body = " ".join([split, *caption_sentences(lb, latex), *cost_sentences(lb)])
        return f"Suite {lb.suite}, backbone {lb.backbone}, seeds {{{seeds}}}, budget {lb.budget}. {body}"
    body = " ".join([split, *cost_sentences(lb)])
    return (rf"Suite \texttt{{{tex(lb.suite)}}}, backbone \texttt{{{tex(lb.backbone)}}}, "
            rf"seeds \{{{seeds}\}}, budget {tex(lb.budget)}. {latex_text(body)}")


def cost_sentences(lb: Leaderboard) -> list[str]:
    """What the wall-time and parameter columns count (none with ``columns=scores``)."""
    if lb.options.columns == "scores":
        return []
    out = []
    if known(lb, "wall_own_s"):
        out.append("Wall own: seconds of the stages only this row uses; Wall shared: of the stages other rows here "
                   "use too (fine-tunes, fusions), counted in full in each row.")
    else:
        out.append("Wall: seconds of every stage the row used, stages shared with other rows included.")
    if known(lb, "deployed_params"):
        out.append("Params deployed: the model(s) that serve the tasks (separate: one per task); Params trained: "
                   "summed over every training stage the row used, shared fine-tunes included.")
    else:
        out.append("Params: trained parameters summed over every training stage the row used (separate: one model "
                   "per task).")
    return out


def latex_notes(lb: Leaderboard) -> list[str]:
    """The board's notes as LaTeX sentences, without the command hints (a paper has no command line)."""
    return [latex_text(re.sub(r";\s*(re)?run\b.*$", "", n).rstrip(".") + ".") for n in lb.notes]


def notes_markdown(lb: Leaderboard) -> str:
    return "".join(f"- Note: {note}\n" for note in lb.notes)
