"""A leaderboard row's name, typed (:class:`RowId`): ``fused[fusion=ties,train.epochs=3]`` is the row kind
``fused`` and the items of its brackets. Every part of bench that reads or extends a row name goes through it
(:func:`bench.record.variant_name`, the report's configuration suffixes, a row's weighting)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RowId:
    """A leaderboard row's name, typed: the row ``kind`` (``fused``) and the items of its brackets, in order, as
    written (``fusion=ties``, ``train.epochs=3``, or a custom label). ``str()`` gives the name back unchanged.

    >>> rid = RowId.parse("naive_mtl[weighting=pcgrad,train.lr=0.001]")
    >>> rid.kind, rid.params, rid.setting("weighting"), str(rid)
    ('naive_mtl', ('weighting=pcgrad', 'train.lr=0.001'), 'pcgrad', 'naive_mtl[weighting=pcgrad,train.lr=0.001]')
    >>> str(RowId.parse("fused").with_params(["fusion=ties"])), RowId.parse("x[a=[1,2],b=2]").params
    ('fused[fusion=ties]', ('a=[1,2]', 'b=2'))
    """

    kind: str
    params: tuple[str, ...] = ()  # () when the name has no brackets

    @classmethod
    def parse(cls, text: str) -> RowId:
        head, bracket, rest = text.partition("[")
        if not bracket or not rest.endswith("]"):
            return cls(text)
        return cls(head, tuple(_split_items(rest[:-1])))

    def __str__(self) -> str:
        return f"{self.kind}[{','.join(self.params)}]" if self.params else self.kind

    @property
    def suffix(self) -> str:
        """The brackets: ``'[fusion=ties]'``, or ``''``."""
        return str(self)[len(self.kind):]

    def with_params(self, more: list[str] | tuple[str, ...]) -> RowId:
        """The same row with ``more`` items appended to its brackets (opened when it has none)."""
        return RowId(self.kind, (*self.params, *more))

    def setting(self, key: str) -> str | None:
        """The value of ``key=`` in the brackets, or None."""
        return next((item[len(key) + 1:] for item in self.params if item.startswith(key + "=")), None)


def _split_items(inner: str) -> list[str]:
    """Split a bracket's text at the commas outside nested ``[]`` / ``{}`` (a list or dict value keeps its own)."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(inner):
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            items.append(inner[start:i])
            start = i + 1
    return [*items, inner[start:]]
