"""GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, ICML 2018).

Task weights w_i (Σ_i w_i = T, initialised to 1) are learned so that every task trains at a similar rate:

* W is the last shared layer (``last_shared_layer``, default ``model.backbone.shared_layer``);
* G_i = ‖∇_W (w_i L_i)‖ = w_i · n_i with n_i = ‖∇_W L_i‖, detached (how n_i is computed: below);
* L̃_i = L_i(t) / L_i(0), where L_i(0) is the mean of L_i over the first ``warmup_steps`` steps (one batch is noisy);
  r_i = L̃_i / mean_j L̃_j (relative inverse training rate);
* target_i = mean_j G_j · r_i^α, **detached** (a constant; otherwise w could shrink the target instead of
  matching it);
* L_grad = Σ_i |G_i − target_i| updates only w, with its own optimiser and no weight decay. Because
  G_i = w_i·n_i with n_i constant, ∂L_grad/∂w_i = sign(G_i − target_i)·n_i exactly: no double backward;
* the network is trained on Σ_i w_i L_i with w detached (the loss returned by :meth:`combine`);
* after every step w is clamped to ≥ ``min_weight`` and rescaled so Σ w_i = T.

During the first ``warmup_steps`` steps (while L_i(0) is being collected) w stays at its current value.

How n_i = ‖∇_W L_i‖ is measured. Either way the backward runs from L_i through the heads and the shared layers after
W down to W only: one small extra backward per task, never T full backward passes (LibMTL takes the norm over all
shared parameters).

* **W is an** ``nn.Linear`` (the default for the MLP, BERT-like and most timm backbones; ``fast_norm=True``): a
  forward hook on W keeps its input h (rows R = all leading dims flattened: B, or B·L for sequences) and its output
  z. Per task δ_i = ∂L_i/∂z by ``torch.autograd.grad(L_i, z)``, and with ∇_W L_i = δ_iᵀh (out×in) and
  ∇_b L_i = Σ_rows δ_i::

      ‖δᵀh‖²_F = Σ_ab (δδᵀ)_ab (hhᵀ)_ab      (Gram: R²·in once per step + R²·out per task)
               = ‖δᵀh‖²_F taken directly      (direct: R·in·out per task, what autograd.grad costs)

  whichever costs fewer multiply-adds for the shapes at hand (MLP, R = 128, 1024×1024: Gram, ~4× fewer; BERT's
  ``output.dense`` with R = B·L in the thousands: direct). The dense out×in gradient is never formed on the Gram path.
  hhᵀ is computed once per step and shared by every task whose loss reaches the same forward(s) of W (single-input:
  all tasks). Multi-input steps run W once per task batch; the hook keeps one (h, z) per forward, and each task's
  δ is taken with respect to all of them: the forwards its loss does not reach give no gradient (their rows have
  δ = 0), so each task is matched to its own batch's rows, and a loss reaching several forwards (W applied twice)
  has their rows concatenated.
* **Otherwise** (W is a Conv, a parametrised or wrapped Linear, a block holding several layers, ``fast_norm=False``,
  or the hook saw no forward, as under ``torch.compile``, or a task's loss reached none of the captured outputs):
  ``torch.autograd.grad(L_i, W.parameters())`` and the norm of the dense gradient, as before.

The fast path assumes W's parameters enter the losses only through W's own forward (no weight tying of W with a
layer after it); a task whose loss reaches W only some other way falls back to the autograd path automatically.

Order within a step (the engine's loop): ``backward`` measures n_i (:meth:`GradNorm.learn`), computes ∂L_grad/∂w,
and backpropagates Σ w_i L_i (``combine``, free of side effects) with the *pre-update* w (as in the paper's
Algorithm 1); the engine steps the network; ``after_step`` then steps w's optimiser and renormalises. w's optimiser
state (Adam moments) is part of :meth:`state_dict` (through ``get_extra_state``), so a resumed run continues with the
same moments.

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
    >>> g.backward({t: m.heads[t](h).pow(2).mean() for t in "ab"}, Step()); g.after_step()
    >>> round(sum(g.current().values()), 6)
    2.0
    >>> g.last_norm_paths
    ['direct', 'direct']
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from bench.config import Frozen, TaskConfig
from bench.errors import BenchError
from bench.weighting.base import Step, Weighting, register_weighting


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
    #: a Linear W: take ‖∇_W L_i‖ from W's input and ∂L_i/∂(W's output) without forming ∇_W (same numbers);
    #: False: always autograd.grad over W's parameters (the reference path)
    fast_norm: bool = True


@register_weighting("gradnorm")
class GradNorm(Weighting):
    """Chen et al. 2018: w_i learned from L1(G_i, mean G · r_i^α) at the last shared layer; Σw = T."""

    Params = GradNormParams
    needs_all_tasks = True
    weights_label = "GradNorm weight $w_t$"

    def __init__(self, tasks: list[TaskConfig], params: GradNormParams | None = None):
        super().__init__(tasks, params)
        self.weights = nn.Parameter(torch.ones(len(self.task_names)))  # trained by its own optimiser only
        self.register_buffer("loss_sum0", torch.zeros(len(self.task_names)))  # Σ of L_i over the warm-up steps
        self.steps_seen = 0  # a Python int: reading a device tensor each step would synchronise the GPU
        self._shared: list[nn.Parameter] = []
        self.shared_layer_name: str | None = None
        self._opt: torch.optim.Optimizer | None = None
        self._pending_opt_state: dict[str, Any] | None = None  # loaded before setup() built the optimiser
        # fast path: W's Linear (kept in a tuple so that it is not registered as a submodule), its hook, and the
        # (h, z) of every forward of W since the last combine()
        self._linear: tuple[nn.Linear] | tuple[()] = ()
        self._hook: Any = None
        self._captures: list[tuple[torch.Tensor, torch.Tensor]] = []
        #: per task, how n_i was taken at the last training step: "gram", "direct" or "autograd"
        self.last_norm_paths: list[str] = []
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

    # ------------------------------------------------------------------ state
    def get_extra_state(self) -> dict:
        """``steps_seen`` and w's own optimiser state (Adam moments), so that resuming loses neither."""
        state: dict[str, Any] = {"steps_seen": self.steps_seen}
        if self._opt is not None:
            state["optimizer"] = {"kind": self.params.optimizer, "state": self._opt.state_dict()}
        elif self._pending_opt_state is not None:
            state["optimizer"] = self._pending_opt_state
        return state

    def set_extra_state(self, state: dict) -> None:
        self.steps_seen = int(state["steps_seen"])
        opt = state.get("optimizer")  # absent in checkpoints written before it was saved
        if opt is None or opt.get("kind") != self.params.optimizer:
            return
        if self._opt is not None:
            self._opt.load_state_dict(opt["state"])
        else:  # loaded before setup(): applied when setup() builds the optimiser
            self._pending_opt_state = opt

    # ------------------------------------------------------------------ setup
    def setup(self, model: nn.Module) -> None:
        backbone = getattr(model, "backbone", model)
        # the model's choice first: when every head reads feature maps it names the last layer they pass through
        path = self.params.last_shared_layer or getattr(model, "shared_layer", None) \
            or getattr(backbone, "shared_layer", None)
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
        if self._pending_opt_state is not None:
            self._opt.load_state_dict(self._pending_opt_state["state"])
            self._pending_opt_state = None
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._captures = []
        self._linear = ()
        if self.params.fast_norm and _plain_linear(layer, self._shared):
            self._linear = (layer,)
            self._hook = layer.register_forward_hook(self._capture)

    def _capture(self, module: nn.Module, args: tuple, output: Any) -> None:
        """W's forward hook: keep (input, output) of forwards that build a graph (training steps)."""
        if (torch.is_grad_enabled() and args and isinstance(args[0], torch.Tensor)
                and isinstance(output, torch.Tensor) and output.requires_grad):
            self._captures.append((args[0].detach(), output))

    # ------------------------------------------------------------------ step
    def combine(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Σ_i w_i L_i with the current w held constant (the network's loss; w learns in :meth:`backward`)."""
        if not losses:
            raise BenchError("gradnorm got no task loss in a step; use train.sampling=all (the engine does so when "
                             "a weighting needs_all_tasks)")
        w = self.weights.detach().clone()  # the pre-update w: what the network is trained with this step
        # a task with no label in this step's batch (partial labels) is absent from the sum
        return torch.stack([wi * losses[t] for wi, t in zip(w, self.task_names) if t in losses]).sum()

    def backward(self, losses: dict[str, torch.Tensor], step: Step) -> None:
        """Measure n_i, give w its gradient ∂L_grad/∂w, then backpropagate Σ w_i L_i through the network."""
        total = self.combine(losses)
        # w learns only in steps where every task is present: an absent task's gradient norm cannot be measured
        if total.requires_grad and len(losses) == len(self.task_names):
            self.learn(losses, step)
        step.mark("weighting")
        step.backward(total)

    def learn(self, losses: dict[str, torch.Tensor], step: Step | None = None) -> None:
        """Measure n_i = ‖∇_W L_i‖ and accumulate ∂L_grad/∂w into ``weights.grad`` (no network gradient). With
        ``procs=N`` (``step.world > 1``) each rank holds its share of ∇_W L_i: the norms are taken of their sum."""
        captures, self._captures = self._captures, []  # this step's forwards of W (never kept past the step)
        if not self._shared:
            raise BenchError("gradnorm: setup(model) was not called before backward()")
        L = [losses[t] for t in self.task_names]
        w = self.weights.detach().clone()
        if step is not None and step.world > 1:
            n = self._summed_norms(L, step).to(w.device, torch.float32)
        else:
            n = self._norms(L, captures).to(w.device, torch.float32)
        G = w * n
        self._last_n, self._last_G = n, G

        Lval = torch.stack([li.detach().float() for li in L]).to(w.device)
        k = self.params.warmup_steps
        if self.steps_seen < k:  # still measuring L_i(0): w keeps its value
            self.loss_sum0 += Lval
            self.steps_seen += 1
            return
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

    def _norms(self, L: list[torch.Tensor], captures: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """n_i = ‖∇_W L_i‖ for every task, detached (fast path where it applies, autograd.grad otherwise)."""
        sq: list[torch.Tensor | None] = [None] * len(L)
        paths = ["autograd"] * len(L)
        if self._linear and captures:
            lin = self._linear[0]
            zs = [z for _, z in captures]
            groups: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}
            for i, li in enumerate(L):
                ds = torch.autograd.grad(li, zs, retain_graph=True, allow_unused=True)
                used = tuple(k for k, d in enumerate(ds) if d is not None)
                if used:  # rows of the forwards this loss reaches; none: autograd path below
                    delta = torch.cat([ds[k].detach().reshape(-1, lin.out_features) for k in used])
                    groups.setdefault(used, []).append((i, delta))
            for used, members in groups.items():
                h = torch.cat([captures[k][0].reshape(-1, lin.in_features) for k in used])
                out, how = linear_grad_sqnorms(h, [d for _, d in members], weight=lin.weight.requires_grad,
                                               bias=lin.bias is not None and lin.bias.requires_grad)
                for (i, _), s in zip(members, out):
                    sq[i], paths[i] = s, how
        for i, li in enumerate(L):
            if sq[i] is None:
                sq[i] = self._autograd_sqnorm(li)
        self.last_norm_paths = paths
        dev = self.weights.device
        return torch.sqrt(torch.stack([s.to(dev, torch.float32) for s in sq]))

    def _summed_norms(self, L: list[torch.Tensor], step: Step) -> torch.Tensor:
        """n_i of the whole batch when it is split over processes: the per-task gradients at W (T × |W|) summed
        over the ranks, then their norms (the norm of a sum is not a sum of norms)."""
        rows = []
        for li in L:
            grads = torch.autograd.grad(li, self._shared, retain_graph=True, allow_unused=True)
            rows.append(torch.cat([(torch.zeros_like(p) if g is None else g.detach()).float().reshape(-1)
                                   for p, g in zip(self._shared, grads)]))
        self.last_norm_paths = ["summed"] * len(L)
        return torch.linalg.vector_norm(step.reduce(torch.stack(rows)), dim=1)

    def _autograd_sqnorm(self, li: torch.Tensor) -> torch.Tensor:
        """‖∇_W L_i‖² from the dense gradient over W's parameters (any kind of W)."""
        grads = torch.autograd.grad(li, self._shared, retain_graph=True, allow_unused=True)
        sq = [g.detach().float().pow(2).sum() for g in grads if g is not None]
        return torch.stack(sq).sum() if sq else torch.zeros((), device=self.weights.device)

    def after_step(self, step: Step | None = None) -> None:
        self._captures = []
        if self._opt is not None and self.weights.grad is not None:
            self._opt.step()
            self._opt.zero_grad(set_to_none=True)
        with torch.no_grad():  # Σ w = T, every w_i ≥ min_weight
            self.weights.clamp_(min=self.params.min_weight)
            self.weights.mul_(len(self.task_names) / self.weights.sum())

    def current(self) -> dict[str, float]:
        """w_i per task (Σ = T)."""
        return dict(zip(self.task_names, self.weights.detach().tolist()))


def linear_grad_sqnorms(h: torch.Tensor, deltas: list[torch.Tensor], weight: bool = True, bias: bool = True,
                        method: Literal["auto", "gram", "direct"] = "auto") -> tuple[torch.Tensor, str]:
    """‖∇_W L_i‖² = ‖δ_iᵀh‖²_F (+ ‖Σ_rows δ_i‖² for the bias) for a Linear W, without forming δᵀh on the Gram path.

    ``h``: (R, in), W's input rows; ``deltas``: one (R, out) ∂L_i/∂(W's output) per task, all over the same rows.
    ``method="auto"`` takes the cheaper in multiply-adds of Gram (R²·in once + R²·out per task) and direct
    (R·in·out per task). Returns (the m squared norms in float32, the method used).

    Example:
        >>> h, d = torch.randn(5, 3), torch.randn(5, 2)
        >>> s, how = linear_grad_sqnorms(h, [d], method="gram")
        >>> bool(torch.allclose(s[0], (d.T @ h).pow(2).sum() + d.sum(0).pow(2).sum()))
        True
    """
    h = h.float()
    ds = [d.float() for d in deltas]  # each (R, out)
    m, (R, n_out), n_in = len(ds), ds[0].shape, h.shape[1]
    if method == "auto":
        method = "gram" if R * R * (n_in + m * n_out) < m * R * n_in * n_out else "direct"
    total = torch.zeros(m, device=h.device)
    if weight:
        if method == "gram":
            H = h @ h.T  # (R, R), shared by the m tasks
            D = torch.stack(ds)  # (m, R, out)
            total = total + (torch.bmm(D, D.transpose(1, 2)) * H).sum((1, 2))
        else:  # one dense out×in product per task (no (m, out, in) stack: that could be large)
            total = total + torch.stack([torch.linalg.vector_norm(d.T @ h).square() for d in ds])
    if bias:
        total = total + torch.stack([d.sum(0).square().sum() for d in ds])
    return total, method


def _plain_linear(layer: nn.Module, trainable: list[nn.Parameter]) -> bool:
    """True when ``layer`` is an nn.Linear computing x·Wᵀ + b from its own weight/bias parameters (the fast path
    applies); False for other modules, subclasses with their own forward, or parametrised weights."""
    if not isinstance(layer, nn.Linear) or type(layer).forward is not nn.Linear.forward:
        return False
    own = {id(p) for p in (layer.weight, layer.bias) if isinstance(p, nn.Parameter)}
    return bool(trainable) and all(id(p) in own for p in trainable)


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
