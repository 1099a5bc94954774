"""What a training step does differently when its global batch is split over several processes (``procs=N``).

The trainer draws the global batch as one process would; rank r forwards its slice (:func:`local_specs`). Then:

* **Losses** (:func:`global_losses`). Rank r's loss of task i is the mean over its slice, L_i^r. The loss of the
  global batch is L_i = Σ_r c_ir L_i^r, where c_ir is rank r's share of the task's labelled examples in that batch
  (every rank knows every slice, so no message is needed for it). Each rank hands its balancer

      L̃_i = L_i + (c_ir L_i^r − stop_grad(c_ir L_i^r))

  whose *value* is the global loss, the same on every rank, and whose *gradient* is rank r's share of the global
  gradient. Any function f of the losses a balancer computes (a weighted sum, a log, a softmax of loss ratios, a
  learned σ_i) then has the same value on every rank, and its gradient on rank r is Σ_i ∂f/∂L_i · c_ir ∇L_i^r:
  summed over the ranks, exactly the gradient of f at the global batch. The balancer's own parameters (σ_i, w_i,
  logits) see only values and are therefore already equal everywhere.
* **Gradients** (:func:`sync_grads`): the network's gradients are summed over the ranks, except those a
  gradient-level balancer wrote from an already summed Jacobian (:meth:`bench.weighting.Step.jacobian` sums J for
  ``via=params`` and gathers its columns for ``via=features``).

The sum is exact for kinds whose loss is a mean over labelled examples (classification, regression, multi-label);
for a loss averaged over tokens or pixels the shares are still counted in examples, so the global loss weighs a
slice's tokens by its share of examples (docs/distributed.md).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from bench import distributed
from bench.batches import BatchSpec


def local_specs(specs: list[BatchSpec]) -> list[BatchSpec]:
    """This rank's slice of every batch of a step."""
    return [dataclasses.replace(s, idx=distributed.shard(s.idx)) for s in specs]


def shares(spec: BatchSpec, task: str, targets: torch.Tensor, kind) -> np.ndarray:
    """Each rank's share of the labelled examples of ``task`` in the global batch ``spec`` (sums to 1; all zero
    when no example of the batch is labelled)."""
    w = distributed.current()
    counts = np.array([int(kind.labelled(targets[distributed.shard(spec.idx, dataclasses.replace(w, rank=r))]).sum())
                       for r in range(w.size)], dtype=np.float64)
    total = counts.sum()
    return counts / total if total else counts


def global_losses(local: dict[str, torch.Tensor], share: dict[str, float]) -> dict[str, torch.Tensor]:
    """The straight-through global losses L̃_i above, from this rank's losses and its share of each task."""
    if not local:
        return local
    names = list(local)
    mine = torch.stack([local[t].float() * share[t] for t in names])
    total = distributed.all_sum(mine.detach())
    return {t: total[i] + (mine[i] - mine[i].detach()) for i, t in enumerate(names)}


def zero_loss(output) -> torch.Tensor:
    """A zero loss still connected to the graph of ``output``: a rank whose slice has no label of a task that
    the global batch has (its share is 0, its mean would be NaN)."""
    parts = output if isinstance(output, (tuple, list)) else getattr(output, "maps", (output,))
    return sum(p.float().sum() * 0.0 for p in parts)


def sync_grads(params: list[nn.Parameter], done: set[int]) -> None:
    """Sum the gradients of ``params`` over the ranks (one flat message per dtype), except the parameters in
    ``done`` (ids of those whose gradient is already the global one)."""
    todo = [p for p in params if p.grad is not None and id(p) not in done]
    by_dtype: dict[torch.dtype, list[nn.Parameter]] = {}
    for p in todo:
        by_dtype.setdefault(p.grad.dtype, []).append(p)
    for group in by_dtype.values():
        flat = torch.cat([p.grad.reshape(-1) for p in group])
        torch.distributed.all_reduce(flat)
        for p, g in zip(group, flat.split([p.numel() for p in group])):
            p.grad.copy_(g.view_as(p.grad))
