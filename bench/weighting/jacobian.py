"""The per-task Jacobian of a training step, for gradient-level balancers (:meth:`Step.jacobian`).

Two ways to take it, each a known method of the literature:

* ``params``: the T × P matrix of the task gradients over the backbone's shared parameters (flattened and
  concatenated in ``step.shared`` order). On a multi-input step (one forward per task batch) each row is one plain
  backward through its own batch's graph; on a single-input step torchjd's ``autojac.backward`` computes the rows in
  one vectorised pass. The update written back (:func:`write_params`) is split, reshaped and accumulated into the
  parameters' ``.grad``, exactly as torchjd's ``jac_to_grad`` does.
* ``features``: the T × D matrix of the task gradients with respect to the one shared representation z of a
  single-input step (T small backward passes through the heads only). The update written back
  (:func:`write_features`) is backpropagated from z through the backbone in one pass (MGDA-UB, Sener & Koltun).

Either way each task's head receives its own loss's gradient, unweighted (torchjd's ``mtl_backward`` convention):
heads are task-specific, only the shared update is the balancer's to decide.

Example (two tasks on a 2-parameter model; the heads are one number each):
    >>> theta = torch.tensor([1.0, 2.0], requires_grad=True)
    >>> ha, hb = torch.ones((), requires_grad=True), torch.ones((), requires_grad=True)
    >>> L = [ha * (theta @ torch.tensor([3.0, 0.0])), hb * (theta ** 2).sum()]
    >>> via_params(L, ["a", "b"], [theta], {"a": [ha], "b": [hb]}, per_task_graphs=True)
    tensor([[3., 0.],
            [2., 4.]])
    >>> ha.grad, hb.grad
    (tensor(3.), tensor(5.))
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Via = Literal["params", "features"]


def accumulate(params: list[nn.Parameter], grads) -> None:
    """Add ``grads`` to the parameters' ``.grad`` (as ``backward()`` does; ``None``: the parameter was not reached)."""
    for p, g in zip(params, grads):
        if g is not None:
            p.grad = g if p.grad is None else p.grad + g


def via_features(losses: list[torch.Tensor], tasks: list[str], z: torch.Tensor | tuple[torch.Tensor, ...],
                 heads: dict[str, list[nn.Parameter]]) -> torch.Tensor:
    """The T × D Jacobian of ``losses`` with respect to ``z`` (fp16/bf16 aggregate in fp32, float64 stays float64);
    each head gets its own task's gradient.
    ``z`` may be a tuple of tensors (every feature map a dense head reads): D is then their total size, in order."""
    parts = tuple(z) if isinstance(z, (tuple, list)) else (z,)
    rows = []
    for t, li in zip(tasks, losses):
        own = heads.get(t, [])
        grads = torch.autograd.grad(li, [*parts, *own], retain_graph=True, allow_unused=True)
        gz, gh = grads[:len(parts)], grads[len(parts):]
        rows.append(torch.cat([torch.zeros_like(p).reshape(-1) if g is None else g.reshape(-1)
                               for p, g in zip(parts, gz)]))
        accumulate(own, gh)
    J = torch.stack(rows)
    return J if J.dtype == torch.float64 else J.float()


def write_features(direction: torch.Tensor, z: torch.Tensor | tuple[torch.Tensor, ...]) -> None:
    """Backpropagate the update ``direction`` for ``z`` (length D; a tuple's parts in order) through the backbone."""
    parts = tuple(z) if isinstance(z, (tuple, list)) else (z,)
    pieces = direction.split([p.numel() for p in parts])
    torch.autograd.backward(parts, [d.to(p.dtype).view_as(p) for p, d in zip(parts, pieces, strict=True)])


def via_params(losses: list[torch.Tensor], tasks: list[str], shared: list[nn.Parameter],
               heads: dict[str, list[nn.Parameter]], per_task_graphs: bool) -> torch.Tensor:
    """The T × P Jacobian of ``losses`` over ``shared``; each head gets its own task's gradient.
    ``per_task_graphs``: each loss has its own batch's graph (multi-input), so T plain backward passes (torchjd's
    vectorised backward would push every row through every task's graph: T² of them)."""
    heads_backward(losses, tasks, heads)
    if per_task_graphs:
        rows = [torch.autograd.grad(li, shared, retain_graph=True, allow_unused=True) for li in losses]
        jacs = [torch.stack([r[i] if r[i] is not None else torch.zeros_like(p) for r in rows])
                for i, p in enumerate(shared)]
    else:
        # imported here: torchjd's package imports cvxpy and scipy (about 1.4 s) that most commands never need
        from torchjd.autojac import backward

        backward(losses, inputs=shared)
        jacs = [p.jac for p in shared]
        for p in shared:
            del p.jac
    return torch.concat([j.reshape(j.shape[0], -1) for j in jacs], dim=1)


def heads_backward(losses: list[torch.Tensor], tasks: list[str], heads: dict[str, list[nn.Parameter]]) -> None:
    """Each task's head gets its own loss's gradient (unweighted), the graph kept for the shared update."""
    own = [p for t in tasks for p in heads.get(t, [])]
    if own:  # each head is reached by its own task's loss only, so one backward of the sum serves them all
        accumulate(own, torch.autograd.grad(torch.stack(losses).sum(), own, retain_graph=True, allow_unused=True))


def write_params(direction: torch.Tensor, shared: list[nn.Parameter]) -> None:
    """Split the update ``direction`` (length P) into the shared parameters' ``.grad``, accumulating."""
    for p, g in zip(shared, direction.split([p.numel() for p in shared]), strict=True):
        g = g.reshape(p.shape).to(dtype=p.dtype)
        if p.grad is not None:
            p.grad += g
        else:
            p.grad = g
