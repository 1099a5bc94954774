"""Where a row sits in a table, which colour it gets and which family it belongs to: declared by the plug-ins,
never named here.

A strategy lists the rows its ``run`` returns in table order (``Strategy.rows``) and may give each a colour
(``Strategy.colours``) and a family (``Strategy.families``). Strategies are ordered as ``DEFAULT_STRATEGIES`` in
:mod:`bench.config` lists them, then by name; a row kind nothing declares goes last, with a stable colour from the
spare palette.

The report imports no plug-in to learn these: a schema-3 record carries each row's :class:`bench.record.RowStyle`,
written by ``bench run`` from the strategy that made it, and :meth:`Styles.of` (called by
:func:`bench.report.records.load_records`, which hands the result on as ``records.styles``) keeps what the loaded
records say in an immutable :class:`Styles` that the leaderboard, the figures and the cross-suite report are given.
Rows of older records fall back to what the plug-in files declare, read from their source without importing them
(:mod:`bench.report.declared`, over the built-ins, ``./strategies`` and the report's ``plugin_dirs=``).

A row's **family** (what the report's forest, Pareto and per-task figures colour and group by) is, in this order:

1. the family its strategy declares for the row kind (``separate`` -> ``baseline``; ``fused`` and
   ``fuse_then_joint`` -> ``fusion``, whatever weighting their joint phase used);
2. else the family of the weighting the row trained with (``Balancer.family``: ``loss`` or ``gradient``): the one
   named in its brackets (``naive_mtl[weighting=pcgrad]`` -> ``gradient``), else the default of its strategy's
   ``weighting`` parameter (a plain ``naive_mtl`` row: ``equal`` -> ``loss``);
3. else ``other`` (a custom ``label=`` row, a plug-in that is not installed here).

Example (no records: what the built-in plug-ins declare):
    >>> styles = Styles.of()
    >>> styles.sort_key("naive_mtl") < styles.sort_key("naive_mtl[weighting=pcgrad]") < styles.sort_key("zz_unknown")
    True
    >>> [styles.family(v) for v in ("separate", "naive_mtl", "naive_mtl[weighting=pcgrad,train.lr=0.001]")]
    ['baseline', 'loss', 'gradient']
    >>> styles.family("fuse_then_joint[fusion=ties,weighting=mgda]"), styles.family("zz_unknown")
    ('fusion', 'other')
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple

from bench.config import DEFAULT_STRATEGIES
from bench.record import Record, base_strategy
from bench.report.declared import declared_kinds, weighting_families
from bench.rowid import RowId

# Okabe & Ito (2008), "Color Universal Design": what rows without a declared colour draw from
OKABE_ITO: Mapping[str, str] = MappingProxyType({
    "black": "#000000", "orange": "#E69F00", "sky_blue": "#56B4E9", "bluish_green": "#009E73",
    "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "reddish_purple": "#CC79A7"})
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
FAMILIES: Mapping[str, Family] = MappingProxyType({f.name: f for f in (
    Family("baseline", "baseline (separate fine-tunes)", OKABE_ITO["black"], "s"),
    Family("fusion", "fusion (fused, fuse-then-joint)", OKABE_ITO["bluish_green"], "D"),
    Family("loss", "loss-level weightings", OKABE_ITO["orange"], "o"),
    Family("gradient", "gradient-level aggregators", OKABE_ITO["blue"], "^"),
    Family("schedule", "schedule strategies (tasks arriving)", OKABE_ITO["vermillion"], "P"),
)})
OTHER = "other"
_OTHER_STYLE = Family(OTHER, "other", OKABE_ITO["reddish_purple"], "v")


class RowKind(NamedTuple):
    rank: int  # the declaring strategy's place in DEFAULT_STRATEGIES (any other: after them, by name)
    strategy: str  # the declaring strategy
    row: int  # position among that strategy's rows
    colour: str | None  # declared colour
    family: str | None  # declared family
    weighting: str | None  # the default of the strategy's ``weighting`` parameter, if it has one (older records)


_WEIGHTING_VALUE = re.compile(r"[A-Za-z0-9_.\-]+")  # a weighting name in a row's brackets


def _declared(dirs: tuple[str, ...]) -> dict[str, RowKind]:
    return {k: RowKind(*d) for k, d in declared_kinds(dirs).items()}


@dataclass(frozen=True)
class Styles:
    """Row order, colours and families of one report: what its loaded records say about their rows, else what the
    plug-in files declare. Built once from the records (:meth:`of`) and passed to the leaderboard, the figures and
    the cross-suite report; read-only, so two reports in one process never see each other's rows."""

    kinds: Mapping[str, RowKind]  # row kind -> its declaration: the records' place and colour, else the files'
    families: Mapping[str, str]  # row name -> the family its record gives (a row's own: it may come from its weighting)
    weightings: Mapping[str, str]  # weighting name -> the family it declares (``Balancer.family``)

    @classmethod
    def of(cls, records: Iterable[Record] = (), plugin_dirs: tuple[str, ...] | list[str] = ()) -> Styles:
        """What ``records`` (named already: :func:`bench.report.records.assign_names`; the first record of a row
        kind gives its place and colour) say about their rows, over what the plug-in files of ``plugin_dirs`` (and
        the built-ins) declare for the rows of older records."""
        dirs = tuple(str(d) for d in plugin_dirs)
        learned: dict[str, RowKind] = {}
        families: dict[str, str] = {}
        for record in records:
            for name, row in record.rows.items():
                style = row.style
                if style is None:
                    continue
                learned.setdefault(style.kind, RowKind(style.order[0], style.strategy, style.order[1], style.colour,
                                                       None, None))
                families[record.variant(name)] = style.family or OTHER
        declared = _declared(dirs)
        # the declared family and default weighting stay the files' (for row names no record has)
        learned = {k: kind._replace(family=declared[k].family, weighting=declared[k].weighting) if k in declared
                   else kind for k, kind in learned.items()}
        return cls(MappingProxyType({**declared, **learned}), MappingProxyType(families),
                   MappingProxyType(dict(weighting_families(dirs))))

    def sort_key(self, variant: str) -> tuple:
        """Table order: by strategy, then the strategy's own row order, the plain row before its variants."""
        base = base_strategy(variant)
        kind = self.kinds.get(base)
        rank, strategy, j = (kind.rank, kind.strategy, kind.row) if kind else (len(DEFAULT_STRATEGIES) + 1000, "", 0)
        return (rank, strategy, j, base, variant != base, variant)

    def colour(self, variant: str) -> str:
        """The colour of a variant's row kind: declared by its strategy, else a stable pick from the spare colours."""
        base = base_strategy(variant)
        kind = self.kinds.get(base)
        return (kind.colour if kind else None) or SPARE_COLOURS[zlib.crc32(base.encode()) % len(SPARE_COLOURS)]

    def row_weighting(self, variant: str) -> str | None:
        """The weighting a row's name says it trained with: ``naive_mtl[weighting=pcgrad,train.lr=0.001]`` ->
        ``pcgrad``; else the default of its strategy's ``weighting`` parameter; else None."""
        named = RowId.parse(variant).setting("weighting")
        if named is not None and _WEIGHTING_VALUE.fullmatch(named):
            return named
        kind = self.kinds.get(base_strategy(variant))
        return kind.weighting if kind else None

    def weighting_family(self, name: str | None) -> str | None:
        """The family a weighting declares (``Balancer.family``), or None for an unknown name."""
        return self.weightings.get(name) if name else None

    def family(self, variant: str) -> str:
        """A row's family (module docstring): what its record says; else its strategy's declaration, else its
        weighting's, else ``other``."""
        if variant in self.families:
            return self.families[variant]
        kind = self.kinds.get(base_strategy(variant))
        if kind is not None and kind.family:
            return kind.family
        return self.weighting_family(self.row_weighting(variant)) or OTHER


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
