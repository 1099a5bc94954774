"""The Markdown renderer: a GitHub table of one board (``leaderboard.md``; the caption and notes are added by
:func:`bench.report.leaderboard.write.write_tables`)."""

from __future__ import annotations

from bench.report.leaderboard.board import Leaderboard
from bench.report.leaderboard.cells import cell_text, ranks


def md_row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", r"\|") for c in cells) + " |"


def to_markdown(lb: Leaderboard) -> str:
    """A GitHub table: significant winners and the best cost in bold, ties for best marked ≈, ``*`` vs separate."""
    text, rank = cell_text(lb, markdown=True), ranks(lb)
    lines = [md_row(["variant", *text.columns]), "|" + "---|" + "---:|" * len(text.columns)]
    for variant, cells in text.iterrows():
        marked = [f"**{c}**" if r == 1 else c for c, r in zip(cells, rank.loc[variant])]
        name = f"`{variant}`{lb.name_marks(variant)}"  # † transductive, § degenerate (both explained below)
        lines.append(md_row([name, *marked]))
    return "\n".join(lines) + "\n"
