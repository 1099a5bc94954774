"""A tiny timm-style registry: a decorator fills it, a factory builds from it, ``list`` describes it.

Example:
    >>> FRUIT = Registry("fruit")
    >>> @FRUIT.register("apple")
    ... class Apple:
    ...     '''A red fruit.'''
    >>> FRUIT.get("apple") is Apple
    True
    >>> FRUIT.describe()
    {'apple': 'A red fruit.'}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from bench.errors import BenchError, unknown

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            taken = self._items.get(name)
            if taken is not None and taken is not obj and _source(taken) != _source(obj):
                raise BenchError(f"{self.kind} {name!r} is registered twice: by {_source(taken)} and by "
                                 f"{_source(obj)}; rename one of them")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str, hint: str = "") -> T:
        """The entry named ``name``, or a one-line error with the closest name and every valid one (then
        ``hint``)."""
        if name not in self._items:
            err = unknown(self.kind, name, self._items)
            raise BenchError(f"{err}{hint}") if hint else err
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def describe(self) -> dict[str, str]:
        """name -> the first line of the object's docstring."""
        out = {}
        for name in self.names():
            doc = (getattr(self._items[name], "__doc__", None) or "").strip()
            out[name] = doc.splitlines()[0] if doc else ""
        return out


def _source(obj: object) -> str:
    """Where ``obj`` was defined (``path/to/file.py:line``), for a clash between two registrations. The same class
    re-registered from the same place (a module imported twice, e.g. by a doctest run) is not a clash."""
    import inspect

    try:
        return f"{inspect.getsourcefile(obj)}:{inspect.getsourcelines(obj)[1]}"  # type: ignore[arg-type]
    except (TypeError, OSError):
        return getattr(obj, "__module__", "?") + "." + getattr(obj, "__qualname__", "?")
