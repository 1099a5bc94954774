"""DARE (Yu et al. 2024): drop each task-vector entry at random and rescale the rest, reproducibly per chunk.

:class:`DareMixin` is the preprocessing that ``task_arithmetic`` (:mod:`bench.fusion.arithmetic`) and the TIES family
(:mod:`bench.fusion.ties`) apply to each τ_i = θ_i − θ0 when their ``dare`` parameter is above 0.
"""

from __future__ import annotations

import zlib
from typing import Any

import torch

from bench.fusion.base import TensorSource, chunk_ranges, work_dtype
from bench.fusion.magnitude import Convention


def hash_seed(seed: int, i: int, name: str, offset: int) -> int:
    """The seed of task ``i``'s DARE mask on the chunk of tensor ``name`` starting at flat ``offset``."""
    return zlib.crc32(f"{seed}:{i}:{name}:{offset}".encode())


#: mergekit's ``rescaled_masked_tensor``: below this L1 norm (before or after the drop) it does not rescale
L1_EPS = 1e-7


class DareMixin:
    """DARE (Yu et al. 2024) preprocessing of each τ_i: drop entries at random with probability p, rescale the rest.

    **Mask seed.** The mask of the chunk of tensor ``name`` that starts at flat ``offset`` comes from a fresh
    ``torch.Generator`` seeded with crc32(f"{seed}:{i}:{name}:{offset}") (:func:`hash_seed`), i the task index. So
    the same params give the same masks in every pass (TIES's threshold pass and its merge passes), in every run,
    whatever order tensors are visited in. A tensor of at most :data:`bench.fusion.base.CHUNK` entries is one chunk,
    offset 0: its mask is one draw from seed hash_seed(seed, i, name, 0), which the fixture script feeds to the
    libraries' global generator to compare masks exactly.

    **Draw and rescale** (``convention``; task_arithmetic always uses ``paper``):

    * ``paper``: keep where U ≥ p, U = ``torch.rand`` (uniform [0, 1)); τ̃ = keep·τ / (1 − p);
    * ``fusionbench``: keep where U > p (FusionBench's ``param_random_drop_``: ``rand_like(param) > p``), τ̃ = keep·τ
      / (1 − p);
    * ``mergekit``: keep = ``torch.bernoulli(full(1 − p))`` in float32 (mergekit's density = 1 − p), then the kept
      entries are rescaled so that each tensor keeps its L1 norm: τ̃ = keep·τ · ‖τ‖₁ / ‖keep·τ‖₁ (mergekit 0.1.5's
      ``rescale=True``, ``RescaleNorm.l1``; no rescale when either norm is below 1e-7). That is ≈ 1/(1 − p), not
      equal to it.
    """

    params: Any
    _l1_name: str | None = None
    _l1: list[float]

    def dare_convention(self) -> Convention:
        return getattr(self.params, "convention", "paper")

    def dropped(self, i: int, name: str, theta: torch.Tensor, base: torch.Tensor, offset: int) -> torch.Tensor:
        """τ_i on one chunk after the drop and the 1/(1 − p) rescale (mergekit: before its per-tensor L1 rescale)."""
        tau = theta.to(work_dtype(theta)) - base.to(work_dtype(theta))
        p = self.params.dare
        if p <= 0:
            return tau
        g = torch.Generator().manual_seed(hash_seed(self.params.seed, i, name, offset))
        conv = self.dare_convention()
        if conv == "mergekit":
            return tau.mul_(torch.bernoulli(torch.full(tau.shape, 1 - p, dtype=torch.float32), generator=g))
        u = torch.rand(tau.shape, generator=g)
        return tau.mul_(u > p if conv == "fusionbench" else u >= p).div_(1 - p)

    def task_vector(self, i: int, name: str, theta: torch.Tensor, base: torch.Tensor, offset: int) -> torch.Tensor:
        tau = self.dropped(i, name, theta, base, offset)
        if self.params.dare > 0 and self.dare_convention() == "mergekit":
            if self._l1_name != name:
                raise RuntimeError(f"DARE with convention='mergekit' rescales by the L1 norm of the whole tensor "
                                   f"{name!r}: call begin_tensor first (fuse_files does)")
            tau.mul_(self._l1[i])
        return tau

    def begin_dare(self, name: str, base: TensorSource, tasks: list[TensorSource]) -> None:
        """mergekit's per-tensor L1 rescale factors ‖τ_i‖₁ / ‖keep·τ_i‖₁, one streamed pass per task."""
        if self.params.dare <= 0 or self.dare_convention() != "mergekit":
            return
        self._l1 = []
        for i, src in enumerate(tasks):
            before = after = 0.0
            for s, e in chunk_ranges(base.numel(name)):
                th, b = src.flat(name, s, e), base.flat(name, s, e)
                before += float((th.to(work_dtype(th)) - b.to(work_dtype(th))).abs().sum())
                after += float(self.dropped(i, name, th, b, s).abs().sum())
            self._l1.append(1.0 if before < L1_EPS or after < L1_EPS else before / after)
        self._l1_name = name
