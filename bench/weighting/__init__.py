"""Weightings: turn per-task losses (and, for GradNorm, gradients) into one update. Any joint stage takes any."""

from bench.weighting.base import WEIGHTINGS, Weighting, build_weighting, register_weighting
from bench.weighting import simple  # noqa: F401  (equal, static)

try:  # the learned weightings live in their own modules
    from bench.weighting import uncertainty  # noqa: F401
except ImportError:  # pragma: no cover - only while a module is being written
    pass
try:
    from bench.weighting import gradnorm  # noqa: F401
except ImportError:  # pragma: no cover
    pass

__all__ = ["WEIGHTINGS", "Weighting", "build_weighting", "register_weighting"]
