"""The T × T Gramian of a step's task gradients over the shared parameters, without the T × P Jacobian.

Most gradient-level methods (MGDA, PCGrad, UPGrad, DualProj, CAGrad, IMTL-G, Aligned-MTL, FairGrad, GradVac,
Nash-MTL, ConFIG: torchjd's ``GramianWeightedAggregator``, and
:class:`~bench.weighting.jd.conflict_free.GramianConFIG`) update the shared parameters by ``Σ_i w_i g_i`` with
weights read from the Gramian ``G = J Jᵀ`` alone. So, as torchjd's ``autogram`` engine does, the Jacobian need not be
held: the Gramian is summed module by module, and the update is written from the same per-module quantities
(:meth:`GramianTaker.write`).

How :class:`GramianTaker` sums it. Forward hooks, installed once on every module with direct trainable parameters,
record each call's outputs (and a plain ``nn.Linear``'s input). Per task, one backward to those outputs gives the
output gradients δ_i (no parameter gradient is formed). Then, per module:

* ``nn.Linear``: task i's weight gradient is ``Σ_calls δ_iᵀ X``, formed for all tasks a block of output rows at a
  time (a block of T × rows × in numbers, about the layer's own size), and its Gram matrix summed into G;
* any other module: its T parameter gradients (a vector-Jacobian product of its outputs, per task) are formed and
  their Gram matrix summed.

The update is then, per module, the parameter gradient of the weighted output gradient ``Σ_i w_i δ_i`` (a
``Linear``: ``(Σ_i w_i δ_i)ᵀ X``): no second backward through the network.

Peak extra memory: the output gradients (the size of the recorded activations; one task's on a multi-input step)
plus one layer-sized block, instead of T × P. A shared parameter no recorded call covers (used by a parent module
through a functional call) enters by its own per-task rows. The sum is exact only if each parameter is used inside
its own module's forward; the adapter checks it once against the plain Jacobian and otherwise keeps the plain path.

Example (two tasks on a shared ``Linear``; the Gramian equals ``J Jᵀ`` of the plain Jacobian):
    >>> _ = torch.manual_seed(0); body = nn.Linear(3, 2); taker = GramianTaker(body)
    >>> z = body(torch.randn(4, 3)); L = [z[:, 0].sum(), (z ** 2).sum()]
    >>> G = taker.gramian(L, list(body.parameters()))
    >>> J = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(l, list(body.parameters()),
    ...                  retain_graph=True)]) for l in L])
    >>> bool(torch.allclose(G, J @ J.T))
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves

from bench.weighting import jacobian

if TYPE_CHECKING:
    from bench.weighting.base import Step


@dataclass(frozen=True)
class _Call:
    """One forward call of a hooked module: its outputs, and a plain ``nn.Linear``'s input (None otherwise)."""

    module: nn.Module
    outs: tuple[Tensor, ...]
    x: Tensor | None


#: how many steps' worth of recorded calls are kept when no step consumes them
MAX_STEPS = 4


def _plain_linear(module: nn.Module) -> bool:
    # a subclass with its own forward (LoRA, quantised layers) may not compute x Wᵀ + b: it takes the generic way
    return isinstance(module, nn.Linear) and type(module).forward is nn.Linear.forward


def _direct(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters(recurse=False) if p.requires_grad]


