"""Learned fusion: coefficients of the task vectors fitted on data.

θ(λ) = θ0 + Σ_k λ_k τ_k with one λ per task (task-wise) or one per (layer, task) (layer-wise; a "layer" is one
parameter tensor, as in AdaMerging's code). The coefficients start at ``init`` and are fitted with Adam through the
engine's loop (:meth:`FusionJob.optimise`: device, precision, telemetry, resume), the fused model being evaluated
functionally (``torch.func.functional_call``) so only the coefficients carry gradients.

* ``adamerging`` / ``adamerging_layer`` (Yang et al., ICLR 2024): minimise the Shannon entropy of every task head's
  predictions on **unlabeled validation inputs** (the paper adapts on unlabeled *test* inputs: ``transductive=true``
  does that, and the report marks such rows);
* ``neural_fusion``: the same coefficients, optionally produced by a small gating network over each layer's position,
  fitted with the task losses on **validation labels** (a supervised fusion layer). The test split is never read.

Both keep each task's head from its own fine-tune and the fine-tunes' averaged BatchNorm statistics; the learned
coefficients (after clamping, i.e. those applied) are stored with the stage and drawn as a layer × task heatmap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn
from torch.func import functional_call

from bench.config import Frozen, TaskConfig
from bench.errors import BenchError
from bench.fusion.base import register_fusion
from bench.fusion.model_based import FusionJob, FusionResult, ModelFusion
from bench.tasks import TaskKind, task_kind


class _Merger:
    """θ0 and the stacked task vectors of the fused tensors, on the device; ``merged(λ)`` builds θ(λ)."""

    def __init__(self, job: FusionJob):
        device = job.stages.device
        self.names = job.fused_names
        base = job.base_state()
        taus = job.task_vectors(self.names)
        self.base = {k: base[k].float().to(device) for k in self.names}
        # (T, *shape) per tensor: one einsum per tensor merges all tasks
        self.taus = {k: torch.stack([t[k] for t in taus]).to(device) for k in self.names}
        self.t = len(taus)
        del taus
        job.release()  # the stacked task vectors are all the fit needs

    def merged(self, lam: torch.Tensor) -> dict[str, torch.Tensor]:
        """``lam``: (L, T) coefficients, one row per fused tensor (or (1, T) for all of them)."""
        rows = lam if lam.shape[0] == len(self.names) else lam.expand(len(self.names), -1)
        return {k: self.base[k] + torch.tensordot(rows[i], self.taus[k], dims=1) for i, k in enumerate(self.names)}


def _forward(job: FusionJob, model: nn.Module, merged: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor],
             tasks: list[str]) -> dict[str, torch.Tensor]:
    """The task heads' outputs of the model whose backbone holds ``merged`` (gradients flow to the coefficients)."""
    return functional_call(model, {f"backbone.{k}": v for k, v in merged.items()}, args=(inputs, tasks),
                           strict=False)


def _task_batches(job: FusionJob, split: str, batch_size: int):
    """Per task, a resumable shuffled batch sequence of ``split``; a single-input suite shares one input batch
    among all heads (one forward per step)."""
    single = job.stages.ctx.suite.kind == "single_input"
    names = [t.name for t in job.task_configs]
    if single:
        return [(job.batches(names[0], split, batch_size=batch_size, shuffle=True), names)]
    return [(job.batches(t, split, batch_size=batch_size, shuffle=True), [t]) for t in names]


class LearnedParams(Frozen):
    #: starting value of every coefficient (AdaMerging's paper: 0.3)
    init: float = 0.3
    #: Adam learning rate (AdaMerging's paper: 1e-3)
    lr: float = Field(1e-3, gt=0)
    #: optimisation steps (the paper runs 500 on CLIP; the CPU suites converge in far fewer)
    steps: int = Field(100, ge=0)
    batch_size: int = Field(16, ge=1)
    #: clip the applied coefficients to [0, 1] (AdaMerging's code does)
    clamp: bool = True


class _Learned(ModelFusion):
    """Shared machinery: coefficient shape, the fit, the reported coefficients."""

    layerwise: ClassVar[bool] = True
    data_split = "validation"

    def _applied(self, raw: torch.Tensor) -> torch.Tensor:
        return raw.clamp(0, 1) if self.params.clamp else raw

    def _fit(self, job: FusionJob, split: str, layerwise: bool, batch_loss, gate: nn.Module | None = None,
             ) -> FusionResult:
        """Fit the coefficients (free, one row per layer or one for all, or produced by ``gate``) by minimising
        Σ over the step's batches of ``batch_loss(outputs, batch, tasks)``; return the fused model and the applied
        coefficients (with the objective per logging interval, which shows whether the fit converged)."""
        merger, model, device = _Merger(job), job.model(), job.stages.device
        if gate is not None:
            params, coeffs = list(gate.to(device).parameters()), gate
        else:
            raw = torch.full((len(merger.names) if layerwise else 1, merger.t), float(self.params.init),
                             device=device, requires_grad=True)
            params, coeffs = [raw], (lambda: raw)
        seqs = _task_batches(job, split, self.params.batch_size)

        def loss_at(step: int) -> torch.Tensor:
            merged = merger.merged(self._applied(coeffs()))
            total = torch.zeros((), device=device)
            for batches, tasks in seqs:
                b = batches[step]
                total = total + batch_loss(_forward(job, model, merged, b["inputs"], tasks), b, tasks)
            return total

        name = self.describe()["method"]
        fit = job.optimise(params, loss_at, self.params.steps, self.params.lr, desc=f"fuse[{name}]")
        with torch.no_grad():
            lam = self._applied(coeffs())
            state = {k: v.cpu() for k, v in merger.merged(lam).items()}
        lam = lam.cpu()
        coefficients = {"layers": list(merger.names) if layerwise else ["all"], "tasks": job.tasks,
                        "values": [[round(float(v), 6) for v in row] for row in lam]}
        info = {"coefficients": coefficients, "objective": fit.losses}
        if gate is not None:
            info["gate_params"] = sum(p.numel() for p in params)
        return FusionResult(state, info, {"fit": fit.telemetry})


