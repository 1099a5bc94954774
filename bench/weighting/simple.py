"""Fixed weightings: ``equal`` (λ_i = 1, losses summed) and ``static`` (a λ vector, e.g. from a search)."""

from __future__ import annotations

import torch
from pydantic import field_validator

from bench.config import Frozen, TaskConfig
from bench.errors import BenchError
from bench.weighting.base import Weighting, register_weighting


@register_weighting("equal")
class Equal(Weighting):
    """L = Σ_i L_i: every task weighted 1 (summed, not averaged; the docstring of naive_mtl explains why)."""

    def combine(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack(list(losses.values())).sum()


class StaticParams(Frozen):
    #: one weight per task, in suite task order, or a mapping task -> weight
    weights: list[float] | dict[str, float]

    @field_validator("weights")
    @classmethod
    def _nonneg(cls, v):
        vals = v.values() if isinstance(v, dict) else v
        if any(x < 0 for x in vals):
            raise ValueError("loss weights must be >= 0")
        return v


@register_weighting("static")
class Static(Weighting):
    """L = Σ_i λ_i L_i with a fixed λ vector (``weights``), e.g. the best one an Optuna search found."""

    Params = StaticParams

    def __init__(self, tasks: list[TaskConfig], params: StaticParams):
        super().__init__(tasks, params)
        w = params.weights
        if isinstance(w, dict):
            missing = set(self.task_names) - set(w)
            extra = set(w) - set(self.task_names)
            if missing or extra:
                raise BenchError(f"static weights name tasks {sorted(w)} but the tasks are {self.task_names}")
            self.lam = {t: float(w[t]) for t in self.task_names}
        else:
            if len(w) != len(self.task_names):
                raise BenchError(f"static weights has {len(w)} values for {len(self.task_names)} tasks "
                                 f"{self.task_names}; give one weight per task")
            self.lam = dict(zip(self.task_names, map(float, w)))

    def combine(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack([self.lam[t] * l for t, l in losses.items()]).sum()

    def current(self) -> dict[str, float]:
        return dict(self.lam)
