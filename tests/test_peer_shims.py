"""benchmarks/test_peer_speed.py's setup: the shims that let LibMTL 1.1.5 run change how it runs, not what it computes,
and every built-in balancer with a peer has its row."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import scipy.optimize
import torch

from bench.weighting import WEIGHTINGS
from benchmarks import test_peer_speed as P

pytestmark = pytest.mark.integration


def _step(label: str, kind: str, T: int):
    tasks = P._tasks(T)
    data, _ = P._data(tasks, kind == "single", dim=P.DIM, n_train=128)
    return P.LibMTLStep(tasks, data, kind == "single", P.BY_LABEL[label])


def test_cagrad_objective_for_any_t_is_libmtls_at_three_tasks(monkeypatch):
    """LibMTL's CAGrad runs only with 3 tasks; there, its weights with the shim equal its weights without it."""
    module = importlib.import_module("LibMTL.weighting.CAGrad")
    weights = {}
    for name, minimize in (("libmtl", scipy.optimize.minimize), ("shim", P._minimize_any_t)):
        monkeypatch.setattr(module, "minimize", minimize)
        torch.manual_seed(0)
        step = _step("cagrad", "single", 3)
        x, ys, ts = step.batches()[0]
        preds = step.model(x)
        losses = torch.stack([step.kinds[t].loss(preds[t], ys[t]) for t in ts])
        weights[name] = step.model.backward(losses, **step.args)
    np.testing.assert_allclose(weights["shim"], weights["libmtl"], atol=1e-8)
    assert weights["shim"].shape == (3,) and abs(weights["shim"].sum() - 1) < 1e-6


@pytest.mark.parametrize("label,kind", [("pcgrad", "single"), ("cagrad", "multi"), ("graddrop", "multi"),
                                        ("mgda", "single"), ("gradnorm", "single")])
def test_libmtl_step_trains_every_parameter(label, kind):
    """torch 2's zero_grad sets .grad to None, after which LibMTL's rep_grad=False methods failed: with the shim
    one step moves the backbone and every head (T = 4, where LibMTL's own CAGrad objective fails)."""
    step = _step(label, kind, 4)
    before = [p.detach().clone() for p in step.model.parameters()]
    step.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, step.model.parameters()))


def test_every_builtin_balancer_with_a_peer_is_compared():
    """A new balancer must be placed in the peer benchmark: compared with torchjd's or LibMTL's, or known to lack one."""
    builtin = {n for n in WEIGHTINGS.names() if WEIGHTINGS.get(n).__module__.startswith("bench.weighting.")}
    no_peer = {"static"}  # fixed weights: neither library has them
    assert {m.bench for m in P.METHODS} == builtin - no_peer
    assert all(m.torchjd is not None or m.libmtl is not None for m in P.METHODS)
