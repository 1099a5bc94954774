"""Fusion that needs models or data: the :class:`ModelFusion` interface and the :class:`FusionJob` it works on.

A streaming :class:`~bench.fusion.base.FusionMethod` sees one tensor name at a time and never a model. Learned fusion
(AdaMerging) must run the fused model on inputs, and data-aware fusion (Fisher, RegMean) must run each fine-tuned
model on its task's data. Such a method subclasses :class:`ModelFusion` and implements :meth:`~ModelFusion.fuse_model`;
``Stages.fuse`` hands it a :class:`FusionJob` — the checkpoints, θ0, and the public stage API (models, batches, the
engine's optimisation loop) — and stores what it returns as the ``fuse`` stage, cached like any other: a second run,
or a search over the method's own hyper-parameters, reuses the fine-tunes and every finished fusion.

Rules shared with the streaming path (the job applies them, methods never see these tensors): integer tensors come
from θ0, float buffers (BatchNorm statistics) are the plain mean over the task models.

Example (a data-aware method in a few lines: weight each task by its training-set size):
    >>> from bench.fusion.base import build_fusion, register_fusion
    >>> @register_fusion("by_size_doc")
    ... class BySize(ModelFusion):
    ...     '''θ = Σ_i n_i θ_i / Σ_i n_i, n_i = task i's training examples (a toy).'''
    ...     data_split = "train"                               # what it reads: part of the stage's key
    ...     def fuse_model(self, job):
    ...         n = [len(job.batches(t, "train").es) for t in job.tasks]
    ...         states = job.task_states()
    ...         fused = {k: sum(w * s[k].double() for w, s in zip(n, states)) / sum(n) for k in job.fused_names}
    ...         return FusionResult(fused)
    >>> build_fusion("by_size_doc", {}, n=2).split     # the split it reads ("test" only when transductive)
    'train'
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from bench import checkpoint as C
from bench.config import TaskConfig
from bench.errors import BenchError
from bench.fusion.base import FusionMethod

if TYPE_CHECKING:  # stages imports fusion lazily; fusion only needs the types
    from bench.engine import FitResult
    from bench.model import MultiTaskModel
    from bench.stages import Batches, Checkpoint, Stages


@dataclass
class FusionResult:
    """What a :class:`ModelFusion` returns: the fused float parameters (name -> tensor; buffers and integer tensors
    are filled in by the job) and ``info`` for ``stage.json`` and the leaderboard row, e.g. learned
    ``coefficients = {"layers": [...], "tasks": [...], "values": [[...]]}`` (L × T), drawn as a heatmap."""

    state: dict[str, torch.Tensor]
    info: dict[str, Any] = field(default_factory=dict)
    telemetry: dict[str, Any] = field(default_factory=dict)


class ModelFusion(FusionMethod):
    """A fusion method that reads models or data (see the module docstring). Subclasses implement
    :meth:`fuse_model`, declare ``Params``, and may check a suite before any work with :meth:`check`."""

    needs_base: ClassVar[bool] = True
    #: the split whose *inputs or labels* the method reads; "test" is only ever allowed through ``transductive``
    data_split: ClassVar[str | None] = None

    def check(self, backbone: nn.Module, tasks: Sequence[TaskConfig]) -> None:  # noqa: B027 (an optional hook)
        """Fail with one line before any training when the suite cannot be fused this way (e.g. RegMean on a
        backbone with no linear layer, entropy on regression tasks)."""

    @property
    def split(self) -> str | None:
        """The split actually read: ``data_split`` unless the params ask for the test split (transductive)."""
        return "test" if getattr(self.params, "transductive", False) else self.data_split

    @abstractmethod
    def fuse_model(self, job: FusionJob) -> FusionResult:
        """Fuse ``job``'s checkpoints; see :class:`FusionJob` for what is at hand."""

    def fuse(self, name: str, base: torch.Tensor | None, tensors: Sequence[torch.Tensor],
             offset: int = 0) -> torch.Tensor:
        raise BenchError(f"fusion {self.describe()['method']!r} needs models and data; it runs as a stage "
                         "(Stages.fuse), not on streamed tensors")


