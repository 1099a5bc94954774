"""Fusion methods: turn N fine-tuned backbones (+ the pre-trained θ0) into one, streaming tensor by tensor."""

from bench.fusion.base import FUSIONS, FusionMethod, build_fusion, fuse_files, register_fusion

try:
    from bench.fusion import methods  # noqa: F401  (mean, weighted, task_arithmetic, ties)
except ImportError:  # pragma: no cover - only while the module is being written
    pass

__all__ = ["FUSIONS", "FusionMethod", "build_fusion", "fuse_files", "register_fusion"]
