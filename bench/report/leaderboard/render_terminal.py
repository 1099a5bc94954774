"""The terminal renderer: a rich table of one board, with its caption and notes (what ``bench report`` and
``bench run`` print)."""

from __future__ import annotations

from bench.report.leaderboard.board import TELEMETRY_COLUMNS, Leaderboard
from bench.report.leaderboard.captions import caption
from bench.report.leaderboard.cells import cell_text, columns, ranks


def to_rich(lb: Leaderboard, compact: bool = False):
    """A rich Table for the terminal (significant winners bold green, ties for best ≈ and underlined).

    ``compact`` (narrow terminals) keeps n, scores, Avg and Δm% and leaves the cost columns to the files.
    """
    from rich import box
    from rich.table import Table
    from rich.text import Text

    text, rank = cell_text(lb), ranks(lb)
    cost = (*TELEMETRY_COLUMNS, "train_samples_seen")
    keep = [c.header for c in columns(lb) if not compact or c.key not in cost]
    text, rank = text[keep], rank[[c.key for c in columns(lb) if c.header in keep]]
    notes = "".join(f"\nNote: {n}" for n in lb.notes)
    table = Table(title=Text(f"{lb.suite}: {lb.split}"), caption=Text(caption(lb) + notes), caption_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    # the variant name must never be squeezed away on a narrow screen; score headers fold instead
    widest = max((len(str(v)) for v in text.index), default=8)
    table.add_column("variant", no_wrap=True, min_width=min(widest, 32), overflow="ellipsis")
    for header in text.columns:
        table.add_column(header, justify="right", overflow="fold")
    styles = {0: "", 1: "bold green", 2: "underline"}
    for variant, cells in text.iterrows():
        name = f"{variant}{lb.name_marks(variant)}"
        table.add_row(Text(name), *(Text(c, style=styles[r]) for c, r in zip(cells, rank.loc[variant])))
    return table
