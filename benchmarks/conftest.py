"""Helpers for paired benchmarks: two functions timed in alternation in the same run, compared by median ratio.

Absolute times depend on the machine; ratios measured side by side do not (much), so CI gates on ratios.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import pytest


def paired(fa: Callable[[], object], fb: Callable[[], object], rounds: int = 15,
           warmup: int = 3) -> tuple[float, float]:
    """Median seconds of ``fa`` and ``fb``, run alternately (drift and noise hit both alike)."""
    for _ in range(warmup):
        fa()
        fb()
    ta, tb = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fa()
        t1 = time.perf_counter()
        fb()
        t2 = time.perf_counter()
        ta.append(t1 - t0)
        tb.append(t2 - t1)
    return statistics.median(ta), statistics.median(tb)


def report(benchmark, name: str, ratio: float, target: str, **extra) -> None:
    benchmark.extra_info.update({"ratio": round(ratio, 4), "target": target, **extra})
    print(f"\n{name}: ratio {ratio:.3f} (target {target}) {extra}")


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.bench)
