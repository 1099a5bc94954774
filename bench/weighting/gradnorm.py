"""GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, ICML 2018).

Task weights w_i (Σ_i w_i = T, initialised to 1) are learned so that every task trains at a similar rate:

* W is the last shared layer (``last_shared_layer``, default ``model.backbone.shared_layer``);
* G_i = ‖∇_W (w_i L_i)‖ = w_i · n_i with n_i = ‖∇_W L_i‖, taken by ``torch.autograd.grad(L_i, W.parameters())``
  and detached. That backward runs from L_i through the head and the shared layers after W down to W only: one
  small extra backward per task, not T full backward passes (LibMTL takes the norm over all shared parameters);
* L̃_i = L_i(t) / L_i(0), where L_i(0) is the mean of L_i over the first ``warmup_steps`` steps (one batch is noisy);
  r_i = L̃_i / mean_j L̃_j (relative inverse training rate);
* target_i = mean_j G_j · r_i^α, **detached** (a constant; otherwise w could shrink the target instead of
  matching it);
* L_grad = Σ_i |G_i − target_i| updates only w, with its own optimiser and no weight decay. Because
  G_i = w_i·n_i with n_i constant, ∂L_grad/∂w_i = sign(G_i − target_i)·n_i exactly: no double backward;
* the network is trained on Σ_i w_i L_i with w detached (the loss returned by :meth:`combine`);
* after every step w is clamped to ≥ ``min_weight`` and rescaled so Σ w_i = T.

During the first ``warmup_steps`` steps (while L_i(0) is being collected) w stays at its current value.

Order within a step (the engine's loop): ``combine`` measures n_i, computes ∂L_grad/∂w and returns Σ w_i L_i with
the *pre-update* w (as in the paper's Algorithm 1); the engine backpropagates and steps the network; ``after_step``
then steps w's optimiser and renormalises.

Multi-input suites: GradNorm compares every task's loss in the same step, so ``needs_all_tasks`` is True and the
engine draws one batch from *every* task each step (the ``all`` sampling mode) instead of sampling one task; a step
missing a task is an error here rather than a silently biased update. Single-input suites have every label in every
batch already.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from bench.config import TaskConfig
    >>> class M(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.backbone = nn.Sequential(nn.Linear(3, 4), nn.Tanh()); self.backbone.shared_layer = "0"
    ...         self.heads = nn.ModuleDict({"a": nn.Linear(4, 1), "b": nn.Linear(4, 1)})
    >>> tasks = [TaskConfig(name=t, input="vector", target="regression") for t in "ab"]
    >>> m, g = M(), GradNorm(tasks, GradNormParams(warmup_steps=1))
    >>> g.setup(m)
    >>> h = m.backbone(torch.randn(8, 3))
    >>> total = g.combine({t: m.heads[t](h).pow(2).mean() for t in "ab"})
    >>> total.backward(); g.after_step()
    >>> round(sum(g.current().values()), 6)
    2.0
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from bench.config import Frozen, TaskConfig
from bench.errors import BenchError
from bench.weighting.base import Weighting, register_weighting


class GradNormParams(Frozen):
    #: asymmetry α: how strongly slow tasks (high r_i) are pushed up
    alpha: float = Field(1.5, ge=0)
    #: learning rate of w (its own optimiser)
    lr: float = Field(0.025, gt=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    #: L_i(0) = mean of L_i over this many first steps; w is not updated during them
    warmup_steps: int = Field(5, ge=1)
    #: submodule path inside the backbone (e.g. "encoder.layer.5"); None: the backbone's ``shared_layer``
    last_shared_layer: str | None = None
    #: w_i is clamped to at least this before renormalising (keeps every task alive and r_i^α finite)
    min_weight: float = Field(1e-3, gt=0)


@register_weighting("gradnorm")
class GradNorm(Weighting):
    """Chen et al. 2018: w_i learned from L1(G_i, mean G · r_i^α) at the last shared layer; Σw = T."""

    Params = GradNormParams
    needs_all_tasks = True

    def __init__(self, tasks: list[TaskConfig], params: GradNormParams | None = None):
        super().__init__(tasks, params)
        self.weights = nn.Parameter(torch.ones(len(self.task_names)))  # trained by its own optimiser only
        self.register_buffer("loss_sum0", torch.zeros(len(self.task_names)))  # Σ of L_i over the warm-up steps
        self.steps_seen = 0  # a Python int: reading a device tensor each step would synchronise the GPU
        self._shared: list[nn.Parameter] = []
        self.shared_layer_name: str | None = None
        self._opt: torch.optim.Optimizer | None = None
        # the last measured n_i, G_i and L_grad, kept as tensors (no device sync per step); see the properties
        self._last_n: torch.Tensor | None = None
        self._last_G: torch.Tensor | None = None
        self._last_grad_loss: torch.Tensor | None = None

    @property
    def last_norms(self) -> dict[str, float]:
        """n_i = ‖∇_W L_i‖ per task at the last training step."""
        return {} if self._last_n is None else dict(zip(self.task_names, self._last_n.tolist()))

    @property
    def last_G(self) -> dict[str, float]:
        """G_i = w_i·n_i per task at the last training step (its spread is what GradNorm evens out)."""
        return {} if self._last_G is None else dict(zip(self.task_names, self._last_G.tolist()))

    @property
    def last_grad_loss(self) -> float | None:
        """L_grad = Σ|G_i − target_i| at the last step after warm-up."""
        return None if self._last_grad_loss is None else float(self._last_grad_loss)

    def get_extra_state(self) -> dict:
        return {"steps_seen": self.steps_seen}

    def set_extra_state(self, state: dict) -> None:
        self.steps_seen = int(state["steps_seen"])

    # ------------------------------------------------------------------ setup
    def setup(self, model: nn.Module) -> None:
        backbone = getattr(model, "backbone", model)
        path = self.params.last_shared_layer or getattr(backbone, "shared_layer", None)
        if not path:
            raise BenchError("gradnorm: the backbone names no shared_layer; set weighting.last_shared_layer to a "
                             "submodule path of the backbone")
        layer = _resolve(backbone, path)
        self._shared = [p for p in layer.parameters() if p.requires_grad]
        if not self._shared:
            raise BenchError(f"gradnorm: last_shared_layer {path!r} has no trainable parameters; "
                             f"choose one of: {_some_layers(backbone)}")
        self.shared_layer_name = path
        self.to(self._shared[0].device)
        opt_cls = torch.optim.Adam if self.params.optimizer == "adam" else torch.optim.SGD
        self._opt = opt_cls([self.weights], lr=self.params.lr, weight_decay=0.0)

    # ------------------------------------------------------------------ step
    def combine(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        missing = [t for t in self.task_names if t not in losses]
        if missing:
            raise BenchError(f"gradnorm needs every task's loss in each step but {missing} are missing; "
                             "use train.sampling=all (the engine does so when a weighting needs_all_tasks)")
        if not self._shared:
            raise BenchError("gradnorm: setup(model) was not called before combine()")
        L = [losses[t] for t in self.task_names]
        w = self.weights.detach().clone()  # the pre-update w: what the network is trained with this step
        total = torch.stack([wi * li for wi, li in zip(w, L)]).sum()
        if not torch.is_grad_enabled() or not total.requires_grad:
            return total  # evaluation: nothing to learn

        # n_i = ‖∇_W L_i‖: autograd only walks from L_i back to W (heads + layers after W), nothing below W
        norms = []
        for li in L:
            grads = torch.autograd.grad(li, self._shared, retain_graph=True, allow_unused=True)
            sq = [g.detach().pow(2).sum() for g in grads if g is not None]
            norms.append(torch.sqrt(torch.stack(sq).sum()) if sq else torch.zeros((), device=w.device))
        n = torch.stack(norms).to(w.device, torch.float32)
        G = w * n
        self._last_n, self._last_G = n, G

        Lval = torch.stack([li.detach().float() for li in L]).to(w.device)
        k = self.params.warmup_steps
        if self.steps_seen < k:  # still measuring L_i(0): w keeps its value
            self.loss_sum0 += Lval
            self.steps_seen += 1
            return total
        self.steps_seen += 1
        L0 = (self.loss_sum0 / k).clamp_min(torch.finfo(torch.float32).tiny)
        ratio = Lval / L0  # L̃_i
        r = ratio / ratio.mean()  # relative inverse training rate
        target = (G.mean() * r.pow(self.params.alpha)).detach()
        diff = G - target
        self._last_grad_loss = diff.abs().sum()
        # ∂/∂w_i Σ_j |w_j n_j − target_j| = sign(G_i − target_i)·n_i (target is a constant)
        grad = torch.sign(diff) * n
        self.weights.grad = grad if self.weights.grad is None else self.weights.grad + grad
        return total

    def after_step(self) -> None:
        if self._opt is not None and self.weights.grad is not None:
            self._opt.step()
            self._opt.zero_grad(set_to_none=True)
        with torch.no_grad():  # Σ w = T, every w_i ≥ min_weight
            self.weights.clamp_(min=self.params.min_weight)
            self.weights.mul_(len(self.task_names) / self.weights.sum())

    def current(self) -> dict[str, float]:
        """w_i per task (Σ = T)."""
        return dict(zip(self.task_names, self.weights.detach().tolist()))


def _resolve(backbone: nn.Module, path: str) -> nn.Module:
    try:
        return backbone.get_submodule(path)
    except AttributeError:
        raise BenchError(f"gradnorm: last_shared_layer {path!r} is not a submodule of the backbone; "
                         f"valid ones include: {_some_layers(backbone)}") from None


def _some_layers(backbone: nn.Module, k: int = 6) -> str:
    """The last ``k`` submodules that own parameters directly (the usual candidates for W)."""
    names = [n for n, m in backbone.named_modules() if n and any(True for _ in m.parameters(recurse=False))]
    return ", ".join(names[-k:]) if names else "(none with parameters)"
