"""Weightings: turn per-task losses (and, for GradNorm, gradients) into one update. Any joint stage takes any."""

# importing a weighting module registers its classes
from bench.weighting import gradnorm, simple, uncertainty  # noqa: E402,F401,I001
from bench.weighting.base import WEIGHTINGS, Weighting, build_weighting, register_weighting

__all__ = ["WEIGHTINGS", "Weighting", "build_weighting", "register_weighting"]
