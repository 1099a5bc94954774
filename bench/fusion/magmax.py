"""MagMax: per entry, the task-vector value of largest magnitude (Marczak et al., ECCV 2024, "MagMax: Leveraging
Model Merging for Seamless Continual Learning"; FusionBench's ``magmax``).

θ = θ0 + λ τ_max with τ_max[j] = τ_{t*(j)}[j], t*(j) = argmax_t |τ_t[j]|. The task vectors are folded in the parts'
order (``merge_in``: arrival order) and a later one replaces the running choice when its magnitude is *at least* as
large (``>=``, as the authors' ``merge_max_abs`` and FusionBench do), so the order decides ties. Streams like task
arithmetic: one chunk of each task at a time. λ defaults to 0.5, the authors' released setting for independent
fine-tunes. The paper's continual recipe fine-tunes each task from the previous one; ``merge_in`` fine-tunes each from
θ0 (the paper's "independent" variant), which is what FusionBench's ``magmax`` merges too.

Example (the later task wins the tie in the first entry):
    >>> import torch
    >>> from bench.fusion.base import build_fusion
    >>> base, first, second = torch.zeros(3), torch.tensor([2.0, -3.0, 1.0]), torch.tensor([-2.0, 1.0, 0.0])
    >>> build_fusion("magmax", {"lam": 1}, n=2).fuse("w", base, [first, second])
    tensor([-2., -3.,  1.], dtype=torch.float64)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bench.config import Frozen
from bench.fusion.base import FusionMethod, register_fusion, work_dtype


class MagMaxParams(Frozen):
    #: scaling λ of the selected task vector (the MagMax authors' release: 0.5 for independent fine-tunes)
    lam: float = 0.5


@register_fusion("magmax")
class MagMax(FusionMethod):
    """θ = θ0 + λ · (per entry, the task-vector value of largest magnitude; a later task wins ties)."""

    Params = MagMaxParams
    needs_base = True

    def fuse(self, name: str, base: torch.Tensor | None, tensors: Sequence[torch.Tensor],
             offset: int = 0) -> torch.Tensor:
        assert base is not None
        theta0 = base.to(work_dtype(base))
        best: torch.Tensor | None = None
        for t in tensors:
            tau = t.to(theta0.dtype) - theta0
            best = tau if best is None else torch.where(tau.abs() >= best.abs(), tau, best)
        assert best is not None
        return theta0 + self.params.lam * best
