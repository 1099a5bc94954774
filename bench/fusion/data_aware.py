"""Data-aware fusion: statistics of each fine-tuned model on its own training data decide the merge.

* ``fisher`` (Matena & Raffel, NeurIPS 2022): θ = Σ_i F_i θ_i / Σ_i F_i per entry, F_i the diagonal Fisher of
  model i, E[(∂ log p(y|x) / ∂θ)²] over ``examples`` training inputs of task i, one example at a time (the square of
  a per-example gradient, not of a batch mean). ``fisher="empirical"`` takes y from the labels, ``"model"`` samples
  y ~ p_θ(y|x) (the true Fisher; seeded). ``floor`` is added to every F_i, so an entry no task's data moves falls back
  to the plain mean (the paper's code does the same).
* ``regmean`` (Jin et al., ICLR 2023): for each linear map y = W x of the backbone (``nn.Linear``, and 1×1
  convolutions, which are linear maps over channels at every position), W* = argmin Σ_i ‖X_i Wᵀ − X_i W_iᵀ‖², i.e.
  W*ᵀ = (Σ_i G_i)⁻¹ Σ_i G_i W_iᵀ with G_i = X_iᵀX_i / n_i the Gram matrix of the layer's inputs on task i's
  training data (each model its own inputs). The off-diagonal entries of each G_i are scaled by ``alpha`` (the paper's
  α; 1 = the exact regression, smaller values move towards the plain mean of W). Every other parameter (biases,
  norms, embeddings, other convolutions) is the plain mean. Padding positions (``attention_mask == 0``) are left
  out of the Gram matrices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from bench.config import Frozen, TaskConfig
from bench.errors import BenchError
from bench.fusion.base import register_fusion
from bench.fusion.model_based import FusionJob, FusionResult, ModelFusion, mean_state
from bench.tasks import task_kind


class FisherParams(Frozen):
    #: training examples per task in the Fisher estimate (the first of the split's fixed order)
    examples: int = Field(128, ge=1)
    fisher: Literal["empirical", "model"] = "empirical"
    #: added to every diagonal Fisher (entries no data moves get the plain mean)
    floor: float = Field(1e-6, gt=0)
    seed: int = 0


@register_fusion("fisher")
class Fisher(ModelFusion):
    """Fisher merging (Matena & Raffel 2022): θ = Σ_i F_i θ_i / Σ_i F_i, F_i diagonal Fishers on training examples."""

    Params = FisherParams
    data_split = "train"

    def fuse_model(self, job: FusionJob) -> FusionResult:
        names = job.fused_names
        g = torch.Generator(device=job.stages.device).manual_seed(self.params.seed)
        fishers = [self._fisher(job, i, part.tasks, names, g) for i, part in enumerate(job.parts)]
        return FusionResult(fisher_merge(job.task_states(), fishers, self.params.floor),
                            {"examples_per_task": self.params.examples})

    def _fisher(self, job: FusionJob, i: int, tasks: Sequence[str], names: list[str],
                g: torch.Generator) -> dict[str, torch.Tensor]:
        model = job.part_model(i)
        params = dict(model.backbone.named_parameters())
        used = [k for k in names if k in params]
        for p in model.parameters():
            p.requires_grad_(False)
        for k in used:
            params[k].requires_grad_(True)
        acc = {k: torch.zeros_like(params[k], dtype=torch.float64) for k in used}
        n = 0
        cfgs = [job.stages.ctx.task(t) for t in tasks]
        batches = job.batches(tasks[0], "train", batch_size=1, limit=self.params.examples)
        kinds = {c.name: task_kind(c) for c in cfgs}
        for b in batches:  # one example at a time: the Fisher squares per-example gradients
            if not any(bool(kinds[c.name].labelled(b["targets"][c.name]).any()) for c in cfgs):
                continue  # an example with none of these tasks' labels (partial labels) carries no information
            out = model(b["inputs"], [c.name for c in cfgs])
            loss = torch.zeros((), device=job.stages.device)
            for c in cfgs:
                kind = kinds[c.name]
                y = b["targets"][c.name]
                drawn = kind.sample(out[c.name], g) if self.params.fisher == "model" else None
                # −log p(y|x) under the kind's likelihood; the model's own y where the kind can draw one
                loss = loss + kind.loss(out[c.name], y if drawn is None else drawn)
            grads = torch.autograd.grad(loss, [params[k] for k in used], allow_unused=True)
            for k, gr in zip(used, grads):
                if gr is not None:
                    acc[k] += gr.double().pow(2)
            n += 1
        out_f = {k: (acc[k] / max(n, 1)).cpu() for k in used}
        for k in names:  # tensors outside the module's parameters (none for our backbones): no information
            out_f.setdefault(k, torch.zeros(job.task_states()[i][k].shape, dtype=torch.float64))
        return out_f


def fisher_merge(states: Sequence[dict[str, torch.Tensor]], fishers: Sequence[dict[str, torch.Tensor]],
                 floor: float) -> dict[str, torch.Tensor]:
    """θ = Σ_i (F_i + floor) θ_i / Σ_i (F_i + floor) per entry, for every tensor the Fishers cover (float64)."""
    out = {}
    for k in fishers[0]:
        f = [fi[k].double() + floor for fi in fishers]
        out[k] = sum(fi * s[k].double() for fi, s in zip(f, states)) / sum(f)
    return out


class RegMeanParams(Frozen):
    #: scale of the off-diagonal entries of every Gram matrix (the paper's α; 1 = exact regression)
    alpha: float = Field(0.9, ge=0, le=1)
    #: training examples per task in the Gram matrices (the first of the split's fixed order)
    examples: int = Field(128, ge=1)
    batch_size: int = Field(16, ge=1)


def linear_layers(backbone: nn.Module) -> dict[str, nn.Module]:
    """The linear maps RegMean merges: ``nn.Linear`` and 1×1, ungrouped ``nn.Conv2d``, by module name."""
    out = {}
    for name, m in backbone.named_modules():
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1
                                        and m.padding in ((0, 0), "valid")):
            out[name] = m
    return out


def _rows_of(m: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The layer's input as rows (n, d_in): positions of a 1×1 conv (its stride applied), non-padding tokens."""
    if isinstance(m, nn.Conv2d):
        s = m.stride
        return x[:, :, ::s[0], ::s[1]].permute(0, 2, 3, 1).reshape(-1, x.shape[1])
    if mask is not None and x.dim() == 3 and x.shape[:2] == mask.shape:
        return x[mask.bool()]
    return x.reshape(-1, x.shape[-1])


