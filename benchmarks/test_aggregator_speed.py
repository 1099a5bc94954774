"""Every registered balancer against ``equal`` through the engine's balancer seam: step time and peak memory of a
step, T = 2, 4, 8 tasks, single-input (one batch, every head; gradient-level methods take the Jacobian w.r.t. the
shared features, ``via=features``) and multi-input (a batch per task, ``sampling=all``; ``via=params``: for the
aggregators whose update is a Gramian weighting, the T × T Gramian summed module by module and one backward of
Σ w_i L_i, bench/weighting/gramian.py; for GradDrop the Jacobian over the shared parameters, task by task).
Also ``equal`` through the new seam against the step as it was before the seam (``OldStepTrainer``, kept verbatim in
tests/test_balancer_seam.py).

How it measures (docs/performance.md, "Balancers vs equal"):

* time: all trainers of one (input kind, T) are built on the same data; in each round every method runs one step
  right next to one step of ``equal`` (the pair's order flips every round, the methods' order is shuffled), and a
  method's ratio is the median over the rounds of its step time over the ``equal`` step it was paired with. The
  median of paired ratios follows the load of a shared machine better than a ratio of two medians taken apart.
* memory: one more step of each trainer under ``torch.profiler`` (``profile_memory=True``): the peak, during the
  step, of the bytes of CPU tensors allocated in that step and not yet freed (the profiler's allocation and free
  events, matched by address). Deterministic: the same step allocates the same tensors (three repeats read the same
  bytes). What the step frees of older tensors (the previous ``.grad`` that ``zero_grad`` drops) is not credited,
  so this is the step's new working set: activations, Jacobian, gradients, solver tensors; memory held by
  numpy/cvxpy (outside torch's allocator) is not seen.
* ``agg ms``: median time of one call of the torchjd aggregator's Gramian weighting (its solver; the aggregator
  itself for GradDrop), or of the scalarizer, inside the step, from forward hooks, so a table row shows at once
  whether the solver or the backward passes make a method slow.

Targets (CI fails above 1.15 × target): every method ≤ T + 0.5 × equal (the cost of T backward passes); on the
features path (single-input, gradient-level), ≤ 2 × equal at T = 4; peak memory of the Gramian aggregators
multi-input (``via=params``) ≤ 2 × equal at T = 8; ``equal`` through the seam ≥ 0.99 × the old step's throughput
(fails below 0.90, as the harness benchmark). Known, profiled misses (``EXPECTED_MISS``) are
not dropped: their step without the aggregator call is asserted on the same target, and the whole step is reported
xfail with the reason when it misses the target's CI margin.
"""

from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass, field

import pytest
import torch
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile, record_function

from bench.backbones.simple import MLP
from bench.config import TaskConfig, TrainConfig
from bench.engine import Trainer
from bench.model import MultiTaskModel
from bench.weighting import WEIGHTINGS, build_weighting
from bench.weighting.jd import JDAggregator
from benchmarks.conftest import report
from benchmarks.test_engine_speed import _data as engine_speed_data
from benchmarks.test_engine_speed import _tasks, _timed
from tests.test_balancer_seam import OldStepTrainer

# one intra-op thread, set for this module's tests only (see _module below): on a shared 2-core machine two OpenMP
# threads make every parallel op wait for a descheduled thread (steps of ~480 ms quantised at the 4 ms scheduler tick
# were seen), which buries the per-step overheads this file compares
THREADS = 1
# a tiny MLP suite (0.6 M parameters; equal's step 9-45 ms on one thread): the worst case for a method's fixed
# per-step overhead
DIM, HIDDEN, DEPTH, BATCH, N = 128, 512, 3, 64, 1024
TS = (2, 4, 8)
KINDS = ("single", "multi")
ROUNDS = {2: 9, 4: 9, 8: 5}  # paired rounds per method; fewer at T = 8, where a round costs most
MARGIN = 1.15  # CI fails above MARGIN × target
SEAM_TS = (2, 8)  # the seam's per-task bookkeeping is largest at T = 8
SEAM_ROUNDS = 51

# every registered balancer of the package (a toy registered by a doctest or a test is not one)
METHODS = [n for n in WEIGHTINGS.names() if WEIGHTINGS.get(n).__module__.startswith("bench.weighting.")]

