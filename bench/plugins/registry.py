"""One registry for every kind of plug-in (timm-style): a decorator fills it, ``get`` builds from it.

A :class:`Registry` of a plug-in kind names its base class: registering a class checks that it subclasses the base
(one line naming both otherwise), sets ``cls.name`` to the registered name, and refuses a name that another file
already registered (one line naming both files and lines). It loads lazily: the first ``get``, ``names`` or ``in``
imports the kind's built-in modules and discovers the plug-ins (:func:`bench.plugins.discovery.discover`: the
strategy folders and the packages installed with a ``bench.plugins`` entry point), so a registry is complete when
it is read and nothing is imported before. A test registers its own entries inside :meth:`Registry.scope`, which
restores the registry afterwards.

Example:
    >>> class Fruit:
    ...     name = ""
    >>> FRUIT = Registry("fruit", Fruit)
    >>> @FRUIT.register("apple")
    ... class Apple(Fruit):
    ...     '''A red fruit.'''
    >>> FRUIT.get("apple") is Apple, Apple.name
    (True, 'apple')
    >>> FRUIT.describe()
    {'apple': 'A red fruit.'}
    >>> with FRUIT.scope():
    ...     _ = FRUIT.register("pear")(type("Pear", (Fruit,), {}))
    ...     FRUIT.names()
    ['apple', 'pear']
    >>> FRUIT.names()
    ['apple']
    >>> FRUIT.register("stone")(int)
    Traceback (most recent call last):
    ...
    bench.errors.BenchError: fruit 'stone': class int is not a subclass of Fruit; derive it from Fruit
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from bench.errors import BenchError, unknown
from bench.plugins.discovery import discover, shadows

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> entry of one kind. ``base``: the class every entry must subclass (None: any object, no ``name`` set);
    ``builtins``: the modules that register the built-in entries, imported on first use; ``plugins``: whether
    discovered plug-ins may register entries of this kind (they are discovered on first use too); ``hint``: what
    an unknown name's error adds (where a plug-in must be for its name to be known)."""

    def __init__(self, kind: str, base: type | None = None, builtins: tuple[str, ...] = (), plugins: bool = False,
                 hint: str = ""):
        self.kind = kind
        self.base = base
        self.builtins = builtins
        self.plugins = plugins
        self.hint = hint
        self._items: dict[str, T] = {}
        self._ready = not builtins and not plugins

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if self.base is not None:
                if not (isinstance(obj, type) and issubclass(obj, self.base)):
                    what = f"class {obj.__qualname__}" if isinstance(obj, type) else repr(obj)
                    raise BenchError(f"{self.kind} {name!r}: {what} is not a subclass of {self.base.__qualname__}; "
                                     f"derive it from {self.base.__qualname__}")
            taken = self._items.get(name)
            if taken is not None and taken is not obj and _source(taken) != _source(obj) \
                    and not shadows(_file(obj), _file(taken)):
                raise BenchError(f"{self.kind} {name!r} is registered twice: by {_source(taken)} and by "
                                 f"{_source(obj)}; rename one of them")
            if self.base is not None:
                obj.name = name  # type: ignore[attr-defined]  (what the class calls itself in keys and errors)
            self._items[name] = obj
            return obj

        return deco

    def load(self) -> None:
        """Import the built-in modules and discover the plug-ins, once (what the first read does)."""
        if self._ready:
            return
        self._ready = True  # first: a plug-in that reads the registry while it is imported sees what is there
        try:
            self._load_builtins()
            if self.plugins:
                discover()
        except BaseException:
            self._ready = False
            raise

    def _load_builtins(self) -> None:
        for module in self.builtins:
            importlib.import_module(module)

    def get(self, name: str, hint: str = "") -> T:
        """The entry named ``name``, or a one-line error with the closest name and every valid one (then ``hint``,
        else the registry's own). A built-in is found without discovering the plug-ins (``launcher=local`` imports
        no plug-in file)."""
        self._load_builtins()
        if name not in self._items:
            self.load()
        if name not in self._items:
            err = unknown(self.kind, name, self._items)
            hint = hint or self.hint
            raise BenchError(f"{err}{hint}") if hint else err
        return self._items[name]

    def names(self) -> list[str]:
        self.load()
        return sorted(self._items)

    def loaded(self) -> dict[str, T]:
        """What is registered so far, without loading anything (a pre-check that must not import plug-ins)."""
        return dict(self._items)

    def __contains__(self, name: str) -> bool:
        self.load()
        return name in self._items

    def describe(self) -> dict[str, str]:
        """name -> the first line of the object's docstring."""
        out = {}
        for name in self.names():
            doc = (getattr(self._items[name], "__doc__", None) or "").strip()
            out[name] = doc.splitlines()[0] if doc else ""
        return out

    @contextmanager
    def scope(self) -> Iterator[Registry[T]]:
        """Entries registered inside the ``with`` block are removed at its end (and a replaced one restored), so a
        test's plug-ins never leak into the next test's lists of valid names."""
        self.load()
        saved = dict(self._items)
        try:
            yield self
        finally:
            self._items.clear()
            self._items.update(saved)


def _file(obj: Any) -> str:
    try:
        return inspect.getsourcefile(obj) or ""
    except TypeError:
        return ""


def _source(obj: Any) -> str:
    """Where ``obj`` was defined (``path/to/file.py:line``), for a clash between two registrations. The same class
    re-registered from the same place (a module imported twice, e.g. by a doctest run) is not a clash."""
    try:
        return f"{inspect.getsourcefile(obj)}:{inspect.getsourcelines(obj)[1]}"
    except (TypeError, OSError):
        return getattr(obj, "__module__", "?") + "." + getattr(obj, "__qualname__", "?")
