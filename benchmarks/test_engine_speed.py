"""The harness must not be the bottleneck: its training step vs a hand-written PyTorch loop, and the cost of the
learned weightings (uncertainty, GradNorm) relative to equal weighting for T = 2, 4, 8 tasks."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.backbones.simple import MLP, ArrayPreprocessor
from bench.config import TaskConfig, TrainConfig
from bench.encode import EncodedSplit
from bench.engine import Trainer
from bench.model import MultiTaskModel
from bench.weighting import build_weighting
from benchmarks.conftest import paired, report

torch.set_num_threads(2)
DIM, HIDDEN, DEPTH, BATCH, N = 256, 1024, 4, 128, 4096


def _data(tasks: list[TaskConfig], single_input: bool, seed: int = 0, dim: int = DIM, n_train: int = N):
    """Random ``dim``-dimensional inputs and labels: one shared split (single input) or one per task."""
    rng = np.random.default_rng(seed)
    pre = ArrayPreprocessor("bench")

    def split(n):
        x = rng.standard_normal((n, dim)).astype(np.float32)
        ys = {t.name: torch.as_tensor(rng.integers(0, t.num_classes, n)) for t in tasks}
        return EncodedSplit(pre.encode(x), ys, None)

    if single_input:
        shared = {"train": split(n_train), "validation": split(64)}
        return {t.name: shared for t in tasks}, pre
    return {t.name: {"train": split(n_train), "validation": split(64)} for t in tasks}, pre


def _tasks(T: int) -> list[TaskConfig]:
    return [TaskConfig(name=f"t{i}", input="vector", target="classification", num_classes=10) for i in range(T)]


def _trainer(tasks, weighting: str, single_input: bool, sampling: str = "all", seed: int = 0) -> Trainer:
    torch.manual_seed(seed)
    data, pre = _data(tasks, single_input)
    model = MultiTaskModel(MLP(DIM, HIDDEN, DEPTH), tasks)
    cfg = TrainConfig(epochs=1, batch_size=BATCH, lr=1e-3, grad_clip=1.0, sampling=sampling, log_every=10**9)
    tr = Trainer(model, tasks, data, build_weighting(weighting, tasks), cfg, seed, pre.collate, single_input)
    tr.prepare()
    return tr


def test_harness_step_vs_plain_loop(benchmark):
    """Same model, batch, optimiser and clipping; the plain loop indexes one tensor and calls the model directly."""
    tasks = _tasks(1)
    tr = _trainer(tasks, "equal", single_input=True)
    torch.manual_seed(0)
    model = MultiTaskModel(MLP(DIM, HIDDEN, DEPTH), tasks)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    x = torch.randn(N, DIM)
    y = torch.randint(0, 10, (N,))
    perm = torch.randperm(N)
    pos = [0]

    def plain():
        i = perm[pos[0]:pos[0] + BATCH]
        pos[0] = (pos[0] + BATCH) % (N - BATCH)
        loss = F.cross_entropy(model({"x": x[i]}, ["t0"])["t0"], y[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    t_plain, t_harness = paired(plain, tr.step, rounds=40)
    benchmark.pedantic(tr.step, rounds=20, iterations=1)
    ratio = t_plain / t_harness  # throughput of the harness relative to the plain loop
    report(benchmark, "harness/plain throughput", ratio, ">= 0.97", plain_ms=1000 * t_plain,
           harness_ms=1000 * t_harness)
    assert ratio >= 0.90, f"harness step is {1 / ratio:.2f}x the plain loop"


def test_noise_floor(benchmark):
    """Two identical equal-weighting trainers (A/A): how far from 1.0 a ratio strays on this machine by noise alone.
    Read the weighting ratios below against it."""
    tasks = _tasks(4)
    a, b = _trainer(tasks, "equal", True), _trainer(tasks, "equal", True)
    t_a, t_b = paired(a.step, b.step, rounds=30)
    benchmark.pedantic(b.step, rounds=5, iterations=1)
    ratio = t_b / t_a
    report(benchmark, "noise floor: equal/equal (A/A) T=4 single-input", ratio, "== 1 +- noise",
           a_ms=1000 * t_a, b_ms=1000 * t_b)
    assert 0.8 <= ratio <= 1.25, f"two identical trainers differ by {ratio:.2f}x: the machine is too noisy to benchmark"


@pytest.mark.parametrize("single_input", [True, False], ids=["single", "multi"])
@pytest.mark.parametrize("T", [2, 4, 8])
@pytest.mark.parametrize("weighting,target", [("uncertainty", 1.03), ("gradnorm", 1.25)])
def test_weighting_overhead(benchmark, weighting, target, T, single_input):
    """Step time of a learned weighting vs equal weighting, every task in every step (sampling=all)."""
    tasks = _tasks(T)
    eq = _trainer(tasks, "equal", single_input)
    other = _trainer(tasks, weighting, single_input)
    t_eq, t_w = paired(eq.step, other.step, rounds=30)
    benchmark.pedantic(other.step, rounds=10, iterations=1)
    ratio = t_w / t_eq
    report(benchmark, f"{weighting}/equal T={T} {'single' if single_input else 'multi'}-input", ratio,
           f"<= {target}", equal_ms=1000 * t_eq, weighting_ms=1000 * t_w)
    assert ratio <= target + 0.15, f"{weighting} step is {ratio:.2f}x equal"


@pytest.mark.parametrize("T", [2, 4, 8])
def test_uncertainty_overhead_by_component(benchmark, T):
    """What uncertainty weighting adds to a step, measured apart from the model, whose step-to-step noise on a shared
    CPU (see test_noise_floor) is larger than the overhead itself: combining T losses, back-propagating through the
    combination and updating the T log-variances, against equal weighting doing the same. Added to the measured
    equal step (single-input MLP), that is the step ratio uncertainty would have on a quiet machine."""
    tasks = _tasks(T)
    t_step = min(_timed(_trainer(tasks, "equal", True).step) for _ in range(20))

    def part(name: str):
        w = build_weighting(name, tasks)
        groups = w.param_groups(1e-3)
        opt = torch.optim.AdamW(groups) if groups else None  # equal has no parameters to update
        leaves = [torch.ones((), requires_grad=True) for _ in tasks]

        def run():
            w.combine({t.name: 2.0 * x for t, x in zip(tasks, leaves)}).backward()
            if opt is not None:
                opt.step()
                opt.zero_grad(set_to_none=True)

        return run

    t_eq, t_uw = paired(part("equal"), part("uncertainty"), rounds=300, warmup=20)
    benchmark.pedantic(part("uncertainty"), rounds=50, iterations=1)
    ratio = (t_step + t_uw - t_eq) / t_step
    report(benchmark, f"uncertainty/equal T={T} by component", ratio, "<= 1.03", equal_step_ms=1000 * t_step,
           added_ms=1000 * (t_uw - t_eq))
    assert ratio <= 1.03, f"uncertainty adds {1000 * (t_uw - t_eq):.2f} ms to a {1000 * t_step:.1f} ms step"


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
