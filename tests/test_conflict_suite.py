"""The ``synthetic_conflict`` suite: its generator makes the targets it says, and its tasks' gradients conflict.

Measured on the shared backbone (every parameter of the MLP trunk) with the suite's own data, backbone and equal-weight
joint training (the real ``Stages.joint``, 5 epochs), gradients of each task's loss on 16 batches of 64 training rows:

- after training, the designed pair (up, down) has a mean per-batch cosine of -0.43 at seed 0 (-0.25 to -0.47 over
  seeds 0-4; the most negative pair -0.30 to -0.47, the mean over the 10 pairs -0.06 to -0.09); in ``synthetic`` no
  pair goes below -0.02 (most negative: -0.02 to +0.00; the mean over pairs +0.05 to +0.09; clean/medium +0.30 to +0.40);
- at initialisation the heads are random, so cosines there say little in either suite (up-down: -0.07 to +0.28;
  synthetic's most negative pair: -0.02 to -0.21), but the gradient magnitudes already show the other problem:
  loud's (targets x5, MSE x25) is 4.3-5.8x the mean of the other four tasks'.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import checkpoint as C
from bench.data.synthetic import load_synthetic, task_directions
from bench.engine import seed_everything
from bench.errors import BenchError
from bench.model import MultiTaskModel, task_loss
from bench.plan import build_suite
from bench.stages import Checkpoint, Stages, SuiteContext
from bench.store import Store
from bench.suites import find_suite, read_suite_yaml, validate_suite

CONFLICT = "synthetic_conflict"


pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]


# -- the generator ---------------------------------------------------------------------------------------------


def _raw(name: str = CONFLICT) -> dict:
    return copy.deepcopy(read_suite_yaml(find_suite(name)))


def _generate(raw: dict) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    suite = validate_suite(raw, "test")
    split = load_synthetic(suite.data, list(suite.tasks), suite.split)["train"]
    return split.inputs.astype(np.float64), split.targets


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_the_plain_synthetic_suite_is_unchanged():
    """The new options are opt-in: ``synthetic``'s data (and so its committed baselines) are byte-for-byte as before
    (the fingerprint its records carry)."""
    from bench.data.base import load_suite_data

    assert load_suite_data(build_suite({"suite": "synthetic"})).fingerprint == "90b5cd50154055e5"


def test_without_noise_opposing_tasks_split_one_line_and_tilt_is_rotated():
    """Noise-free: up = relu(x·u) and down = relu(-x·u) (standardised) are each exactly linear in x where they are
    active, active on complementary halves of the data, and their fitted directions are exact negatives; tilt's
    direction has cosine -0.7 (mix) with side's."""
    raw = _raw()
    for g in raw["data"]["options"]["tasks"].values():
        g["noise"] = 0.0
    x, y = _generate(raw)
    design = np.c_[x, np.ones(len(x))]
    fitted, active = {}, {}
    for t, v in y.items():
        active[t] = v > v.min() + 1e-5  # the rectified half: everything above the floor
        coef, *_ = np.linalg.lstsq(design[active[t]], v[active[t]], rcond=None)
        resid = v[active[t]] - design[active[t]] @ coef
        assert np.abs(resid).max() < 1e-4 * v.std(), t  # exactly linear on its active half (float32 targets)
        assert 0.4 < active[t].mean() < 0.6, t  # relu of a symmetric signal: about half the rows
        fitted[t] = coef[:-1]
    assert not (active["up"] & active["down"]).any() and (active["up"] | active["down"]).all()
    assert _cos(fitted["down"], fitted["up"]) == pytest.approx(-1.0, abs=1e-5)
    assert _cos(fitted["tilt"], fitted["side"]) == pytest.approx(-0.7, abs=1e-5)
    assert abs(_cos(fitted["loud"], fitted["up"])) < 0.5  # loud reads its own direction
    assert y["loud"].std() == pytest.approx(5.0, rel=1e-5) and y["up"].std() == pytest.approx(1.0, rel=1e-5)


def test_with_noise_each_target_is_its_stated_function_of_the_inputs():
    """The suite as shipped: y = scale · (standardise(relu(x·b)) + 0.1 ε), with b from ``task_directions``."""
    raw = _raw()
    opts = raw["data"]["options"]
    x, y = _generate(raw)
    b = task_directions(opts["tasks"], opts["seed"], opts["dim"])
    assert _cos(b["down"], b["up"]) == pytest.approx(-1.0, abs=1e-12)
    assert _cos(b["tilt"], b["side"]) == pytest.approx(-0.7, abs=1e-12)
    for t, v in y.items():
        s = np.maximum(x @ b[t], 0.0)
        clean = (s - s.mean()) / s.std()
        scale = opts["tasks"][t].get("scale", 1.0)
        resid = v / scale - clean
        assert resid.std() == pytest.approx(0.1, rel=0.1), t  # what is left is the stated noise
        assert abs(resid.mean()) < 0.01, t


