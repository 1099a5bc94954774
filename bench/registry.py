"""The registry class, kept at its old import path: it lives in :mod:`bench.plugins.registry`."""

from bench.plugins.registry import Registry

__all__ = ["Registry"]
