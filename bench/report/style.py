"""Where a row sits in a table and which colour it gets: declared by the strategies, never named here.

A strategy lists the rows its ``run`` returns in table order (``Strategy.rows``) and may give each a colour
(``Strategy.colours``). Strategies are ordered as ``DEFAULT_STRATEGIES`` in :mod:`bench.config` lists them, then by
name; a row kind no registered strategy declares (a record of a plug-in that is not installed here) goes last,
with a stable colour from the spare palette.

Example:
    >>> sort_key("naive_mtl") < sort_key("naive_mtl[weighting=pcgrad]") < sort_key("zz_unknown")
    True
"""

from __future__ import annotations

import zlib

from bench.config import DEFAULT_STRATEGIES
from bench.errors import BenchError
from bench.record import base_strategy

# Okabe & Ito (2008), "Color Universal Design": what rows without a declared colour draw from
OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky_blue": "#56B4E9", "bluish_green": "#009E73",
             "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "reddish_purple": "#CC79A7"}
SPARE_COLOURS = (OKABE_ITO["reddish_purple"], OKABE_ITO["yellow"])

_cache: dict[tuple[str, ...], dict[str, tuple[int, int, str | None]]] = {}
_discovered = False


def row_kinds() -> dict[str, tuple[int, int, str | None]]:
    """Row kind -> (strategy position, position among its strategy's rows, declared colour or None). Called from
    sort keys: the strategy folders are imported once per process, and the table is rebuilt only when the registry
    changed."""
    global _discovered
    from bench.strategy import STRATEGIES, discover

    if not _discovered:
        _discovered = True
        try:
            discover()  # the built-in strategies and ./strategies: what the records in a store were made with
        except BenchError:
            pass  # a broken plug-in must not stop a report; its rows just sort last
    names = tuple(STRATEGIES.names())
    if names not in _cache:
        order = [n for n in DEFAULT_STRATEGIES if n in names] + [n for n in names if n not in DEFAULT_STRATEGIES]
        kinds: dict[str, tuple[int, int, str | None]] = {}
        for i, name in enumerate(order):
            cls = STRATEGIES.get(name)
            for j, row in enumerate(cls.row_names()):
                kinds.setdefault(row, (i, j, cls.colours.get(row)))
        _cache.clear()
        _cache[names] = kinds
    return _cache[names]


def sort_key(variant: str) -> tuple:
    """Table order: by strategy, then the strategy's own row order, the plain row before its variants."""
    base = base_strategy(variant)
    i, j, _ = row_kinds().get(base, (len(DEFAULT_STRATEGIES) + 1000, 0, None))
    return (i, j, base, variant != base, variant)


def colour(variant: str) -> str:
    """The colour of a variant's row kind: declared by its strategy, else a stable pick from the spare colours."""
    base = base_strategy(variant)
    declared = row_kinds().get(base, (0, 0, None))[2]
    return declared or SPARE_COLOURS[zlib.crc32(base.encode()) % len(SPARE_COLOURS)]