class AdaMergingParams(LearnedParams):
    #: adapt on unlabeled *test* inputs, the paper's setting (rows say "transductive"); default: validation inputs
    transductive: bool = False


@register_fusion("adamerging")
class AdaMerging(_Learned):
    """Task-wise AdaMerging: θ = θ0 + Σ_k λ_k τ_k, λ minimising Σ_t H(p_t(x)) over unlabeled inputs x of each task t
    (H: Shannon entropy of head t's softmax), λ initialised to 0.3.

    With all task vectors zero the objective does not depend on λ, its gradient is 0, and λ stays at ``init``.
    """

    Params = AdaMergingParams
    layerwise = False

    def check(self, backbone: nn.Module, tasks: Sequence[TaskConfig]) -> None:
        kinds = [task_kind(t) for t in tasks]
        none = [k for k in kinds if type(k).entropy is TaskKind.entropy]  # kinds with no predictive entropy
        if none:
            raise BenchError(f"fusion {self._name!r} minimises the entropy of each task's predictions, but task "
                             f"{none[0].task.name!r} is {none[0].name}, whose kind defines no prediction entropy; use "
                             "fusion=neural_fusion, regmean, fisher or task_arithmetic")

    @property
    def _name(self) -> str:
        return "adamerging_layer" if self.layerwise else "adamerging"

    def fuse_model(self, job: FusionJob) -> FusionResult:
        # labels never read: the entropy of each head's predictions on its own inputs
        kinds = {t.name: task_kind(t) for t in job.task_configs}
        return self._fit(job, self.split or "validation", self.layerwise,
                         lambda out, batch, tasks: sum(kinds[t].entropy(out[t]) for t in tasks))


@register_fusion("adamerging_layer")
class AdaMergingLayer(AdaMerging):
    """Layer-wise AdaMerging: one λ per (parameter tensor, task), θ_l = θ0_l + Σ_k λ_{l,k} τ_{k,l}; the rest as
    :class:`AdaMerging`. In the paper it is the form that recovers most of the gap to the individual fine-tunes."""

    layerwise = True


class NeuralFusionParams(LearnedParams):
    #: one coefficient per (layer, task) or per task
    granularity: Literal["layer", "task"] = "layer"
    #: "mlp": the layer-wise coefficients come from a small network over each layer's depth and kind (smooth in
    #: depth, far fewer free parameters); "none": free coefficients
    gate: Literal["none", "mlp"] = "none"
    hidden: int = Field(16, ge=1)


class _Gate(nn.Module):
    """λ_l = init + MLP(features of layer l): depth in [0, 1] with 3 sinusoidal encodings, and whether the tensor
    is a bias or a normalisation. The last layer starts at zero, so the fit starts from ``init`` everywhere."""

    def __init__(self, names: list[str], tasks: int, hidden: int, init: float):
        super().__init__()
        depth = torch.linspace(0, 1, len(names)) if len(names) > 1 else torch.zeros(1)
        enc = [depth] + [f(math.pi * k * depth) for k in (1, 2, 4) for f in (torch.sin, torch.cos)]
        kind = [torch.tensor([n.endswith("bias") for n in names], dtype=torch.float32),
                torch.tensor([("norm" in n.lower() or ".ln" in n.lower() or n.lower().startswith("ln"))
                              for n in names], dtype=torch.float32)]
        self.register_buffer("x", torch.stack(enc + kind, dim=1))
        self.net = nn.Sequential(nn.Linear(self.x.shape[1], hidden), nn.Tanh(), nn.Linear(hidden, tasks))
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)
        self.init = init

    def forward(self) -> torch.Tensor:
        return self.init + self.net(self.x)


@register_fusion("neural_fusion")
class NeuralFusion(_Learned):
    """A supervised fusion layer: θ = θ0 + Σ_k λ_k τ_k with layer-wise (or task-wise) λ, optionally from a gating
    network, fitted with Σ_t L_t (cross-entropy / MSE) on **validation labels**.

    Unlike AdaMerging it uses labels (a stronger signal than entropy, and it works for regression tasks); it reads
    validation, never test, so the test scores stay a held-out estimate. Its validation scores are fitted, hence
    optimistic: compare rows on test.
    """

    Params = NeuralFusionParams

    def fuse_model(self, job: FusionJob) -> FusionResult:
        layerwise = self.params.granularity == "layer"
        kinds = {t.name: task_kind(t) for t in job.task_configs}
        gate = None
        if self.params.gate == "mlp" and layerwise:
            gate = _Gate(job.fused_names, len(job.parts), self.params.hidden, self.params.init)
        return self._fit(job, "validation", layerwise,
                         lambda out, batch, tasks: sum(kinds[t].loss(out[t], batch["targets"][t]) for t in tasks),
                         gate)
