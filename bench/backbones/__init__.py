"""Backbones: a registered factory per source (``mlp``, ``cnn``, ``transformers``, ``timm``, ``crossmodal``).

``build_backbone(cfg, input_kind, sample)`` returns ``(module, preprocessor)``: the module maps a collated batch to
features of size ``module.out_dim``; the preprocessor turns raw inputs into model-ready tensors.
"""

# importing a backbone module registers its factories
from bench.backbones import hf, simple, timm_  # noqa: E402,F401,I001
from bench.backbones import crossmodal  # noqa: E402,F401,I001  (modality encoders + a shared trunk)
from bench.backbones.base import BACKBONES, Backbone, Preprocessor, build_backbone, register_backbone

__all__ = ["BACKBONES", "Backbone", "Preprocessor", "build_backbone", "register_backbone"]
