"""Plain text -> LaTeX: specials escaped, the captions' symbols as math (shared by the LaTeX table, its captions and
the column headers)."""

from __future__ import annotations

import re

from bench.report.leaderboard.board import TRANSDUCTIVE_MARK
from bench.report.leaderboard.degenerate import DEGENERATE_MARK

_TEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex(text: str) -> str:
    """Escape LaTeX specials in plain text (variant names, task names, captions)."""
    return "".join(_TEX_SPECIALS.get(char, char) for char in text)


_TEX_SYMBOLS = (("Δm\\%", r"$\Delta_m$\%"), ("×", r"$\times$"), ("±", r"$\pm$"), ("≈", r"$\approx$"),
                ("α", r"$\alpha$"), ("≥", r"$\geq$"), ("–", "--"), ("Δ", r"$\Delta$"), ("*:", r"$^{*}$:"),
                (" < ", r" $<$ "), (" > ", r" $>$ "), (TRANSDUCTIVE_MARK, r"$^{\dagger}$"),
                (DEGENERATE_MARK, r"$^{\S}$"))


def latex_text(text: str) -> str:
    """Plain caption text -> LaTeX: specials escaped, symbols as math, `code` as \\texttt."""
    out = tex(text)
    for plain, latex in _TEX_SYMBOLS:
        out = out.replace(plain, latex)
    return re.sub(r"`([^`]*)`", r"\\texttt{\1}", out)
