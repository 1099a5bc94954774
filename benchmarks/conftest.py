"""Helpers for paired benchmarks: two functions timed in alternation in the same run, compared by their ratio.

Absolute times depend on the machine; ratios measured side by side do not (much), so CI gates on ratios.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest


def paired(fa: Callable[[], object], fb: Callable[[], object], rounds: int = 15,
           warmup: int = 3) -> tuple[float, float]:
    """Fastest seconds of ``fa`` and ``fb``, run alternately (drift hits both alike). The order flips every round
    (ABBA...), so whichever runs second, on warm caches or after the other's allocations, is not always the same one.

    The minimum, as ``timeit`` recommends: noise on a shared machine only ever adds time. On the 2-core CI machine an
    A/A pair of identical trainers read 0.90–1.01 by medians and 0.95–1.01 by minima (see ``test_noise_floor``)."""
    for _ in range(warmup):
        fa()
        fb()
    times: dict[int, list[float]] = {0: [], 1: []}
    for r in range(rounds):
        for which in ((0, 1) if r % 2 == 0 else (1, 0)):
            t0 = time.perf_counter()
            (fa, fb)[which]()
            times[which].append(time.perf_counter() - t0)
    return min(times[0]), min(times[1])


def report(benchmark, name: str, ratio: float, target: str, **extra) -> None:
    benchmark.extra_info.update({"ratio": round(ratio, 4), "target": target, **extra})
    print(f"\n{name}: ratio {ratio:.3f} (target {target}) {extra}")


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.bench)
