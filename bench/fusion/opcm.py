"""OPCM: orthogonal-projection continual merging (Tang et al. 2025, "Merging Models on the Fly Without Retraining: A
Sequential Approach to Scalable Continual Model Merging"; FusionBench's ``opcm``).

The task vectors τ_1..τ_N arrive one at a time, in the order of the parts (``merge_in`` passes them in arrival order).
The merged vector after t tasks is m_t = S_t / λ_t, where S_t = S_{t-1} + P_t(τ_t), S_1 = τ_1, and

* P_t, for the weight W of every ``nn.Linear`` of the backbone, removes from τ_t its components on the principal
  subspace of the earlier merged vector: with the full SVD m_{t-1} = U Σ Vᵀ and r_α the number of leading singular
  values whose share of Σ_i σ_i stays at most α (``alpha``), the coefficients (Uᵀ τ V)_{ij} with i, j < r_α and
  every diagonal one (i = j) are zeroed, the rest mapped back by U · V ᵀ. So ⟨P_t(τ_t), u_i v_jᵀ⟩ = 0 on that block,
  and ⟨P_t(τ_t), m_{t-1}⟩ = 0 exactly (m_{t-1} = Σ σ_i u_i v_iᵀ). Every other tensor (biases, norms, embeddings,
  convolutions) is added as it is: P_t = identity, as in the paper's code;
* λ_t = ‖S_t‖ / mean_{i≤t} ‖τ_i‖ (norms over all fused tensors), so the merged vector keeps the average norm of the
  task vectors however many are merged (the paper's adaptive scaling).

FusionBench updates the merged model in place one task at a time and rescales it each time (λ_{t-1} m_{t-1} +
P_t(τ_t), divided by λ_t). Since a projection does not depend on the scale of m_{t-1}, that sequence equals the
closed form above, which is computed here tensor by tensor from the stored fine-tunes (tests/test_merge_in.py checks
it against the step-by-step update). At t = 1 the result is θ_1 itself (``task_arithmetic`` with λ = 1).

Differences from FusionBench's code, all documented in docs/fusion.md: the order is the parts' order (FusionBench
shuffles by default); the norms run over the fused float parameters (bench's rule: buffers are the fine-tunes'
mean); a parameter held directly by a non-leaf module (FusionBench leaves it out of the update) is added like any
other non-linear tensor; a linear weight that the earlier tasks never moved (m_{t-1} = 0, no subspace) takes τ_t
unprojected, where FusionBench's SVD of a zero matrix would drop its diagonal in an arbitrary basis.

Example (two tasks on one 2 × 2 linear weight; the second task's diagonal part is removed, then rescaled):
    >>> import torch
    >>> t1, t2 = {"w": torch.tensor([[2.0, 0.0], [0.0, 0.0]])}, {"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]])}
    >>> merged, lambdas = opcm_merge([t1, t2], ["w"], {"w"}, alpha=0.5)
    >>> s = torch.tensor([[2.0, 2.0], [3.0, 0.0]], dtype=torch.float64)  # τ_1 + P(τ_2)
    >>> torch.allclose(merged["w"], s * (2 + 30 ** 0.5) / 2 / s.norm())  # rescaled to the mean norm
    True
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
from pydantic import Field
from torch import nn

from bench.config import Frozen, TaskConfig
from bench.errors import BenchError
from bench.fusion.base import register_fusion
from bench.fusion.model_based import FusionJob, FusionResult, ModelFusion


def linear_weights(backbone: nn.Module) -> set[str]:
    """The state-dict names of the backbone's ``nn.Linear`` weights: the matrices OPCM projects."""
    return {f"{name}.weight" if name else "weight" for name, m in backbone.named_modules() if isinstance(m, nn.Linear)}


def kept_rank(s: torch.Tensor, alpha: float) -> int:
    """r_α: the index of the first singular value at which the cumulative share of Σσ exceeds ``alpha`` (FusionBench's
    ``(s.cumsum(0) / s.sum() > alpha).argmax()``), i.e. how many leading directions stay at most ``alpha``.

    >>> kept_rank(torch.tensor([4.0, 3.0, 2.0, 1.0]), 0.8)   # shares .4 .7 .9 1.
    2
    """
    return int((s.cumsum(0) / s.sum() > alpha).to(torch.int8).argmax())


