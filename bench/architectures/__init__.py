"""Architectures (``strategy.architecture=``): the built-in ones register here; see :mod:`bench.architectures.base`.

``hps`` (hard parameter sharing, the default: no module), ``mtan``, ``cross_stitch``, ``mmoe`` and ``cgc``
(docs/architectures.md: what each shares, and where it differs from LibMTL's).
"""

from bench.architectures.base import (
    ARCHITECTURES,
    Architecture,
    HardSharing,
    build_architecture,
    register_architecture,
)
from bench.architectures.cross_stitch import CrossStitch
from bench.architectures.moe import CGC, MMoE
from bench.architectures.mtan import MTAN

__all__ = ["ARCHITECTURES", "CGC", "MMoE", "MTAN", "Architecture", "CrossStitch", "HardSharing",
           "build_architecture", "register_architecture"]
