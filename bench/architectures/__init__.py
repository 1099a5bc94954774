"""Architectures (``strategy.architecture=``): the built-in ones register here; see :mod:`bench.architectures.base`."""

from bench.architectures.base import (
    ARCHITECTURES,
    Architecture,
    HardSharing,
    build_architecture,
    register_architecture,
)

__all__ = ["ARCHITECTURES", "Architecture", "HardSharing", "build_architecture", "register_architecture"]