def project(tau: torch.Tensor, previous: torch.Tensor, alpha: float) -> torch.Tensor:
    """τ without its components on ``previous``'s principal subspace: in the full SVD basis U, V of ``previous``,
    the coefficients (Uᵀ τ V)_{ij} with i, j < r_α and the diagonal ones are zeroed. ``previous`` all zero: τ."""
    if not bool(previous.any()):
        return tau
    u, s, vh = torch.linalg.svd(previous, full_matrices=True)
    coeff = u.T @ tau @ vh.T
    coeff.diagonal().zero_()
    r = kept_rank(s, alpha)
    coeff[:r, :r] = 0
    return u @ coeff @ vh


def opcm_merge(task_vectors: Sequence[Mapping[str, torch.Tensor]], names: Sequence[str], matrices: set[str],
               alpha: float) -> tuple[dict[str, torch.Tensor], list[float]]:
    """The OPCM merged task vector m_N of ``task_vectors`` (in arrival order; float64) and λ_1..λ_N.

    ``matrices``: the names projected (2-D linear weights); every other name of ``names`` is summed. Each task vector
    is read one name at a time (a lazy mapping keeps N task vectors out of memory)."""
    n = len(task_vectors)
    sums: dict[str, torch.Tensor] = {}
    sq = torch.zeros(n, dtype=torch.float64)  # ‖S_t‖² for t = 1..N, accumulated tensor by tensor
    tau_sq = torch.zeros(n, dtype=torch.float64)  # ‖τ_t‖²
    for name in names:
        acc = task_vectors[0][name].to(torch.float64, copy=True)
        sq[0] += acc.square().sum()
        tau_sq[0] += acc.square().sum()
        for t in range(1, n):
            tau = task_vectors[t][name].to(torch.float64)
            tau_sq[t] += tau.square().sum()
            acc = acc + (project(tau, acc, alpha) if name in matrices and tau.dim() == 2 else tau)
            sq[t] += acc.square().sum()
        sums[name] = acc
    avg = torch.cumsum(tau_sq.sqrt(), 0) / torch.arange(1, n + 1, dtype=torch.float64)  # mean ‖τ_i‖, i ≤ t
    lambdas = [float(sq[t].sqrt() / avg[t]) if avg[t] > 0 else 1.0 for t in range(n)]
    scale = 1.0 / lambdas[-1] if lambdas[-1] > 0 else 0.0
    return {k: v.mul_(scale) for k, v in sums.items()}, lambdas


class TaskVector(Mapping[str, torch.Tensor]):
    """τ = θ − θ0 of two state dicts, one tensor at a time in float64 (nothing is held)."""

    def __init__(self, state: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor]):
        self.state, self.base = state, base

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.state[name].double() - self.base[name].double()

    def __iter__(self) -> Iterator[str]:
        return iter(self.base)

    def __len__(self) -> int:
        return len(self.base)


class OPCMParams(Frozen):
    #: share of the earlier merged vector's singular-value mass whose leading directions the new task vector is
    #: kept out of (FusionBench's default 0.5)
    alpha: float = Field(0.5, ge=0, le=1)


@register_fusion("opcm")
class OPCM(ModelFusion):
    """Orthogonal-projection continual merging: each task vector, in arrival order, projected off the earlier merged
    vector's principal subspace per linear weight and the sum rescaled to the mean task-vector norm."""

    Params = OPCMParams
    data_split = None  # reads the checkpoints only

    def check(self, backbone: nn.Module, tasks: Sequence[TaskConfig]) -> None:
        if not linear_weights(backbone):
            raise BenchError(f"fusion 'opcm' projects linear weight matrices, but the {type(backbone).__name__} "
                             "backbone has no nn.Linear; use fusion=task_arithmetic (OPCM without projections "
                             "would be its sum, rescaled)")

    def fuse_model(self, job: FusionJob) -> FusionResult:
        matrices = linear_weights(job.stages.ctx.template)
        base, names = job.base_state(), job.fused_names
        taus = [TaskVector(s, base) for s in job.task_states()]
        merged, lambdas = opcm_merge(taus, names, matrices, self.params.alpha)
        fused = {k: v.add_(base[k].double()) for k, v in merged.items()}
        projected = sorted(k for k in job.fused_names if k in matrices)
        return FusionResult(fused, {"lambdas": lambdas, "order": job.tasks, "projected_tensors": len(projected)})