_GRADDROP = "GradDrop masks the T x P Jacobian coordinate by coordinate (a random draw per coordinate): 14-16 ms at T=2"
#: (method, T, kind) -> why its step misses the time target (profiles in docs/performance.md). Such a case is
#: asserted on a separate target instead, its step without the aggregator call (the solver) against the same T + 0.5
#: or 2, and is reported xfail with the reason when the whole step misses the target's margin.
EXPECTED_MISS: dict[tuple[str, int, str], str] = {
    ("graddrop", 2, "multi"): _GRADDROP,
}

def _data(tasks: list[TaskConfig], single_input: bool):
    return engine_speed_data(tasks, single_input, dim=DIM, n_train=N)


def _trainer(tasks, name: str, kind: str, data, cls: type[Trainer] = Trainer) -> Trainer:
    (data, pre), single = data, kind == "single"
    torch.manual_seed(0)
    model = MultiTaskModel(MLP(DIM, HIDDEN, DEPTH), tasks)
    cfg = TrainConfig(epochs=1, batch_size=BATCH, lr=1e-3, grad_clip=1.0, sampling="all", log_every=10**9)
    params = {"weights": [1.0] * len(tasks)} if name == "static" else None
    tr = cls(model, tasks, data, build_weighting(name, tasks, params), cfg, 0, pre.collate, single)
    tr.prepare()
    return tr


def _hook_solver(tr: Trainer) -> list[float]:
    """Seconds of every call of the balancer's torchjd aggregator / scalarizer (empty for the others)."""
    calls: list[float] = []
    mod = getattr(tr.w, "agg", None)
    # the Gramian path calls the aggregator's Gramian weighting (the solver) without the aggregator
    mod = getattr(mod, "gramian_weighting", mod)
    mod = getattr(tr.w, "scalarizer", None) if mod is None else mod
    if mod is not None:
        t0 = [0.0]
        mod.register_forward_pre_hook(lambda m, a: t0.__setitem__(0, time.perf_counter()))
        mod.register_forward_hook(lambda m, a, o: calls.append(time.perf_counter() - t0[0]))
    return calls


