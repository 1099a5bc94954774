"""Fusion methods: turn N fine-tuned backbones (+ the pre-trained θ0) into one.

Streaming methods (:class:`FusionMethod`: mean, weighted, task arithmetic, TIES, ...) work tensor by tensor on the
files; model-based ones (:class:`ModelFusion`: AdaMerging, the neural fusion layer, Fisher, RegMean) read models and
data through a :class:`FusionJob`. Both are registered in one registry and used as ``strategy.fusion=<name>``.
"""

# importing the method modules registers them
from bench.fusion import data_aware, learned, magmax, methods, opcm  # noqa: E402,F401,I001
from bench.fusion.base import FUSIONS, FusionMethod, FusionSpec, build_fusion, fuse_files, register_fusion
from bench.fusion.model_based import FusionJob, FusionResult, ModelFusion

__all__ = ["FUSIONS", "FusionJob", "FusionMethod", "FusionResult", "FusionSpec", "ModelFusion", "build_fusion",
           "fuse_files", "register_fusion"]
