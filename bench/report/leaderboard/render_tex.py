"""The leaderboard as a LaTeX table that compiles in a two-column paper as it is (``leaderboard.tex``).

* ``table*`` (both columns), the tabular shrunk to ``\\textwidth`` only when wider (``\\resizebox`` with
  ``\\ifdim\\width``), ``booktabs`` rules, a "Scores" / "Costs" header group; needs ``\\usepackage{booktabs}`` and
  ``\\usepackage{graphicx}``;
* the caption says what the table is (suite, backbone, seeds, budget, split) and what the cost columns count; the
  statistics are a short footnote under the table (intervals, Δm%'s metrics, what ``*``, bold and underline mean,
  the number of tests), followed by the board's notes; the full statistical caption of the Markdown table is kept as
  ``%`` comment lines above the table, for the paper's text;
* rows whose scores are identical to another row's carry a letter (``$^{\\mathrm{a}}$``) that the footnote explains;
* ``columns=scores`` (a report option) leaves the cost columns out.

The LaTeX renderer of :mod:`bench.report.leaderboard`.
"""

from __future__ import annotations

import textwrap

from bench import stats
from bench.report.leaderboard.board import COST_COLUMNS, TRANSDUCTIVE_NOTE, Leaderboard
from bench.report.leaderboard.captions import caption, delta_m_metrics_text, groups_text, latex_notes
from bench.report.leaderboard.cells import cell_text, columns, ranks
from bench.report.leaderboard.escape import latex_text, tex
from bench.report.leaderboard.notes import identical_note

__all__ = ["footnote", "to_latex"]

PACKAGES = r"\usepackage{booktabs}, \usepackage{graphicx}"
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _letter(i: int) -> str:
    return rf"$^{{\mathrm{{{_LETTERS[i % len(_LETTERS)]}}}}}$"


def statistics_note(lb: Leaderboard) -> list[str]:
    """The short statistical footnote, as LaTeX sentences (the Markdown caption says the same at length)."""
    o, m = lb.options, lb.marking
    level = f"{100 * o.level:g}\\%"
    seeds = [int(n) for n in lb.table["n"].dropna()] if "n" in lb.table else []
    out = []
    if lb.has_intervals:
        shape = "[lo, hi]" if o.interval == "brackets" else r"$\pm$ half-width"
        if seeds and max(seeds) < 2:
            out.append(f"Mean with {level} test-set interval {shape} (one seed: training noise not included)")
        else:
            out.append(f"Mean over $n$ seeds with {level} two-level $t$ interval {shape} (seeds and test examples)")
    else:
        out.append(r"Mean $\pm$ std over $n$ seeds (no per-example predictions: no intervals or tests)")
    out.append(r"$\Delta_m$\% vs.\ separate over: " + latex_text(delta_m_metrics_text(lb)))
    if m.n_tests:
        correction = ("uncorrected" if o.correction == "none"
                      else f"{latex_text(stats.CORRECTIONS[o.correction])} over {m.n_tests} tests")
        out.append(rf"$^{{*}}$: differs from separate ($\alpha$={o.alpha:g}, {correction})")
    if lb.groups:  # Δm% per group: its tests are a correction family of their own
        own = (f"; its $^{{*}}$: {latex_text(stats.CORRECTIONS[o.correction])} over its own {m.n_group_tests} tests"
               if m.n_group_tests and o.correction != "none" else "")
        out.append(r"$\Delta_m$\% per group over that group's tasks (" + latex_text(groups_text(lb)) + ")" + own)
    if lb.has_intervals:
        if m.unmarked and all(v in m.unmarked for v in lb.table.index):
            if all("seed" in why for why in m.unmarked.values()):
                out.append(f"no marks: they need $\\geq${o.min_seeds} seeds per row and baseline")
            else:
                out.append("no marks: no row may carry one (seeds or budget, notes below)")
        else:
            out.append("bold: significantly best; underlined: not significantly worse than the best")
    if any(c.key in COST_COLUMNS for c in columns(lb)):
        out.append("costs: best in bold, untested")
    sentences = [s[:1].upper() + s[1:] + "." for s in out]
    if lb.any_transductive:
        sentences.append(latex_text(TRANSDUCTIVE_NOTE))
    return sentences


def footnote(lb: Leaderboard) -> str:
    """The footnote under the table: statistics, then the board's notes, then the identical-rows letters."""
    identical = {identical_note(rows, why) for rows, why in lb.identical}
    plain = [n for n, raw in zip(latex_notes(lb), lb.notes) if raw not in identical]
    parts = statistics_note(lb)
    if plain:
        parts.append("Notes: " + " ".join(f"({i}) {n}" for i, n in enumerate(plain, 1)))
    for i, (rows, why) in enumerate(_shown_groups(lb)):
        names = ", ".join(tex(r) for r in rows)
        parts.append(f"{_letter(i)}{names}: identical scores in every task column; {latex_text(why)}.")
    return " ".join(parts)