def _peak_bytes(trainers: dict[str, Trainer]) -> dict[str, int]:
    """Peak new CPU-tensor bytes of one step of each trainer (see the module docstring), one profiler session."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for name, tr in trainers.items():
            with record_function(f"step:{name}"):
                tr.step()
    out = {}
    for root in prof.profiler.kineto_results.experimental_event_tree():
        if not root.name.startswith("step:"):
            continue
        events, stack = [], [root]
        while stack:
            e = stack.pop()
            if e.tag == _EventType.Allocation:
                f = e.extra_fields
                events.append((e.start_time_ns, f.alloc_size > 0, f.ptr, f.alloc_size))
            stack.extend(e.children)
        # only what this step allocated counts, and a free only of such a block: the allocator's own running total
        # also drops on frees of older blocks whose address it saw in an earlier profiling session
        live: dict[int, int] = {}
        cur = peak = 0
        for _, _, ptr, size in sorted(events):  # at equal times, frees (False) before allocations
            if size > 0:
                live[ptr] = size
                cur += size
                peak = max(peak, cur)
            elif ptr in live:
                cur -= live.pop(ptr)
        out[root.name[5:]] = peak
    return out


@dataclass
class Row:
    ratio: float  # median over rounds of (method step / paired equal step)
    ms: float  # median step time of the method
    equal_ms: float  # median of the equal steps it was paired with
    agg_ms: float | None  # median aggregator / scalarizer call
    mem_ratio: float = float("nan")
    mem_mb: float = float("nan")


@dataclass
class Measured:
    kind: str
    T: int
    trainers: dict[str, Trainer]
    rows: dict[str, Row] = field(default_factory=dict)
    seconds: float = 0.0


_CURRENT: dict[tuple[str, int], Measured] = {}
RESULTS: dict[tuple[str, int], Measured] = {}  # kept (rows only) for the summary table


def _close_current() -> None:
    for m in _CURRENT.values():
        for tr in m.trainers.values():
            tr.close()
        m.trainers.clear()
    _CURRENT.clear()


def measure(kind: str, T: int) -> Measured:
    """Time and memory of every method at (kind, T), measured once and kept while that config's tests run."""
    key = (kind, T)
    if key in _CURRENT:
        return _CURRENT[key]
    _close_current()
    t_start = time.perf_counter()
    tasks = _tasks(T)
    data = _data(tasks, kind == "single")
    ref = _trainer(tasks, "equal", kind, data)
    trainers = {name: _trainer(tasks, name, kind, data) for name in METHODS}  # "equal" here: the A/A pair
    solver_calls = {name: _hook_solver(tr) for name, tr in trainers.items()}
    for tr in (ref, *trainers.values()):  # warm-up: first solve, allocator, cvxpy's first problem compilation
        tr.step()
    for calls in solver_calls.values():
        calls.clear()
    t_m: dict[str, list[float]] = {n: [] for n in trainers}
    t_r: dict[str, list[float]] = {n: [] for n in trainers}
    order = list(trainers)
    rng = random.Random(T)
    for r in range(ROUNDS[T]):
        rng.shuffle(order)
        for name in order:
            if r % 2 == 0:
                a, b = _timed(ref.step), _timed(trainers[name].step)
            else:
                b, a = _timed(trainers[name].step), _timed(ref.step)
            t_r[name].append(a)
            t_m[name].append(b)
    m = Measured(kind, T, trainers)
    for name in trainers:
        calls = solver_calls[name]
        m.rows[name] = Row(ratio=statistics.median(x / y for x, y in zip(t_m[name], t_r[name])),
                           ms=1000 * statistics.median(t_m[name]), equal_ms=1000 * statistics.median(t_r[name]),
                           agg_ms=1000 * statistics.median(calls) if calls else None)
    peaks = _peak_bytes({"__ref__": ref, **trainers})
    for name, row in m.rows.items():
        row.mem_mb = peaks[name] / 2**20
        row.mem_ratio = peaks[name] / peaks["__ref__"]
    ref.close()
    m.seconds = time.perf_counter() - t_start
    _CURRENT[key] = m
    RESULTS[key] = Measured(kind, T, {}, m.rows, m.seconds)
    _print_config(m, peaks["__ref__"])
    return m


def _print_config(m: Measured, ref_bytes: int) -> None:
    print(f"\nratio table {m.kind}-input T={m.T} (measured in {m.seconds:.1f} s; equal step "
          f"{statistics.median(r.equal_ms for r in m.rows.values()):.2f} ms, its peak {ref_bytes / 2**20:.2f} MiB)")
    print(f"ratio table {'method':<12} {'time':>6} {'ms':>8} {'agg ms':>7} {'memory':>7} {'MiB':>7}")
    for name, r in sorted(m.rows.items(), key=lambda kv: kv[1].ratio):
        agg = f"{r.agg_ms:7.2f}" if r.agg_ms is not None else f"{'-':>7}"
        print(f"ratio table {name:<12} {r.ratio:6.2f} {r.ms:8.2f} {agg} {r.mem_ratio:7.2f} {r.mem_mb:7.2f}")


def _summary() -> None:
    if not RESULTS:
        return
    keys = [(k, T) for k in KINDS for T in TS if (k, T) in RESULTS]
    head = " ".join(f"{k[0]}{T:<2} time/mem".rjust(16) for k, T in keys)
    print(f"\nratio summary (s: single-input, m: multi-input; step time and peak memory over equal)\n"
          f"ratio summary {'method':<12} {head}")
    for name in METHODS:
        cells = []
        for key in keys:
            r = RESULTS[key].rows.get(name)
            cells.append(f"{r.ratio:6.2f}/{r.mem_ratio:<6.2f}".rjust(16) if r else f"{'-':>16}")
        print(f"ratio summary {name:<12} {' '.join(cells)}")
    print("ratio summary measured in " + ", ".join(f"{k}-T{T} {RESULTS[(k, T)].seconds:.0f} s" for k, T in keys))


@pytest.fixture(scope="module", autouse=True)
def _module():
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(threads)
    _close_current()
    _summary()


#: the peak-memory target of a Gramian aggregator's via=params step (multi-input) at T = 8, over equal's
MEMORY_TARGET = 2.0


