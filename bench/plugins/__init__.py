"""The plug-in contract: one :class:`Registry` per kind, discovery, source hashes, and a read without importing.

* :mod:`bench.plugins.registry`: ``Registry(kind, base)``: names, base-class checks, clashes, test scopes, lazy loads.
* :mod:`bench.plugins.discovery`: where plug-ins come from (built-ins, ``./strategies``, ``plugin_dirs=[...]``,
  ``bench.plugins`` entry points of installed packages), importing them, their origin and one-line errors.
* :mod:`bench.plugins.hashing`: the source hashes that key what a user plug-in computed.
* :mod:`bench.plugins.scan`: what plug-in files register, read from their syntax tree (``bench list``, the
  pre-check of ``bench run``), so that no plug-in and no torch is imported.

A plug-in author imports from :mod:`bench.api` instead.
"""

from bench.plugins.discovery import (
    builtin_dir,
    default_dirs,
    discover,
    origin,
    plugin_dirs,
    user_dirs,
    where,
    where_raised,
)
from bench.plugins.hashing import plugin_source, source_hash, used_plugins
from bench.plugins.registry import Registry
from bench.plugins.scan import Entry, FileMeta, Scan, light_params, read

__all__ = ["Entry", "FileMeta", "Registry", "Scan", "builtin_dir", "default_dirs", "discover", "light_params",
           "origin", "plugin_dirs", "plugin_source", "read", "source_hash", "used_plugins", "user_dirs", "where",
           "where_raised"]