@register_fusion("regmean")
class RegMean(ModelFusion):
    """RegMean (Jin et al. 2023): W* = (Σ_i G_i)⁻¹ Σ_i G_i W_i per linear map (G_i: Gram of its inputs); rest averaged.

    See the module docstring.

    Example (one linear layer, identical Gram matrices: the mean of the weights):
        >>> W1, W2, G = torch.tensor([[1.0, 0.0]]), torch.tensor([[3.0, 2.0]]), torch.tensor([[2.0, 1.0], [1.0, 2.0]])
        >>> regmean_solve([W1, W2], [G, G], alpha=1.0).round(decimals=6).tolist()
        [[2.0, 1.0]]
    """

    Params = RegMeanParams
    data_split = "train"

    def check(self, backbone: nn.Module, tasks: Sequence[TaskConfig]) -> None:
        if not linear_layers(backbone):
            raise BenchError(f"fusion 'regmean' merges linear layers (nn.Linear and 1x1 convolutions), and the "
                             f"backbone {type(backbone).__name__} has none; use fusion=fisher, mean or ties")

    def fuse_model(self, job: FusionJob) -> FusionResult:
        names = job.fused_names
        states = job.task_states()
        grams = [self._grams(job, i) for i in range(len(job.parts))]
        fused = mean_state(states, names)
        merged = 0
        for layer in grams[0]:
            key = f"{layer}.weight"
            if key not in fused:
                continue
            ws = [s[key].double().reshape(s[key].shape[0], -1) for s in states]
            fused[key] = regmean_solve(ws, [g[layer] for g in grams], self.params.alpha).reshape(states[0][key].shape)
            merged += 1
        return FusionResult(fused, {"linear_layers": merged})

    def _grams(self, job: FusionJob, i: int) -> dict[str, torch.Tensor]:
        model = job.part_model(i)
        layers = linear_layers(model.backbone)
        sums = {n: torch.zeros(m.weight.shape[1], m.weight.shape[1], dtype=torch.float64) for n, m in layers.items()}
        counts = dict.fromkeys(layers, 0)
        mask: list[torch.Tensor | None] = [None]

        def hook(name):
            def fn(m, args, _out):
                rows = _rows_of(m, args[0].detach(), mask[0]).double().cpu()
                sums[name] += rows.T @ rows
                counts[name] += rows.shape[0]
            return fn

        handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
        try:
            task = job.parts[i].tasks[0]
            with torch.no_grad():
                for b in job.batches(task, "train", batch_size=self.params.batch_size, limit=self.params.examples):
                    mask[0] = b["inputs"].get("attention_mask")
                    model.backbone(**b["inputs"])
        finally:
            for h in handles:
                h.remove()
        return {n: sums[n] / max(counts[n], 1) for n in layers}


def regmean_solve(weights: Sequence[torch.Tensor], grams: Sequence[torch.Tensor], alpha: float) -> torch.Tensor:
    """W* with W*ᵀ = (Σ G̃_i)⁻¹ Σ G̃_i W_iᵀ, G̃_i = α G_i + (1 − α) diag(G_i); ``weights`` are (out, in).

    A direction no task's inputs reach (a zero row and column of Σ G̃) is undetermined by the regression; a tiny
    ridge towards the plain mean of the W_i fixes it there and changes nothing measurable elsewhere."""
    gs = [alpha * g.double() + (1 - alpha) * torch.diag(torch.diag(g.double())) for g in grams]
    total = sum(gs)
    rhs = sum(g @ w.double().T for g, w in zip(gs, weights))
    eps = 1e-10 * float(torch.diag(total).mean().clamp(min=1e-30))
    mean_w = sum(w.double() for w in weights) / len(weights)
    eye = torch.eye(total.shape[0], dtype=torch.float64)
    return torch.linalg.solve(total + eps * eye, rhs + eps * mean_w.T).T
