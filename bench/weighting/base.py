"""The Weighting interface.

The engine's step is always::

    losses = {task: loss}                       # the tasks present in this step
    total = weighting.combine(losses)           # may update its own parameters (GradNorm)
    total.backward(); optimizer.step()
    weighting.after_step()                      # e.g. renormalise GradNorm's w

so a new weighting plugs in without touching the loop. Parameters a weighting wants trained *by the model's
optimiser* (uncertainty's s_i) are returned by :meth:`param_groups` with their own options (no weight decay, own lr).

Example (a weighting in a dozen lines):
    >>> import torch
    >>> from bench.config import Frozen
    >>> @register_weighting("first_only_doc")
    ... class FirstOnly(Weighting):
    ...     '''Trains on the first task only (a toy).'''
    ...     def combine(self, losses):
    ...         return losses[self.task_names[0]] if self.task_names[0] in losses else 0 * sum(losses.values())
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from bench.config import Frozen, TaskConfig, validated
from bench.registry import Registry


class NoParams(Frozen):
    pass


class Weighting(nn.Module, ABC):
    """Combines per-task losses into one scalar. Subclasses declare ``Params`` (a frozen pydantic model)."""

    Params: ClassVar[type[Frozen]] = NoParams
    #: True when a step must contain every task's loss (GradNorm compares them): multi-input suites then draw one
    #: batch from every task per step instead of sampling one task.
    needs_all_tasks: ClassVar[bool] = False

    def __init__(self, tasks: list[TaskConfig], params: Frozen | None = None):
        super().__init__()
        self.tasks = list(tasks)
        self.task_names = [t.name for t in tasks]
        self.params = params if params is not None else self.Params()

    def setup(self, model: nn.Module) -> None:
        """Called once with the multi-task model before training (GradNorm finds its shared layer here)."""

    @abstractmethod
    def combine(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """The scalar to backpropagate through the network."""

    def after_step(self) -> None:
        """Called after the optimiser step."""

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser groups for parameters trained with the network (none by default)."""
        return []

    def current(self) -> dict[str, float]:
        """The effective weight of each task now (λ_i, σ_i², w_i), logged as a trajectory."""
        return {t: 1.0 for t in self.task_names}


WEIGHTINGS: Registry[type[Weighting]] = Registry("weighting")


def register_weighting(name: str) -> Callable[[type[Weighting]], type[Weighting]]:
    return WEIGHTINGS.register(name)


def build_weighting(name: str, tasks: list[TaskConfig], params: dict[str, Any] | None = None) -> Weighting:
    """Validate ``params`` against the weighting's ``Params`` and build it."""
    cls = WEIGHTINGS.get(name)
    return cls(tasks, validated(cls.Params, params, f"weighting {name!r}"))
