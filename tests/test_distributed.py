"""A cell on several processes (``procs=N``, bench.distributed): the same steps on 2 gloo processes give the update
of one process on the same global batch, for loss-level and gradient-level balancers, single- and multi-input.

The trainers here are the engine's own (``Trainer.step``) on a small MLP and random data; two processes are spawned
once and train every case in turn, then the parent compares their parameters with its own single-process run."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from bench import distributed
from bench.backbones.simple import MLP
from bench.config import TaskConfig, TrainConfig
from bench.engine import Trainer
from bench.model import MultiTaskModel
from bench.weighting import build_weighting
from benchmarks.test_engine_speed import _data

pytestmark = pytest.mark.slow  # it starts processes

DIM, HIDDEN, BATCH, STEPS = 12, 24, 16, 10
#: the seven balancers the equality is asserted for, and the path each gradient-level one takes
CASES = [(w, single, params, "fp32") for w in ("equal", "uncertainty", "gradnorm", "famo")
         for single in (True, False) for params in ({},)] + [
    (w, single, params, "fp32") for w in ("mgda", "pcgrad", "nash_mtl") for single in (True, False)
    for params in ({"via": "features"} if single else {"via": "params"},)] + [
    ("pcgrad", True, {"via": "params"}, "fp32"),
    # bf16 autocast on the same path (the Jacobian of the bf16 forward's losses, aggregated in fp32)
    ("equal", True, {}, "bf16"), ("mgda", True, {"via": "features"}, "bf16"), ("pcgrad", False, {"via": "params"}, "bf16")]
#: float32 sums in another order (a batch summed in two halves): the tolerance on parameters after STEPS steps (AdamW).
#: bf16 rounds each half's activations on its own, so its gradients differ at bf16's precision: those cases train with
#: SGD, since Adam's normalised step turns the sign of a near-zero gradient into a full step
TOL = {"fp32": 1e-6, "bf16": 2e-3}


def _tasks() -> list[TaskConfig]:
    return [TaskConfig(name=f"t{i}", input="vector", target="classification", num_classes=4) for i in range(3)]


def _train(weighting: str, single_input: bool, params: dict, precision: str = "fp32") -> np.ndarray:
    """STEPS steps of the engine's trainer; the model's parameters and the balancer's weights, flattened."""
    tasks = _tasks()
    torch.manual_seed(0)
    data, pre = _data(tasks, single_input, dim=DIM, n_train=96)
    model = MultiTaskModel(MLP(DIM, HIDDEN, 2), tasks)
    cfg = TrainConfig(epochs=1, batch_size=BATCH, lr=1e-2, grad_clip=1.0, sampling="all", log_every=10**9,
                      precision=precision, optimizer="adamw" if precision == "fp32" else "sgd")
    w = build_weighting(weighting, tasks, params or None)
    tr = Trainer(model, tasks, data, w, cfg, 0, pre.collate, single_input)
    tr.prepare()
    try:
        for _ in range(STEPS):
            tr.step()
    finally:
        tr.close()
    weights = np.array(list(w.current().values()), dtype=np.float64)
    flat = torch.cat([p.detach().reshape(-1).double() for p in model.parameters()]).numpy()
    return np.concatenate([flat, np.nan_to_num(weights, nan=0.0)])


def _rank(rank: int, size: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    distributed.join(threads=1)
    try:
        np.save(f"{out}/rank{rank}.npy", np.stack([_train(*case) for case in CASES]))
    finally:
        distributed.leave()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> tuple[np.ndarray, np.ndarray]:
    out = tmp_path_factory.mktemp("ranks")
    mp.start_processes(_rank, args=(2, _free_port(), str(out)), nprocs=2, join=True, start_method="spawn")
    return np.load(out / "rank0.npy"), np.load(out / "rank1.npy")


@pytest.mark.parametrize("i", range(len(CASES)), ids=[f"{w}-{'single' if s else 'multi'}{'-' + p['via'] if p else ''}-{x}"
                                                      for w, s, p, x in CASES])
def test_two_processes_give_the_one_process_update(two_ranks, i):
    """procs=2 on gloo == procs=1 on the same global batch, to float32 summation order; both ranks hold the same
    parameters bit for bit (they apply one summed update)."""
    torch.set_num_threads(1)
    one = _train(*CASES[i])
    r0, r1 = two_ranks[0][i], two_ranks[1][i]
    assert np.array_equal(r0, r1), "the two ranks diverged"
    err = np.abs(r0 - one).max()
    tol = TOL[CASES[i][3]]
    assert err <= tol * max(1.0, np.abs(one).max()), f"procs=2 differs from procs=1 by {err:.3g}"
    # and the steps moved the parameters far more than that (the equality is not that of an untrained model)
    torch.manual_seed(0)
    init = torch.cat([p.detach().reshape(-1).double() for p in MultiTaskModel(MLP(DIM, HIDDEN, 2), _tasks())
                      .parameters()]).numpy()
    moved = np.abs(one[:len(init)] - init).max()
    print(f"{CASES[i]}: procs=2 vs 1 max |Δθ| {err:.2e}, steps moved θ by {moved:.2e}")
    assert moved > 10 * err
