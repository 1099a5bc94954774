"""The fusion methods: ``mean``, ``weighted``, ``task_arithmetic``, ``ties``, ``dare_ties`` and ``breadcrumbs``.

All of them see one tensor name at a time (see :mod:`bench.fusion.base`) and loop over the task tensors one by one,
so their working memory is a few tensors of that name, whatever N is. τ_i = θ_i − θ0 is a task vector.

The TIES family follows one of three reference implementations (``convention``), each reproduced to float rounding
on the fixtures in ``tests/fixtures/fusion`` (made by ``scripts/make_fusion_fixtures.py`` with the real libraries);
docs/fusion.md tabulates what differs. Every "fraction kept" (TIES's ``k``, Breadcrumbs' ``density`` and ``gamma``)
is a fraction in (0, 1], as in FusionBench and mergekit, and keep counts are computed exactly: ⌊k·d⌋ reads k as
the decimal it prints as (k = 0.28, d = 86,000,000 gives 24,080,000, not one more or less).

Example:
    >>> import torch
    >>> from bench.fusion.base import build_fusion
    >>> a, b, base = torch.tensor([1.0, 3.0]), torch.tensor([3.0, 5.0]), torch.zeros(2)
    >>> build_fusion("mean", {}, n=2).fuse("w", base, [a, b]).tolist()
    [2.0, 4.0]
    >>> build_fusion("weighted", {"weights": [3, 1]}, n=2).fuse("w", base, [a, b]).tolist()  # w = [.75, .25]
    [1.5, 3.5]
    >>> build_fusion("task_arithmetic", {"lam": 0.5}, n=2).fuse("w", base, [a, b]).tolist()
    [2.0, 4.0]

Methods return float64 (see :func:`bench.fusion.base.work_dtype`); :func:`fuse_files` casts back to the input dtype.
"""

# importing the family modules registers their methods, in this order (``bench list`` shows it)
from bench.fusion.arithmetic import Mean, TaskArithmetic, TaskArithmeticParams, Weighted, WeightedParams
from bench.fusion.breadcrumbs import Breadcrumbs, BreadcrumbsParams
from bench.fusion.dare import L1_EPS, DareMixin, hash_seed
from bench.fusion.magnitude import (
    Convention,
    Cut,
    bottom_cut,
    check_fraction,
    floor_times,
    keep_count,
    kth_largest,
    kth_largest_stats,
    top_cut,
)
from bench.fusion.ties import DareTies, DareTiesParams, InMemory, Ties, TiesParams, disjoint_merge

__all__ = ["L1_EPS", "Breadcrumbs", "BreadcrumbsParams", "Convention", "Cut", "DareMixin", "DareTies",
           "DareTiesParams", "InMemory", "Mean", "TaskArithmetic", "TaskArithmeticParams", "Ties", "TiesParams",
           "Weighted", "WeightedParams", "bottom_cut", "check_fraction", "disjoint_merge", "floor_times", "hash_seed",
           "keep_count", "kth_largest", "kth_largest_stats", "top_cut"]