def gram_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a Gramian is summed in: float64 stays float64; fp16/bf16/fp32 aggregate in fp32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class GramianTaker:
    """The Gramian of the task gradients of the step just run forward through ``model`` (hooks created once)."""

    def __init__(self, model: nn.Module, block: int | None = None):
        self._calls: list[_Call] = []
        self._parts: list[_LinearPart | _ModulePart | _LoosePart] = []
        self.per_step, self._dropped = 0, False  # the most calls one step recorded; whether calls were dropped
        self.block = block  # numbers in one Linear block (None: the layer's own size)
        self._handles = [m.register_forward_hook(self._record) for m in model.modules() if _direct(m)]

    def _record(self, module: nn.Module, args: tuple, output) -> None:
        # nothing is recorded without a graph (evaluation), nor while torch.compile traces (no graph break; the
        # adapter then finds no call and takes the plain path)
        if torch.compiler.is_compiling() or not torch.is_grad_enabled():
            return
        outs = tuple(t for t in tree_leaves(output) if isinstance(t, Tensor) and t.requires_grad)
        if outs:
            x = args[0] if _plain_linear(module) and args and isinstance(args[0], Tensor) else None
            self._calls.append(_Call(module, outs, x))
            # calls no step consumes (the model trained on by another balancer after this one's stage) must not
            # keep every step's activations alive: past MAX_STEPS steps' worth the oldest go, and the next step
            # that finds calls gone takes the plain path
            if self.per_step and len(self._calls) > MAX_STEPS * self.per_step:
                del self._calls[:self.per_step]
                self._dropped = True

    def clear(self) -> None:
        """Drop the recorded calls (the step's activations they reference are then the graph's alone)."""
        self._calls, self._parts, self._dropped = [], [], False

    def close(self) -> None:
        """Remove the hooks (for good)."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self.clear()

    def gramian(self, losses: list[Tensor], shared: list[nn.Parameter]) -> Tensor | None:
        """``J Jᵀ`` for the Jacobian of ``losses`` over ``shared``, from the calls recorded since the last call (None
        when no call of a module holding a shared parameter was recorded). Keeps the graph, and the output
        gradients for :meth:`write`."""
        calls, self._calls = self._calls, []
        self.per_step = max(self.per_step, len(calls))
        if self._dropped:
            self._dropped = False
            return None
        ids = {id(p) for p in shared}
        calls = [c for c in calls if any(id(p) in ids for p in _direct(c.module))]
        if not calls:
            return None
        covered = {id(p) for c in calls for p in _direct(c.module)}
        loose = [p for p in shared if id(p) not in covered]
        targets = [t for c in calls for t in c.outs]
        # per task: the gradient of its loss at every recorded output (None: the call is not on the task's graph)
        deltas = [torch.autograd.grad(L, [*targets, *loose], retain_graph=True, allow_unused=True) for L in losses]
        dtype = gram_dtype(shared[0].dtype)
        G = torch.zeros(len(losses), len(losses), dtype=dtype, device=shared[0].device)
        uses: dict[nn.Module, list[tuple[_Call, list[tuple[Tensor | None, ...]]]]] = {}
        at = 0
        for c in calls:
            uses.setdefault(c.module, []).append((c, [d[at:at + len(c.outs)] for d in deltas]))
            at += len(c.outs)
        parts = []
        for module, used in uses.items():
            params = [p for p in _direct(module) if id(p) in ids]
            part = _LinearPart(module, used, dtype) if _plain_linear(module) and all(
                c.x is not None for c, _ in used) else _ModulePart(params, used)
            part.add_gramian(G, self.block)
            parts.append(part)
        if loose:
            parts.append(_LoosePart(loose, [d[len(targets):] for d in deltas]))
            parts[-1].add_gramian(G, self.block)
        self._parts = parts
        return G

    def write(self, weights: Tensor) -> None:
        """The update ``Σ_i w_i g_i`` into the shared parameters' ``.grad`` (accumulating), from the output
        gradients of the last :meth:`gramian`: per module, the weighted output gradient's weight gradient (no
        backward through the network)."""
        parts, self._parts = self._parts, []
        for part in parts:
            part.write(weights)


def _accumulate(p: nn.Parameter, g: Tensor) -> None:
    g = g.to(p.dtype)
    p.grad = g if p.grad is None else p.grad + g


class _LinearPart:
    """A ``Linear``'s share: task i's weight gradient is ``Σ_calls δ_iᵀ X``, its bias gradient ``Σ_calls 1ᵀ δ_i``."""

    def __init__(self, module: nn.Linear, used, dtype: torch.dtype):
        self.module = module
        out, inp = module.weight.shape
        # each call's rows: X (N × in) and, per task, δ (N × out) or None
        self.rows = [(c.x.detach().reshape(-1, inp).to(dtype),
                      [None if d[0] is None else d[0].reshape(-1, out).to(dtype) for d in per_task])
                     for c, per_task in used]

    def add_gramian(self, G: Tensor, block: int | None) -> None:
        """Add the Gram matrix of the task gradients, formed a block of output rows at a time (T × rows × in
        numbers, about the layer's own size)."""
        T, w, b = G.shape[0], self.module.weight, self.module.bias
        out, inp = w.shape
        if w.requires_grad:
            step = max(1, (block or out * inp) // (T * inp))
            for r0 in range(0, out, step):
                A = torch.zeros(T, min(step, out - r0), inp, dtype=G.dtype, device=G.device)
                for X, ds in self.rows:
                    for i, d in enumerate(ds):
                        if d is not None:
                            A[i].addmm_(d[:, r0:r0 + step].T, X)
                A = A.reshape(T, -1)
                G.addmm_(A, A.T)
        if b is not None and b.requires_grad:
            B = torch.zeros(T, out, dtype=G.dtype, device=G.device)
            for _, ds in self.rows:
                for i, d in enumerate(ds):
                    if d is not None:
                        B[i] += d.sum(0)
            G.addmm_(B, B.T)

    def write(self, weights: Tensor) -> None:
        w, b = self.module.weight, self.module.bias
        gw = gb = None
        for X, ds in self.rows:
            D = _combine(ds, weights)  # Σ_i w_i δ_i of this call
            if D is None:
                continue
            gw = D.T @ X if gw is None else gw.addmm_(D.T, X)
            gb = D.sum(0) if gb is None else gb + D.sum(0)
        if gw is not None and w.requires_grad:
            _accumulate(w, gw)
        if gb is not None and b is not None and b.requires_grad:
            _accumulate(b, gb)


def _combine(pieces: list[Tensor | None], weights: Tensor) -> Tensor | None:
    """``Σ_i w_i piece_i`` over the tasks whose piece is not None (None if none is)."""
    out = None
    for w, d in zip(weights, pieces):
        if d is not None:
            d = d * w.to(d.dtype)
            out = d if out is None else out + d
    return out


class _ModulePart:
    """Any other module's share: its parameters' gradient per task, a vector-Jacobian product of its outputs."""

    def __init__(self, params: list[nn.Parameter], used):
        self.params, self.used = params, used

    def add_gramian(self, G: Tensor, block: int | None) -> None:
        _add_rows(G, [_module_row(self.params, self.used, i) for i in range(G.shape[0])])

    def write(self, weights: Tensor) -> None:
        for c, per_task in self.used:
            D = [_combine([d[k] for d in per_task], weights) for k in range(len(c.outs))]
            if all(g is None for g in D):
                continue
            grads = [torch.zeros_like(o) if g is None else g.to(o.dtype) for o, g in zip(c.outs, D)]
            for p, g in zip(self.params, torch.autograd.grad(c.outs, self.params, grads, retain_graph=True,
                                                            allow_unused=True)):
                if g is not None:
                    _accumulate(p, g)


class _LoosePart:
    """Shared parameters no recorded call covers: their per-task gradients, taken directly."""

    def __init__(self, params: list[nn.Parameter], rows: list[tuple[Tensor | None, ...]]):
        self.params, self.rows = params, rows

    def add_gramian(self, G: Tensor, block: int | None) -> None:
        _add_rows(G, [list(r) for r in self.rows])

    def write(self, weights: Tensor) -> None:
        for k, p in enumerate(self.params):
            g = _combine([r[k] for r in self.rows], weights)
            if g is not None:
                _accumulate(p, g)


def _module_row(params: list[nn.Parameter], uses, i: int) -> list[Tensor | None]:
    """Task i's gradient of a module's ``params``: the vector-Jacobian product of each call's outputs with δ_i."""
    total: list[Tensor | None] = [None] * len(params)
    for c, per_task in uses:
        d = per_task[i]
        if all(g is None for g in d):
            continue
        grads = [torch.zeros_like(o) if g is None else g for o, g in zip(c.outs, d)]
        vjp = torch.autograd.grad(c.outs, params, grads, retain_graph=True, allow_unused=True)
        total = [a if b is None else b if a is None else a + b for a, b in zip(total, vjp)]
    return total


def _add_rows(G: Tensor, rows: list[list[Tensor | None]]) -> None:
    """Add ``R Rᵀ`` for the T rows given as per-parameter pieces (None: zero), one parameter at a time."""
    for k in range(len(rows[0])):
        pieces = [row[k] for row in rows]
        ref = next((p for p in pieces if p is not None), None)
        if ref is None:
            continue
        R = torch.stack([(torch.zeros_like(ref) if p is None else p).reshape(-1).to(G.dtype) for p in pieces])
        G.addmm_(R, R.T)


#: how far the Gramian summed by modules may be from the plain Jacobian's J Jᵀ (relative, Frobenius) at the check
CHECK_RTOL = {torch.float64: 1e-9, torch.float32: 1e-3}


class GramianPath:
    """The Gramian path of one gradient-level balancer on one model (``JDAggregator.backward`` asks it first).

    It applies when the aggregator's update is a weighting of the Gramian (it has a ``gramian_weighting``), the
    Jacobian is taken over the parameters (``via=params``) and the step runs in one process (``step.world == 1``:
    under data parallelism the plain Jacobian path sums the rows over the processes). Its hooks are created with it,
    before the first forward, so that every step of a stage takes the same path whether or not it was resumed (a
    resumed stage is bit for bit the uninterrupted one). At its first step it checks once that the Gramian summed by
    modules equals the plain Jacobian's ``J Jᵀ`` (:data:`CHECK_RTOL`), and if not (a parameter used outside its
    module's forward, a compiled backbone) removes them and keeps the plain path."""

    def __init__(self, model: nn.Module):
        self.taker: GramianTaker | None = GramianTaker(model)
        self.checked = False
        self.off = False  # the check failed: the plain path for good

    def backward(self, losses: dict[str, Tensor], step: Step, agg: Any, via: str) -> bool:
        """Fill the heads' and the shared parameters' ``.grad`` as the plain path would, and return True; or leave
        every ``.grad`` alone and return False (the caller then takes the plain path)."""
        weighting = getattr(agg, "gramian_weighting", None)
        if via != "params" or step.world != 1:  # the same at every step of the stage: the hooks go for good,
            self._stop()  # rather than record every forward for nothing
            return False
        if self.off or weighting is None or self.taker is None:
            if self.taker is not None:
                self.taker.clear()
            return False
        tasks, L = list(losses), [step.scale(loss) for loss in losses.values()]
        shared = [p for p in step.shared if p.requires_grad]
        G = self.taker.gramian(L, shared) if shared else None
        if G is None or (not self.checked and not self._check(G, L, tasks, shared, step)):
            return False
        jacobian.heads_backward(L, tasks, step.heads)
        step.mark("weighting")
        self.taker.write(weighting(G))
        return True

    def _check(self, G: Tensor, L: list[Tensor], tasks: list[str], shared: list[nn.Parameter], step: Step) -> bool:
        self.checked = True
        J = jacobian.via_params(L, tasks, shared, {}, per_task_graphs=True).to(G.dtype)  # keeps the graph
        ref = J @ J.T
        if float((G - ref).norm()) <= CHECK_RTOL.get(G.dtype, 1e-3) * float(ref.norm()):
            return True
        self._stop()
        return False

    def _stop(self) -> None:
        """The plain path for the rest of the stage: remove the hooks."""
        self.off = True
        if self.taker is not None:
            self.taker.close()
            self.taker = None
