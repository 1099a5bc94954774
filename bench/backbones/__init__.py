"""Backbones: a registered factory per source (``mlp``, ``cnn``, ``transformers``, ``timm``).

``build_backbone(cfg, input_kind, sample)`` returns ``(module, preprocessor)``: the module maps a collated batch to
features of size ``module.out_dim``; the preprocessor turns raw inputs into model-ready tensors.
"""

from bench.backbones.base import BACKBONES, Backbone, Preprocessor, build_backbone, register_backbone
from bench.backbones import simple  # noqa: F401  (registers mlp and cnn)

__all__ = ["BACKBONES", "Backbone", "Preprocessor", "build_backbone", "register_backbone"]
from bench.backbones import hf, timm_  # noqa: E402,F401  (register transformers, timm)
