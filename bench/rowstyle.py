"""How a row describes itself in its record (:class:`bench.record.RowStyle`), computed once, when ``bench run``
writes the record, from the strategy that made the row: so that ``bench report`` shows the row in its place and
colour without importing any strategy, weighting or fusion file (a store copied to a machine without the plug-in
still reports as it was made).

* ``kind``: the row's name among what the strategy returns (``fused``); ``order``: the strategy's rank (its place in
  ``DEFAULT_STRATEGIES``, any other after them, by name) and the kind's place in the strategy's ``rows``;
* ``colour``: the strategy's ``colours`` for the kind (None: the report picks a spare one);
* ``family``: the strategy's ``families`` for the kind, else the ``family`` of the weighting the row trained with
  (its ``weighting`` parameter), else None (the report says ``other``).
"""

from __future__ import annotations

from typing import Any

from bench.record import Row, RowStyle, strategy_rank
from bench.strategy import Strategy
from bench.weighting.base import WEIGHTINGS


def _weighting_family(params: Any) -> str | None:
    weighting = getattr(params, "weighting", None)
    name = getattr(weighting, "name", weighting)  # a spec, or its name
    if not isinstance(name, str) or name not in WEIGHTINGS:
        return None
    family = getattr(WEIGHTINGS.get(name), "family", None)
    return family if isinstance(family, str) else None


def row_style(strategy: type[Strategy], kind: str, params: Any) -> RowStyle:
    """The style of the row ``kind`` that ``strategy`` made with ``params``."""
    kinds = list(strategy.row_names())
    order = kinds.index(kind) if kind in kinds else len(kinds)
    family = getattr(strategy, "families", {}).get(kind) or _weighting_family(params)
    return RowStyle(kind=kind, strategy=strategy.name, order=(strategy_rank(strategy.name), order),
                    colour=strategy.colours.get(kind), family=family)


def with_styles(rows: dict[str, Row], strategy: type[Strategy], params: Any) -> dict[str, Row]:
    """``rows`` (a strategy's validated rows), each carrying its :func:`row_style`."""
    return {kind: row.model_copy(update={"style": row_style(strategy, kind, params)}) for kind, row in rows.items()}
