"""The CSV renderer: every split's numeric table stacked (``leaderboard.csv``; the JSON holds the same rows)."""

from __future__ import annotations

import pandas as pd

from bench.report.leaderboard.board import Leaderboard


def to_frame(lbs: list[Leaderboard]) -> pd.DataFrame:
    """All splits' numeric tables stacked (a ``split`` column first): what CSV and JSON hold.

    When a row is transductive, a ``transductive`` column (true/false) follows ``variant``: the row names stay the
    names ``compare=`` and ``strategy=`` take, and files of boards without such rows keep their columns."""
    frames = [lb.table.reset_index().assign(split=lb.split) for lb in lbs]
    frame = pd.concat(frames, ignore_index=True)
    front = ["split", "variant"]
    if any(lb.any_transductive for lb in lbs):
        marked = {(lb.split, v) for lb in lbs for v in lb.transductive}
        frame["transductive"] = [(s, v) in marked for s, v in zip(frame["split"], frame["variant"])]
        front.append("transductive")
    return frame[[*front, *[c for c in frame.columns if c not in front]]]
