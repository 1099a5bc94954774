"""The footnote of rows whose balancer degenerated: a step where the method took a fallback, hit a bound or stopped
its solver short (:meth:`bench.weighting.Balancer.flag`), so that the row is partly another method.

The trainer counts these per training stage (``telemetry["degenerate"] = {event: steps}``) and a row's telemetry
sums them over its training stages (:func:`bench.stages.make_row`). Here a row's counts are summed over its seeds,
set against the optimiser steps the row spent over those seeds (``spent["optimizer_steps"]``: every training stage
of the row, the fine-tunes of ``fuse_then_joint`` included), and said in one sentence per row, e.g.::

    § naive_mtl[weighting=nash_mtl]: fell back to another update (its solver failed) in 37 of 1,200 steps (3.1%) in
    2 of 3 seeds

>>> from bench.record import Row
>>> rows = [Row.of({"metrics": {}, "telemetry": {"degenerate": {"zero_update": 4}}, "spent": {"optimizer_steps": 31}}),
...         Row.of({"metrics": {}, "spent": {"optimizer_steps": 31}})]
>>> footnote("naive_mtl[weighting=cagrad]", row_degeneracy(rows))
'§ naive_mtl[weighting=cagrad]: returned a zero update on a non-zero Jacobian in 4 of 62 steps (6.5%) in 1 of 2 seeds'
>>> row_degeneracy(rows[1:]) is None
True
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from bench.record import Row

#: after the name of a row whose balancer degenerated (Markdown, terminal; LaTeX ``$^{\S}$``); ``†`` marks
#: transductive rows and ``‡`` a published reference row whose Δm% does not follow from its cells
DEGENERATE_MARK = "§"

#: what each event of the built-in balancers means, as the footnote says it (an unknown event prints its name)
PHRASES = {
    "fallback": "fell back to another update (its solver failed)",
    "weight_bound": "had a task weight beyond its bound",
    "zero_update": "returned a zero update on a non-zero Jacobian",
    "stationary_nonzero": "returned a non-zero update at a Pareto-stationary point",
    "not_converged": "stopped its solver before it converged",
}

#: what the CSV/JSON columns of degenerate rows hold (added to ``units`` only on boards that have such a row)
UNITS = ("; degenerate:<event> steps where the row's balancer flagged <event> (a fallback, a bound, a solver "
         "stopped short), summed over seeds; degenerate:<event>:seeds seeds where it happened; degenerate:steps the "
         "optimiser steps of the row's training stages, summed over seeds")


@dataclass(frozen=True)
class Degeneracy:
    """One row's degenerate steps, over its seeds."""

    counts: dict[str, int]  # event -> steps where it happened, summed over seeds
    seeds_with: dict[str, int]  # event -> seeds where it happened at least once
    seeds: int  # the row's seeds
    steps: int | None = None  # optimiser steps summed over the seeds (None: a record that does not say)
    order: tuple[str, ...] = field(default=(), repr=False)  # events in footnote order (known first, then by name)


def row_degeneracy(rows: Iterable[Row]) -> Degeneracy | None:
    """The degenerate steps of one leaderboard row, from its record rows (one per seed); None when none flagged."""
    rows = list(rows)
    counts: dict[str, int] = {}
    seeds_with: dict[str, int] = {}
    for row in rows:
        for event, n in (row.telemetry.degenerate or {}).items():
            if n > 0:
                counts[event] = counts.get(event, 0) + int(n)
                seeds_with[event] = seeds_with.get(event, 0) + 1
    if not counts:
        return None
    return Degeneracy(counts, seeds_with, len(rows), row_steps(rows), event_order(counts))


def event_order(events: Iterable[str]) -> tuple[str, ...]:
    """The built-in events in :data:`PHRASES` order, then any other by name."""
    known = list(PHRASES)
    return tuple(sorted(set(events), key=lambda e: (known.index(e) if e in known else len(known), e)))


def row_steps(rows: list[Row]) -> int | None:
    """The optimiser steps of a leaderboard row summed over its seeds (None when a record does not say)."""
    spent = [(row.spent or {}).get("optimizer_steps") for row in rows]
    ok = all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in spent)
    return int(sum(spent)) if ok and spent else None


def percent(part: int, whole: int) -> str:
    """``part`` of ``whole`` in percent, two significant digits (never 0% or 100% for a part that is not)."""
    share = 100.0 * part / whole
    if part == whole:
        return "100%"
    if share >= 99.5:
        return ">99%"
    if share < 0.01:
        return "<0.01%"
    digits = max(0, 1 - math.floor(math.log10(share)))  # 37/1200 -> 3.1, 1/1200 -> 0.083, 600/1200 -> 50
    return f"{share:.{digits}f}%"


def phrase(event: str) -> str:
    return PHRASES.get(event, f"flagged `{event}`")


def footnote(name: str, deg: Degeneracy) -> str:
    """One sentence for a row: each event's phrase, in how many of its steps, in how many of its seeds."""
    seeds = f"seed{'s' if deg.seeds != 1 else ''}"
    parts = []
    for event in deg.order or sorted(deg.counts):
        n = deg.counts[event]
        steps = (f"{n:,} of {deg.steps:,} steps ({percent(n, deg.steps)})" if deg.steps
                 else f"{n:,} step{'s' if n != 1 else ''}")
        parts.append(f"{phrase(event)} in {steps} in {deg.seeds_with[event]} of {deg.seeds} {seeds}")
    return f"{DEGENERATE_MARK} {name}: " + "; ".join(parts)


def columns(rows: list[Row], events: list[str]) -> dict[str, float]:
    """The CSV/JSON columns of one leaderboard row from its record rows: every event of the board (0 where the row
    had none) and the steps they are counted in."""
    deg = row_degeneracy(rows)
    out: dict[str, float] = {}
    for event in events:
        out[f"degenerate:{event}"] = deg.counts.get(event, 0) if deg else 0
        out[f"degenerate:{event}:seeds"] = deg.seeds_with.get(event, 0) if deg else 0
    steps = row_steps(rows)
    out["degenerate:steps"] = math.nan if steps is None else steps
    return out
