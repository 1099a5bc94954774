"""Where a row sits in a table, which colour it gets and which family it belongs to: declared by the plug-ins,
never named here.

A strategy lists the rows its ``run`` returns in table order (``Strategy.rows``) and may give each a colour
(``Strategy.colours``) and a family (``Strategy.families``). Strategies are ordered as ``DEFAULT_STRATEGIES`` in
:mod:`bench.config` lists them, then by name; a row kind no registered strategy declares (a record of a plug-in that
is not installed here) goes last, with a stable colour from the spare palette.

A row's **family** (what the report's forest, Pareto and per-task figures colour and group by) is, in this order:

1. the family its strategy declares for the row kind (``separate`` -> ``baseline``; ``fused`` and
   ``fuse_then_joint`` -> ``fusion``, whatever weighting their joint phase used);
2. else the family of the weighting the row trained with (``Balancer.family``: ``loss`` or ``gradient``): the one
   named in its brackets (``naive_mtl[weighting=pcgrad]`` -> ``gradient``), else the default of its strategy's
   ``weighting`` parameter (a plain ``naive_mtl`` row: ``equal`` -> ``loss``);
3. else ``other`` (a custom ``label=`` row, a plug-in that is not installed here).

Example:
    >>> sort_key("naive_mtl") < sort_key("naive_mtl[weighting=pcgrad]") < sort_key("zz_unknown")
    True
    >>> family("separate"), family("naive_mtl"), family("naive_mtl[weighting=pcgrad,train.lr=0.001]")
    ('baseline', 'loss', 'gradient')
    >>> family("fuse_then_joint[fusion=ties,weighting=mgda]"), family("zz_unknown")
    ('fusion', 'other')
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from typing import NamedTuple

from bench.config import DEFAULT_STRATEGIES
from bench.errors import BenchError
from bench.record import base_strategy

# Okabe & Ito (2008), "Color Universal Design": what rows without a declared colour draw from
OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky_blue": "#56B4E9", "bluish_green": "#009E73",
             "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "reddish_purple": "#CC79A7"}
SPARE_COLOURS = (OKABE_ITO["reddish_purple"], OKABE_ITO["yellow"])


@dataclass(frozen=True)
class Family:
    """How the figures show one family of rows: legend label, colour (Okabe–Ito) and marker (so that the families
    still differ in greyscale)."""

    name: str
    label: str
    colour: str
    marker: str


#: the families in the order the figures group them; a plug-in may declare another name (drawn after these)
FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("baseline", "baseline (separate fine-tunes)", OKABE_ITO["black"], "s"),
    Family("fusion", "fusion (fused, fuse-then-joint)", OKABE_ITO["bluish_green"], "D"),
    Family("loss", "loss-level weightings", OKABE_ITO["orange"], "o"),
    Family("gradient", "gradient-level aggregators", OKABE_ITO["blue"], "^"),
)}
OTHER = "other"
_OTHER_STYLE = Family(OTHER, "other", OKABE_ITO["reddish_purple"], "v")


class RowKind(NamedTuple):
    strategy: int  # position of the declaring strategy
    row: int  # position among that strategy's rows
    colour: str | None  # declared colour
    family: str | None  # declared family
    weighting: str | None  # the default of the strategy's ``weighting`` parameter, if it has one


_cache: dict[tuple[str, ...], dict[str, RowKind]] = {}
_discovered = False


def _default_weighting(cls) -> str | None:
    field = getattr(cls.Params, "model_fields", {}).get("weighting")
    return field.default if field is not None and isinstance(field.default, str) else None


def row_kinds() -> dict[str, RowKind]:
    """Row kind -> what its strategy declares (:class:`RowKind`). Called from sort keys: the strategy folders are
    imported once per process, and the table is rebuilt only when the registry changed."""
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
        kinds: dict[str, RowKind] = {}
        for i, name in enumerate(order):
            cls = STRATEGIES.get(name)
            for j, row in enumerate(cls.row_names()):
                kinds.setdefault(row, RowKind(i, j, cls.colours.get(row), getattr(cls, "families", {}).get(row),
                                              _default_weighting(cls)))
        _cache.clear()
        _cache[names] = kinds
    return _cache[names]


def sort_key(variant: str) -> tuple:
    """Table order: by strategy, then the strategy's own row order, the plain row before its variants."""
    base = base_strategy(variant)
    kind = row_kinds().get(base)
    i, j = (kind.strategy, kind.row) if kind else (len(DEFAULT_STRATEGIES) + 1000, 0)
    return (i, j, base, variant != base, variant)


def colour(variant: str) -> str:
    """The colour of a variant's row kind: declared by its strategy, else a stable pick from the spare colours."""
    base = base_strategy(variant)
    kind = row_kinds().get(base)
    return (kind.colour if kind else None) or SPARE_COLOURS[zlib.crc32(base.encode()) % len(SPARE_COLOURS)]


_WEIGHTING_IN_NAME = re.compile(r"(?:^|,)weighting=([A-Za-z0-9_.\-]+)(?=,|$)")


def row_weighting(variant: str) -> str | None:
    """The weighting a row's name says it trained with: ``naive_mtl[weighting=pcgrad,train.lr=0.001]`` ->
    ``pcgrad``; else the default of its strategy's ``weighting`` parameter; else None."""
    base = base_strategy(variant)
    if variant != base and variant.endswith("]"):
        found = _WEIGHTING_IN_NAME.search(variant[len(base) + 1:-1])
        if found:
            return found.group(1)
    kind = row_kinds().get(base)
    return kind.weighting if kind else None


def weighting_family(name: str | None) -> str | None:
    """The family a registered weighting declares (``Balancer.family``), or None for an unknown name."""
    if not name:
        return None
    from bench.weighting import WEIGHTINGS

    return getattr(WEIGHTINGS.get(name), "family", None) if name in WEIGHTINGS else None


def family(variant: str) -> str:
    """A row's family (module docstring): its strategy's declaration, else its weighting's, else ``other``."""
    kind = row_kinds().get(base_strategy(variant))
    if kind is not None and kind.family:
        return kind.family
    return weighting_family(row_weighting(variant)) or OTHER


def family_style(name: str) -> Family:
    """Label, colour and marker of a family; a name the figures do not know gets a stable spare colour."""
    if name in FAMILIES:
        return FAMILIES[name]
    if name == OTHER:
        return _OTHER_STYLE
    return Family(name, name, SPARE_COLOURS[zlib.crc32(name.encode()) % len(SPARE_COLOURS)], "v")


def family_order(name: str) -> int:
    """Where a family's group sits in the figures: as :data:`FAMILIES` lists them, then unknown ones, ``other`` last."""
    names = list(FAMILIES)
    return names.index(name) if name in names else len(names) + (1 if name == OTHER else 0)
