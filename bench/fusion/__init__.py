"""Fusion methods: turn N fine-tuned backbones (+ the pre-trained θ0) into one, streaming tensor by tensor."""

# importing the methods module registers mean, weighted, task_arithmetic and ties
from bench.fusion import methods  # noqa: E402,F401,I001
from bench.fusion.base import FUSIONS, FusionMethod, build_fusion, fuse_files, register_fusion

__all__ = ["FUSIONS", "FusionMethod", "build_fusion", "fuse_files", "register_fusion"]
