"""Task balancers: turn per-task losses (loss level) or per-task gradients (gradient level) into one update.
Any joint stage takes any of them (``strategy.weighting=name``)."""

# importing a weighting module registers its classes
from bench.weighting import gradnorm, jd, simple, uncertainty  # noqa: E402,F401,I001
from bench.weighting.base import (WEIGHTINGS, Aggregator, Balancer, Step, Weighting, WeightingSpec,
                                  build_weighting, register_weighting)

__all__ = ["WEIGHTINGS", "Aggregator", "Balancer", "Step", "Weighting", "WeightingSpec", "build_weighting",
           "register_weighting"]