def _shown_groups(lb: Leaderboard) -> list[tuple[tuple[str, ...], str]]:
    return [(rows, why) for rows, why in lb.identical if sum(r in lb.table.index for r in rows) > 1]


# what latex_text leaves as Unicode, for pdflatex without extra packages (any other character becomes "?")
_ASCII = {"ν": r"$\nu$", "σ": r"$\sigma$", "λ": r"$\lambda$", "θ": r"$\theta$", "²": r"$^2$", "√": r"$\surd$",
          "·": r"$\cdot$", "≤": r"$\leq$", "≠": r"$\neq$", "—": "---", "’": "'", "‘": "`", "“": "``", "”": "''",
          "→": r"$\to$", "…": r"\ldots{}", "−": "$-$", "\u00a0": "~"}


def ascii_tex(text: str) -> str:
    """``text`` with every non-ASCII character spelled in plain LaTeX (pdflatex needs no package for it)."""
    return "".join(c if ord(c) < 128 else _ASCII.get(c, "?") for c in text)


def _comment(text: str) -> list[str]:
    return ["% " + line for line in textwrap.wrap(text, 114, break_long_words=False, break_on_hyphens=False)]


def _header(col) -> str:
    """A column's header, as narrow as its numbers: cost names read upwards, a task metric on two lines (task, then
    metric and unit)."""
    if col.key in COST_COLUMNS:
        return rf"\rotatebox{{90}}{{{col.latex}}}"
    if col.score and "/" in col.key:
        task = tex(col.key.rsplit("/", 1)[0])
        if col.latex.startswith(task + " "):
            return rf"\begin{{tabular}}[b]{{@{{}}c@{{}}}}{task}\\{col.latex[len(task) + 1:]}\end{{tabular}}"
    return col.latex


def to_latex(lb: Leaderboard) -> str:
    """One ``table*``: booktabs rules, significant winners bold, ties for best underlined, ``$^{*}$`` vs separate,
    intervals in \\scriptsize, the statistics as a footnote (module docstring)."""
    cols = columns(lb)
    text, rank = cell_text(lb, latex=True), ranks(lb)
    letters: dict[str, str] = {}
    for i, (rows, _) in enumerate(_shown_groups(lb)):
        for r in rows:
            letters[r] = _letter(i)
    body = []
    for variant, cells in text.iterrows():
        # the identical-rows letter hangs left of the name, which keeps the name and its † together
        mark = rf"\llap{{{letters[variant]}}}" if variant in letters else ""
        name = mark + tex(variant) + (r"$^{\dagger}$" if lb.is_transductive(variant) else "") \
            + (r"$^{\S}$" if variant in lb.degenerate else "")  # its footnote is among the notes
        marked = []
        for cell, r in zip(cells, rank.loc[variant]):
            marked.append(rf"\bfseries {cell}" if r == 1 else rf"\underline{{{cell}}}" if r == 2 else cell)
        body.append(" & ".join([name, *marked]) + r" \\")

    n_cost = sum(c.key in COST_COLUMNS for c in cols)
    n_score = len(cols) - n_cost
    head = []
    if n_cost and n_score > 1:  # a group header: the scores (after n), then the costs
        first, last = 3, 1 + len(cols)
        head.append(rf" & & \multicolumn{{{n_score - 1}}}{{c}}{{Scores}} & \multicolumn{{{n_cost}}}{{c}}{{Costs}} \\")
        head.append(rf"\cmidrule(lr){{{first}-{first + n_score - 2}}} \cmidrule(lr){{{last - n_cost + 1}-{last}}}")
    headers = [_header(c) for c in cols]
    head.append(" & ".join(["Method", *headers]) + r" \\")

    label = f"tab:{lb.suite}-{lb.split}"
    lines = [
        f"% {lb.suite}, {lb.split} split: needs {PACKAGES}. The full statistical caption, for the paper's text:",
        *_comment(caption(lb)),
        r"\begin{table*}[t]",
        r"\centering",
        rf"\caption{{{caption(lb, latex=True)}}}",
        rf"\label{{{label}}}",
        r"\small",
        r"\setlength{\tabcolsep}{3pt}",
        r"\resizebox{\ifdim\width>\textwidth\textwidth\else\width\fi}{!}{%",
        r"\begin{tabular}{l" + "r" * len(cols) + "}",
        r"\toprule",
        *head,
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}}",
        r"\par\smallskip",
        r"\parbox{\textwidth}{\footnotesize\raggedright " + footnote(lb) + "}",
        r"\end{table*}",
    ]
    # the comment lines keep their Unicode (TeX skips them); the table is plain ASCII LaTeX
    return "\n".join(line if line.startswith("%") else ascii_tex(line) for line in lines) + "\n"