def _gramian(name: str) -> bool:
    """The balancer's update is a weighting of the Gramian: via=params sums the Gramian, never the Jacobian."""
    cls = WEIGHTINGS.get(name)
    return issubclass(cls, JDAggregator) and hasattr(build_weighting(name, _tasks(2)).agg, "gramian_weighting")


def _target(name: str, T: int, kind: str) -> tuple[float, str]:
    gramian = kind == "single" and issubclass(WEIGHTINGS.get(name), JDAggregator)
    if gramian and T == 4:
        return 2.0, "<= 2 (features path, T=4)"
    return T + 0.5, f"<= T+0.5 = {T + 0.5}"


@pytest.mark.parametrize("kind,T,name", [pytest.param(k, T, n, id=f"{n}-T{T}-{k}")
                                         for k in KINDS for T in TS for n in METHODS])
def test_step_vs_equal(benchmark, kind, T, name):
    """Step time of a balancer over equal's (paired, median), and its peak step memory over equal's."""
    m = measure(kind, T)
    row = m.rows[name]
    benchmark.pedantic(m.trainers[name].step, rounds=1, iterations=1)
    target, text = _target(name, T, kind)
    # the step without the aggregator / scalarizer call: what the seam, the Jacobian and the update cost
    rest = row.ratio - (row.agg_ms or 0.0) / row.equal_ms
    report(benchmark, f"{name}/equal T={T} {kind}-input", row.ratio, text, method_ms=round(row.ms, 2),
           equal_ms=round(row.equal_ms, 2), agg_ms=None if row.agg_ms is None else round(row.agg_ms, 2),
           without_agg=round(rest, 3), memory_ratio=round(row.mem_ratio, 3), memory_mb=round(row.mem_mb, 2))
    if kind == "multi" and T == 8 and _gramian(name):
        assert row.mem_ratio <= MARGIN * MEMORY_TARGET, (
            f"{name} via=params peak memory is {row.mem_ratio:.2f}x equal (target <= {MEMORY_TARGET})")
    why = EXPECTED_MISS.get((name, T, kind))
    if why is None:
        assert row.ratio <= MARGIN * target, f"{name} step is {row.ratio:.2f}x equal (target {text})"
        return
    assert rest <= MARGIN * target, f"{name} step without its aggregator is {rest:.2f}x equal (target {text})"
    if row.ratio > MARGIN * target:
        pytest.xfail(f"expected miss, {row.ratio:.2f}x equal (target {text}): {why}")


def paired_median(fa, fb, rounds: int, warmup: int = 3) -> tuple[float, float, float]:
    """(median of fa's time / fb's time over rounds run side by side (ABBA order), median fa, median fb). On this
    shared machine an A/A pair of old steps read 1.001–1.007 by this estimator and 0.995–1.023 by ``paired``'s
    ratio of minima, 81 rounds each."""
    for _ in range(warmup):
        fa()
        fb()
    ta, tb = [], []
    for r in range(rounds):
        if r % 2 == 0:
            ta.append(_timed(fa))
            tb.append(_timed(fb))
        else:
            tb.append(_timed(fb))
            ta.append(_timed(fa))
    return statistics.median(a / b for a, b in zip(ta, tb)), statistics.median(ta), statistics.median(tb)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("T", SEAM_TS)
def test_equal_seam_vs_old_step(benchmark, kind, T):
    """``equal`` through the balancer seam (Step, Balancer.backward) against the old step: throughput ≥ 0.99×."""
    tasks = _tasks(T)
    data = _data(tasks, kind == "single")
    old, new = _trainer(tasks, "equal", kind, data, OldStepTrainer), _trainer(tasks, "equal", kind, data)
    try:
        ratio, t_old, t_new = paired_median(old.step, new.step, rounds=SEAM_ROUNDS)
        benchmark.pedantic(new.step, rounds=3, iterations=1)
    finally:
        old.close()
        new.close()
    # ratio: old step time / new step time, i.e. the new step's throughput relative to the old one
    report(benchmark, f"equal seam/old step throughput T={T} {kind}-input", ratio, ">= 0.99",
           old_ms=round(1000 * t_old, 3), new_ms=round(1000 * t_new, 3))
    assert ratio >= 0.90, f"equal through the seam is {1 / ratio:.3f}x the old step"