@dataclass
class FusionJob:
    """The inputs of one model-based fusion and the tools to use them.

    ``parts``: the task checkpoints (one fine-tune per task), ``base``: θ0, ``folder``: the stage's folder (for
    resumable optimisation), ``stages``: the public stage API (``model``, ``batches``, ``optimise``).
    """

    stages: Stages
    parts: list[Checkpoint]
    base: Checkpoint
    folder: Path
    _states: list[dict[str, torch.Tensor]] | None = None
    _base_state: dict[str, torch.Tensor] | None = None

    @property
    def tasks(self) -> list[str]:
        """One name per part (its task; several tasks of one part are joined by '+')."""
        return ["+".join(p.tasks) for p in self.parts]

    @property
    def task_configs(self) -> list[TaskConfig]:
        return [self.stages.ctx.task(t) for p in self.parts for t in p.tasks]

    def base_state(self) -> dict[str, torch.Tensor]:
        if self._base_state is None:
            self._base_state = C.load_state(self.base.path / C.BACKBONE_FILE)
        return self._base_state

    def task_states(self) -> list[dict[str, torch.Tensor]]:
        """The parts' backbone state dicts (loaded once, on the CPU)."""
        if self._states is None:
            self._states = [C.load_state(p.path / C.BACKBONE_FILE) for p in self.parts]
        return self._states

    @cached_property
    def buffers(self) -> set[str]:
        return set(C.read_buffers(self.base.path / C.BACKBONE_FILE))

    @cached_property
    def fused_names(self) -> list[str]:
        """The tensors a method fuses: float parameters, not buffers or integer tensors (the job fills those)."""
        buffers = self.buffers
        return [k for k, v in self.base_state().items() if k not in buffers and v.is_floating_point()]

    def release(self) -> None:
        """Drop the loaded state dicts (a method that keeps what it needs elsewhere saves N + 1 model copies);
        they are read again on the next use."""
        self._states = self._base_state = None

    def task_vectors(self, names: Sequence[str] | None = None) -> list[dict[str, torch.Tensor]]:
        """τ_i = θ_i − θ0 per part, float32, for ``names`` (default :attr:`fused_names`)."""
        base = self.base_state()
        names = list(names or self.fused_names)
        return [{k: s[k].float() - base[k].float() for k in names} for s in self.task_states()]

    def complete(self, fused: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A full backbone state: ``fused`` (cast to the stored dtypes), buffers averaged, integers from θ0."""
        base, states, buffers = self.base_state(), self.task_states(), self.buffers
        missing = [k for k in self.fused_names if k not in fused]
        if missing:
            raise BenchError(f"fusion returned no tensor for {missing[:3]} ({len(missing)} missing)")
        out = {}
        for k, v in base.items():
            if k in fused:
                out[k] = fused[k].detach().to(v.dtype).reshape(v.shape).contiguous()
            elif k in buffers and v.is_floating_point():
                out[k] = (sum(s[k].double() for s in states) / len(states)).to(v.dtype)
            else:
                out[k] = v.clone()
        return out

    def model(self, state: dict[str, torch.Tensor] | None = None) -> MultiTaskModel:
        """A model with every part's task head (each from its own fine-tune) and the backbone ``state``, in eval
        mode on the run's device. By default θ0's parameters with the buffers the fused model will have (the mean of
        the fine-tunes' BatchNorm statistics): a method that evaluates θ(λ) functionally, overriding parameters only,
        then sees the statistics it will be stored with, not θ0's."""
        model = self.stages.model(self.base, [t for p in self.parts for t in p.tasks])
        for p in self.parts:
            heads = C.load_state(p.path / C.HEADS_FILE)
            model.heads.load_state_dict({k: v for k, v in heads.items() if k.split(".")[0] in p.tasks}, strict=False)
        if state is None:
            base = self.base_state()
            state = self.complete({k: base[k] for k in self.fused_names})
        model.backbone.load_state_dict(state)
        return model.to(self.stages.device).eval()

    def part_model(self, i: int) -> MultiTaskModel:
        """Part ``i``'s own fine-tuned model (backbone and head), in eval mode on the run's device."""
        return self.stages.model(self.parts[i]).to(self.stages.device).eval()

    def batches(self, task: str, split: str, **kw) -> Batches:
        return self.stages.batches(task, split, **kw)

    def optimise(self, params: list[torch.Tensor], loss_at, steps: int, lr: float, desc: str) -> FitResult:
        return self.stages.optimise(params, loss_at, steps, lr, folder=self.folder, desc=desc)


def mean_state(states: Sequence[dict[str, torch.Tensor]], names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The plain mean of ``names`` over ``states``, in float64."""
    return {k: sum(s[k].double() for s in states) / len(states) for k in names}