@pytest.mark.parametrize("edit, message", [
    (lambda g: g["down"].update(mix=1.5), "mix=1.5"),
    (lambda g: g["down"].pop("opposes"), "mix but no opposes"),
    (lambda g: g["up"].update(opposes="down"), "cycle"),
    (lambda g: g["down"].update(opposes="nowhere"), "no generator"),
    (lambda g: g["up"].update(link="cubic"), "link='cubic'"),
])
def test_bad_generator_options_are_named(edit, message):
    raw = _raw()
    gens = raw["data"]["options"]["tasks"]
    gens["down"]["mix"] = 1.0
    edit(gens)
    with pytest.raises(BenchError, match=message):
        _generate(raw)


def test_conflict_options_are_for_regression_and_the_latent_is_checked():
    raw = _raw("synthetic")
    raw["data"]["options"]["tasks"]["cls2"]["link"] = "relu"
    with pytest.raises(BenchError, match="apply to regression tasks"):
        _generate(raw)
    raw = _raw()
    raw["data"]["options"]["latent"] = "sigmoid"
    with pytest.raises(BenchError, match="latent='sigmoid'"):
        _generate(raw)


# -- gradient conflict -------------------------------------------------------------------------------------------


def _model(ctx: SuiteContext, ckpt: Checkpoint, seed: int) -> MultiTaskModel:
    """A model as the stages build it: the checkpoint's backbone, its heads (or seeded fresh ones at θ0)."""
    seed_everything(seed)
    model = MultiTaskModel(copy.deepcopy(ctx.template), ctx.tasks)
    model.backbone.load_state_dict(C.load_state(ckpt.path / C.BACKBONE_FILE))
    heads = C.load_state(ckpt.path / C.HEADS_FILE)
    if heads:
        model.heads.load_state_dict(heads)
    return model


def backbone_gradients(ctx: SuiteContext, model: MultiTaskModel, batches: int = 16, batch_size: int = 64,
                       ) -> tuple[dict[tuple[str, str], float], dict[str, float]]:
    """Per-task gradients of the task losses w.r.t. the backbone parameters some task's loss depends on (heads
    that read feature maps never reach a pooled head's layers), on ``batches`` training batches: the mean over
    batches of each pair's cosine, and of each task's gradient norm."""
    names = [t.name for t in ctx.tasks]
    train = ctx.encoded[names[0]]["train"]  # single input: every task reads the same rows
    rows = np.random.default_rng(0).permutation(len(train))
    params = list(model.backbone.parameters())
    cos: dict[tuple[str, str], list[float]] = {p: [] for p in itertools.combinations(names, 2)}
    norm: dict[str, list[float]] = {t: [] for t in names}
    for i in range(batches):
        idx = rows[i * batch_size:(i + 1) * batch_size]
        out = model(ctx.pre.collate(train.encoded, idx), names)
        g = {}
        for t in names:
            loss = task_loss(ctx.task(t), out[t], train.targets[t][torch.as_tensor(idx)])
            grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
            g[t] = torch.cat([q.reshape(-1) for q in grads if q is not None])
            norm[t].append(g[t].norm().item())
        for a, b in cos:
            cos[a, b].append(torch.nn.functional.cosine_similarity(g[a], g[b], dim=0).item())
    return {k: float(np.mean(v)) for k, v in cos.items()}, {k: float(np.mean(v)) for k, v in norm.items()}


def measure(name: str, tmp_path: Path, seed: int = 0) -> dict[str, tuple[dict, dict]]:
    """Cosines and norms at θ0 (seeded random heads) and after the suite's equal-weight joint training."""
    suite = build_suite({"suite": name})
    store = Store(tmp_path / "results", suite.name)
    ctx = SuiteContext.load(suite, store)
    stages = Stages(ctx, store, seed=seed)
    init = stages.init()
    at_init = backbone_gradients(ctx, _model(ctx, init, seed))
    joint = stages.joint(init, weighting="equal")
    assert joint.ckpt is not None
    return {"init": at_init, "trained": backbone_gradients(ctx, _model(ctx, joint.ckpt, seed))}


def test_task_gradients_conflict_in_synthetic_conflict_and_not_in_synthetic(tmp_path):
    conflict = measure(CONFLICT, tmp_path / "c")
    plain = measure("synthetic", tmp_path / "p")
    cos_c, _ = conflict["trained"]
    cos_p, _ = plain["trained"]
    # the designed conflict: up = relu(x·u) and down = relu(-x·u) pull the trunk's units in opposite directions
    assert cos_c["up", "down"] < -0.2, cos_c
    assert min(cos_c.values()) < -0.2 and min(cos_p.values()) > -0.1, (cos_c, cos_p)
    assert min(cos_p.values()) - min(cos_c.values()) > 0.25, (cos_c, cos_p)
    assert np.mean(list(cos_c.values())) < 0 < np.mean(list(cos_p.values())), (cos_c, cos_p)
    # at θ0: loud's gradient (targets x5) outweighs every other task's, so an equal-weight sum follows loud
    _, norm0 = conflict["init"]
    others = [v for t, v in norm0.items() if t != "loud"]
    assert norm0["loud"] > 3 * np.mean(others), norm0
