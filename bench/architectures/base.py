"""The architecture seam: how tasks share parameters between the backbone and the task heads (LibMTL's second axis).

The backbone computes its views once (``pooled``, ``tokens``, ``maps``); an architecture turns them into the view each
task's head reads, with modules of its own: some shared by every task (MMoE's experts), some owned by one task (its
``tower``: MTAN's attention branch, a gate). ``hps`` (hard parameter sharing: every head reads the backbone's view
as it is) is the default and has no module at all, so a model without an architecture keeps its state-dict keys.

An architecture also says where the shared part ends, for gradient balancers that differentiate through the shared
representation (``via=features``, MGDA-UB): ``forward`` returns ``z``, a cut of the graph such that every shared
parameter lies upstream of ``z`` and everything between ``z`` and a head belongs to that task alone.

An architecture lives in the joint stage only: fine-tunes are single-task networks, and ``fuse_then_joint`` fuses
their trunks, then builds the architecture's modules fresh on the fused trunk (docs/architectures.md).

A new architecture is one file registering an :class:`Architecture` subclass (``@register_architecture("name")``)
in a plug-in folder or package, like a weighting (docs/plugins/architectures.md).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from torch import nn

from bench.backbones.base import ViewShape
from bench.config import Frozen, NoParams, validated
from bench.errors import BenchError
from bench.plugins.discovery import HINT
from bench.plugins.registry import Registry
from bench.tasks import TaskKind


class Architecture(nn.Module, ABC):
    """Routes the backbone's views to each task (``forward``), with shared modules and per-task ``towers``.

    ``shapes``: the shape of every view the backbone offers (``"pooled"``, ``"tokens"``, ``"maps"``); ``kinds``: task
    -> its kind (``kind.reads`` names the view its head expects); ``params``: the validated ``Params``
    (``strategy.architecture_params``).
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type[Frozen]] = NoParams

    def __init__(self, shapes: dict[str, ViewShape], kinds: dict[str, TaskKind], params: Any):
        super().__init__()
        self.shapes, self.kinds, self.params = shapes, kinds, params
        self.reads = {t: k.reads for t, k in kinds.items()}  # task -> the backbone view its kind reads
        self.towers = nn.ModuleDict()  # task -> the modules only that task uses (saved and trained with its head)

    def view_shape(self, task: str) -> ViewShape:
        """The shape of the view ``task``'s head reads (default: the backbone's view its kind reads, unchanged)."""
        return self.shapes[self.reads[task]]

    @abstractmethod
    def forward(self, views: dict[str, Any], tasks: list[str]) -> tuple[dict[str, Any], Any]:
        """``(task -> the view its head reads, z)``; ``z``: the last representation every task shares (a tensor or
        a tuple of tensors; a cut: every shared parameter upstream, only task-owned modules downstream), or None
        when there is none (gradient balancers then need ``via=params``)."""

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """The parameters only ``task`` uses."""
        return list(self.towers[task].parameters()) if task in self.towers else []

    def shared_parameters(self) -> list[nn.Parameter]:
        """The parameters every task shares (default: all but the towers')."""
        own = {id(p) for p in self.towers.parameters()}
        return [p for p in self.parameters() if id(p) not in own]


ARCHITECTURES: Registry[type[Architecture]] = Registry("architecture", Architecture, builtins=("bench.architectures",),
                                                       plugins=True, hint=HINT)


def register_architecture(name: str) -> Callable[[type[Architecture]], type[Architecture]]:
    """Register an :class:`Architecture` subclass under ``name`` (``strategy.architecture=name``)."""
    return ARCHITECTURES.register(name)


@register_architecture("hps")
class HardSharing(Architecture):
    """Hard parameter sharing: one trunk, a head per task on the backbone's own view (builds no module)."""

    def forward(self, views: dict[str, Any], tasks: list[str]) -> tuple[dict[str, Any], Any]:
        raise NotImplementedError("hps builds no module: MultiTaskModel routes the views itself")



def build_architecture(name: str, params: dict[str, Any], shapes: dict[str, ViewShape],
                       kinds: dict[str, TaskKind]) -> Architecture | None:
    """The architecture ``name`` with ``params`` (validated by its ``Params``) for these views and tasks; None for
    ``hps``, which builds no module."""
    cls = ARCHITECTURES.get(name)
    if cls is HardSharing:
        if params:
            raise BenchError(f"architecture 'hps' takes no parameters, got {sorted(params)}; drop "
                             "strategy.architecture_params")
        return None
    return cls(shapes, kinds, validated(cls.Params, params, f"architecture {name!r}"))
