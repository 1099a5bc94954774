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

from bench.errors import unknown

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        if name not in self._items:
            raise unknown(self.kind, name, self._items)
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
