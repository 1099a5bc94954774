"""Contract tests over every registry entry (issue 25, item 6), in the manner of torchjd's property testers.

One parametrised test per property, over every entry of the weighting, fusion and strategy registries as they stand
when the tests are collected (the built-ins and whatever the strategy folders register), so that a plug-in added
tomorrow is covered without writing a test. Where an entry's documented contract legitimately differs from the
general property, the difference is encoded in one table below with its reason (never a silent skip); a plug-in
that needs parameters to be built at all (``static``'s weights) names them in :data:`REQUIRED`.

* every weighting/aggregator, on the tiny real model of ``tests/test_faults.py`` (an MLP trunk, one classification
  and one regression head, a multi-input suite, the real :class:`~bench.engine.Trainer`): one step fills finite
  gradients for every shared parameter and every head; it reports a weight for every task; its state survives a
  ``state_dict`` round trip through the resume file's format and an engine resume (2 epochs, stop, resume, 1 more
  == 3 uninterrupted); a task absent from a step (where the seam allows it) produces no NaN;
* every fusion method (streaming ones on the files of ``tests/test_fusion.py``, model-based ones as a real ``fuse``
  stage on the fine-tunes of ``tests/test_learned_fusion.py``): one input gives θ1, N equal inputs give θ, every
  tensor keeps its dtype, integer tensors come from θ0 and float buffers are the mean of the task models;
* every strategy: the rows of a tiny synthetic run are the rows it declares; a bad value of any of its parameters
  is a one-line error naming the parameter.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from bench import checkpoint as C
from bench import safestate
from bench.checkpoint import load_state
from bench.fusion import FUSIONS, ModelFusion, build_fusion, fuse_files
from bench.plan import build_suite
from bench.stages import Stages, SuiteContext
from bench.store import Store
from bench.strategy import ScheduleStrategy, discover
from bench.weighting import WEIGHTINGS, build_weighting
from tests.conftest import Stop, stop_at

from .conftest import FAST
from .test_faults import _fit
from .test_faults import _trainer as faults_trainer
from .test_fusion import family, write  # noqa: F401 (a fixture)
from .test_learned_fusion import _copy_ckpt, tuned  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]

STRATEGIES = discover()  # imports the strategy folders, which may register weightings and fusion methods too
WEIGHTING_NAMES = WEIGHTINGS.names()
FUSION_NAMES = FUSIONS.names()
STRATEGY_NAMES = STRATEGIES.names()


# =============================================================================================== weightings

#: parameters a balancer cannot be built without (the task count of the test model is 2)
REQUIRED = {"static": {"weights": [1.0, 2.0]}}

#: balancers whose update is not a weighted sum of the task gradients: ``current()`` names every task with NaN
#: (docs/weightings.md, "What is recorded": their trajectories are empty and the plot skips them)
NOT_WEIGHTED = {
    "graddrop": "per coordinate, keeps one sign: not a weighted sum, no weights recorded (docs/weightings.md)",
    "config": "equal cosine with every task: not a weighted sum, no weights recorded (docs/weightings.md)",
}


@pytest.fixture
def with_required(monkeypatch):
    """The test helpers build balancers by name alone; give the ones of :data:`REQUIRED` their parameters."""
    import bench.weighting

    real = bench.weighting.build_weighting
    monkeypatch.setattr(bench.weighting, "build_weighting",
                        lambda name, tasks, params=None: real(name, tasks, params or REQUIRED.get(name)))


def _trainer(tmp_path: Path, name: str, sampling: str = "all", **kw):
    tr = faults_trainer(tmp_path, name, **kw)
    tr.cfg = tr.cfg.model_copy(update={"sampling": sampling})
    return tr


def _finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())


@pytest.mark.parametrize("name", WEIGHTING_NAMES)
def test_one_step_fills_finite_gradients_of_every_shared_parameter_and_every_head(name, tmp_path, with_required):
    tr = _trainer(tmp_path / "w", name, epochs=1)
    tr.prepare()
    try:
        tr.step()  # a step with every task's batch (sampling=all)
        missing = [i for i, p in enumerate(tr.shared) if p.grad is None]
        assert not missing, f"{name}: no gradient for shared parameters {missing}"
        assert all(_finite(p.grad) for p in tr.shared), f"{name}: a non-finite shared gradient"
        assert sorted(tr.heads) == ["c", "r"]
        for t, ps in tr.heads.items():
            assert ps and all(p.grad is not None and _finite(p.grad) for p in ps), f"{name}: head {t}"
            assert any(bool(p.grad.abs().sum() > 0) for p in ps), f"{name}: head {t} got a zero gradient"
    finally:
        tr.close()


@pytest.mark.parametrize("name", WEIGHTING_NAMES)
def test_it_reports_a_weight_for_every_task(name, tmp_path, with_required):
    tr = _trainer(tmp_path / "w", name, epochs=1)
    tr.prepare()
    try:
        tr.step()
        tr.step()
        cur = tr.w.current()
    finally:
        tr.close()
    assert sorted(cur) == ["c", "r"], f"{name}: current() names {sorted(cur)}"
    values = [float(v) for v in cur.values()]
    if name in NOT_WEIGHTED:
        assert all(math.isnan(v) for v in values), f"{name} is listed as not weighted but reports {cur}"
    else:
        assert all(math.isfinite(v) for v in values), f"{name}: current() = {cur}"


def _same(a, b, where: str = "") -> None:
    """``a`` equals ``b`` as a state: tensors (and arrays) element for element, containers recursively."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(map(str, a))} != {sorted(map(str, b))}"
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif hasattr(a, "shape"):  # numpy
        assert (a == b).all(), where
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.parametrize("name", WEIGHTING_NAMES)
def test_its_state_survives_a_state_dict_round_trip(name, tmp_path, with_required):
    """Through the resume file's own format (safetensors + JSON, no pickle), into a freshly built instance."""
    tr = _trainer(tmp_path / "w", name, epochs=1)
    tr.fit()
    sd = tr.w.state_dict()
    safestate.save({"weighting": sd}, tmp_path / "w.safetensors", "resume")
    loaded = safestate.load(tmp_path / "w.safetensors", "resume")["weighting"]
    fresh = build_weighting(name, tr.tasks, REQUIRED.get(name))
    fresh.setup(tr.model)  # the engine's order: setup, then load
    fresh.load_state_dict(loaded)
    _same(fresh.state_dict(), sd, name)


@pytest.mark.parametrize("name", WEIGHTING_NAMES)
def test_a_resumed_stage_continues_as_an_uninterrupted_one(name, tmp_path, with_required):
    """2 epochs, stopped, a fresh trainer and balancer resume from resume.safetensors, 1 more epoch: the same
    history, trajectories and weights as 3 epochs uninterrupted (to float tolerance)."""
    history, traj, weights = _fit(_trainer(tmp_path / "clean", name, epochs=3))
    with pytest.raises(Stop):
        _trainer(tmp_path / "stopped", name, epochs=3, on_epoch=stop_at(3)).fit()
    resumed = _fit(_trainer(tmp_path / "stopped", name, epochs=3))
    assert [h["epoch"] for h in resumed[0]] == [h["epoch"] for h in history]
    assert [h["score"] for h in resumed[0]] == pytest.approx([h["score"] for h in history], rel=1e-5, abs=1e-6)
    a, b = json.loads(resumed[1]), json.loads(traj)
    assert a["step"] == b["step"]
    for kind in ("weights", "loss"):
        for t in b[kind]:
            assert a[kind][t] == pytest.approx(b[kind][t], rel=1e-5, abs=1e-6, nan_ok=True), (kind, t)
    for k, v in weights.items():
        torch.testing.assert_close(resumed[2][k], v, rtol=1e-5, atol=1e-6, msg=f"{name}: {k}")


@pytest.mark.parametrize("name", WEIGHTING_NAMES)
def test_a_task_absent_from_a_step_produces_no_nan(name, tmp_path, with_required):
    """With ``sampling=proportional`` a multi-input step holds one task's batch; a balancer that ``needs_all_tasks``
    is never handed such a step (the engine draws every task), which is what is asserted for it instead."""
    tr = _trainer(tmp_path / "w", name, sampling="proportional", epochs=1)
    tr.prepare()
    try:
        if tr.w.needs_all_tasks:
            assert tr._sampling() == "all"
            for _ in range(2):
                specs = tr._draw()
                assert sorted(t for s in specs for t in s.targets) == ["c", "r"]
            return
        assert tr._sampling() == "proportional"
        for _ in range(tr.steps_per_epoch):  # 8 one-task steps
            tr.step()
        assert all(_finite(p) for p in tr.model.parameters()), f"{name}: NaN in the model"
        assert all(_finite(p.grad) for p in tr.model.parameters() if p.grad is not None)
        cur = tr.w.current()
        assert sorted(cur) == ["c", "r"]
        if name not in NOT_WEIGHTED:
            assert all(math.isfinite(float(v)) for v in cur.values()), f"{name}: current() = {cur}"
    finally:
        tr.close()


# ================================================================================================== fusion

#: ``(params for n inputs, c, reason)``: the method's documented result on equal task vectors τ is θ0 + c·τ, where
#: c = ``c(params, n, coefficients_of_the_tensor)``; an entry absent here must give θ1 for one input and θ for N
#: equal inputs with its default parameters (c = 1). Params may also only make the test fast.
IDENTITY = {
    "weighted": (lambda n: {"weights": [1.0] * n}, None, "weights are required, one per checkpoint"),
    "task_arithmetic": (lambda n: {}, lambda p, n, coef: p["lam"] * n,
                        "θ0 + λΣτ_i with λ = 0.3 by default: one input gives θ0 + λτ, N equal ones θ0 + Nλτ"),
    "breadcrumbs": (lambda n: {"density": 1}, lambda p, n, coef: p["lam"] * n,
                    "density < 1 drops the smallest entries and the outliers of τ by design; density = 1 turns that "
                    "off (docs/fusion.md), leaving task arithmetic, θ0 + λΣτ_i with λ = 0.3"),
    "ties": (lambda n: {"k": 1}, None, "k = 0.2 trims 80 % of τ by design; with k = 1 nothing is trimmed, the elected "
                                       "sign is τ's and the disjoint mean of N equal τ is τ"),
    "dare_ties": (lambda n: {"dare": 0}, None,
                  "dare = 0.5 drops half of τ at random by design; with dare = 0 (and its default k = 1) it is TIES "
                  "without a trim (docs/fusion.md); its disjoint mean of N equal τ is τ"),
    "adamerging": (lambda n: {"steps": 2}, lambda p, n, coef: sum(coef),
                   "θ(λ) = θ0 + Σ_k λ_k τ_k with learned, clamped λ (docs/fusion.md, learned fusion): c = Σ_k λ_k "
                   "as recorded in the stage's coefficients; steps = 2 only keeps the test fast"),
    "adamerging_layer": (lambda n: {"steps": 2}, lambda p, n, coef: sum(coef), "as adamerging, one λ per layer"),
    "neural_fusion": (lambda n: {"steps": 2}, lambda p, n, coef: sum(coef), "as adamerging, with the labels' loss"),
    "fisher": (lambda n: {"examples": 16}, None, "Σ F_i θ / Σ F_i = θ whatever the Fishers; examples: speed only"),
    "regmean": (lambda n: {"examples": 16}, None, "(Σ G̃_i)⁻¹ Σ G̃_i W = W up to the ridge; examples: speed only"),
    "magmax": (lambda n: {}, lambda p, n, coef: p["lam"],
               "θ0 + λ·τ_max, λ = 0.5 by default: one input or N equal ones give θ0 + λτ"),
}
#: methods whose documented result on N equal task vectors is not θ0 + c·τ (their own tests pin it instead)
NOT_LINEAR_IN_EQUAL_INPUTS = {"opcm": "each later copy is projected away from the earlier ones' subspace and the sum "
                                      "rescaled (docs/fusion.md; tests/test_merge_in.py pins its value)"}

#: absolute tolerance of the identities (float64 arithmetic cast back; RegMean solves a ridge-regularised system)
ATOL = {"regmean": 1e-4}


def _params(name: str, n: int) -> dict:
    return IDENTITY[name][0](n) if name in IDENTITY else {}


def _scale(name: str, params: dict, n: int, coefficients: list[float] | None) -> float:
    rule = IDENTITY.get(name, (None, None, ""))[1]
    if rule is None:
        return 1.0
    full = build_fusion(name, params, n).params.model_dump()
    return float(rule(full, n, coefficients))


def _is_model_based(name: str) -> bool:
    return issubclass(FUSIONS.get(name), ModelFusion)


@pytest.fixture
def mixed(family, tmp_path):  # noqa: F811 (the imported fixture)
    """``tests/test_fusion.py``'s θ0 and three fine-tunes, with one weight stored in float16 and one in bfloat16."""
    base, paths, bufs = family
    out = []
    for p in [base, *paths]:
        s = load_state(p)
        s["body.0.weight"] = s["body.0.weight"].half()
        s["body.3.weight"] = s["body.3.weight"].bfloat16()
        out.append(write(s, tmp_path / f"mixed_{p.name}", bufs))
    return out[0], out[1:], bufs


def _stream(mixed, tmp_path, name: str, inputs: list[Path]) -> dict[str, torch.Tensor]:
    base, _, _ = mixed
    method = build_fusion(name, _params(name, len(inputs)), len(inputs))
    out = tmp_path / f"out_{name}_{len(inputs)}.safetensors"
    fuse_files(base, inputs, method, out)
    return load_state(out)


def _model_based(tuned, tmp_path, name: str, equal: bool):  # noqa: F811
    """A real ``fuse`` stage: one fine-tune, or two tasks whose fine-tunes hold the same backbone (each its own
    head). Returns (θ0, θ, fused, per tensor the recorded coefficients or None)."""
    stages, parts = tuned
    if equal:
        parts = [parts[0], _copy_ckpt(parts[1], tmp_path / "same_backbone", backbone_from=parts[0])]
    else:
        parts = parts[:1]
    out = stages.fuse(parts, name, _params(name, len(parts)))
    fused = C.load_state(out.ckpt.path / C.BACKBONE_FILE)
    coef = out.info.get("fusion", {}).get("coefficients")
    per_tensor = None
    if coef is not None:
        rows = dict(zip(coef["layers"], coef["values"]))
        per_tensor = {k: rows.get(k, rows.get("all")) for k in fused}
    theta0 = C.load_state(stages.init().path / C.BACKBONE_FILE)
    theta = C.load_state(parts[0].path / C.BACKBONE_FILE)
    return theta0, theta, fused, per_tensor, len(parts)


def _check_identity(name, theta0, theta, fused, coefficients, n, floats) -> None:
    params = _params(name, n)
    for k in floats:
        c = _scale(name, params, n, coefficients[k] if coefficients else None)
        want = theta0[k].double() + c * (theta[k].double() - theta0[k].double())
        got = fused[k].double()
        tol = max(ATOL.get(name, 0.0), 1e-6 if theta[k].dtype == torch.float32 else 1e-2)
        assert torch.allclose(got, want, rtol=0, atol=tol * (1 + float(want.abs().max()))), \
            f"{name}: {k} is not θ0 + {c:g}·τ (max error {float((got - want).abs().max()):.3g}) — " \
            f"{IDENTITY.get(name, ('', '', 'general identity'))[2]}"


@pytest.mark.parametrize("name", FUSION_NAMES)
@pytest.mark.parametrize("equal", [False, True], ids=["one_input", "n_equal_inputs"])
def test_fusion_of_one_input_is_theta1_and_of_n_equal_inputs_is_theta(name, equal, request, tmp_path):
    if equal and name in NOT_LINEAR_IN_EQUAL_INPUTS:
        pytest.skip(NOT_LINEAR_IN_EQUAL_INPUTS[name])
    if _is_model_based(name):
        theta0, theta, fused, coefficients, n = _model_based(request.getfixturevalue("tuned"), tmp_path, name, equal)
        floats = [k for k, v in theta0.items() if v.is_floating_point()]  # the MLP backbone has no buffers
    else:
        mixed = request.getfixturevalue("mixed")
        base, paths, bufs = mixed
        inputs = [paths[0]] * (3 if equal else 1)
        fused, n, coefficients = _stream(mixed, tmp_path, name, inputs), len(inputs), None
        theta0, theta = load_state(base), load_state(paths[0])
        floats = [k for k, v in theta0.items() if v.is_floating_point() and k not in bufs]
        for k in bufs:  # float buffers: the mean of the task models, which are all θ1
            if theta0[k].is_floating_point():
                assert torch.equal(fused[k], theta[k]), f"{name}: buffer {k}"
    assert set(fused) == set(theta0)
    _check_identity(name, theta0, theta, fused, coefficients, n, floats)


@pytest.mark.parametrize("name", FUSION_NAMES)
def test_fusion_keeps_every_tensors_dtype(name, request, tmp_path):
    if _is_model_based(name):
        theta0, _, fused, _, _ = _model_based(request.getfixturevalue("tuned"), tmp_path, name, equal=True)
    else:
        mixed = request.getfixturevalue("mixed")
        fused, theta0 = _stream(mixed, tmp_path, name, mixed[1]), load_state(mixed[0])
        assert {str(v.dtype) for v in theta0.values()} >= {"torch.float16", "torch.bfloat16", "torch.int64"}
    assert {k: v.dtype for k, v in fused.items()} == {k: v.dtype for k, v in theta0.items()}
    assert {k: v.shape for k, v in fused.items()} == {k: v.shape for k, v in theta0.items()}


#: model-based methods whose ``check`` refuses the BatchNorm backbone of the buffer test before any work (documented)
REFUSES_CNN = {"regmean": "RegMean needs linear maps; the cnn backbone has only 3×3 convolutions (docs/fusion.md)",
               "opcm": "OPCM projects the task vectors of linear weights; the cnn backbone has none (docs/fusion.md)"}


@pytest.fixture(scope="module")
def bn_tuned(tmp_path_factory):
    """Two fine-tunes of the cnn backbone (BatchNorm: float running statistics and an int64 counter)."""
    root = tmp_path_factory.mktemp("bn")
    suite = build_suite({"suite": "vision_single", "backbone.source": "cnn", "tasks": ["parity", "ge5"],
                         "train.epochs": 1, "train.max_train_samples": 64, "train.max_eval_samples": 32})
    store = Store(root, suite.name)
    stages = Stages(SuiteContext.load(suite, store), store, seed=0)
    return stages, [stages.finetune(t).ckpt for t in stages.task_names]


@pytest.mark.parametrize("name", FUSION_NAMES)
def test_fusion_takes_integers_from_theta0_and_float_buffers_as_the_mean(name, request, tmp_path):
    """docs/fusion.md: integer tensors are copied from θ0, float buffers are the plain mean of the task models."""
    if _is_model_based(name):
        stages, parts = request.getfixturevalue("bn_tuned")
        if name in REFUSES_CNN:
            from bench.errors import BenchError

            with pytest.raises(BenchError, match="linear"):
                stages.fuse(parts, name, _params(name, len(parts)))
            return
        out = stages.fuse(parts, name, _params(name, len(parts)))
        fused = C.load_state(out.ckpt.path / C.BACKBONE_FILE)
        theta0 = C.load_state(stages.init().path / C.BACKBONE_FILE)
        tasks = [C.load_state(p.path / C.BACKBONE_FILE) for p in parts]
        bufs = set(C.read_buffers(out.ckpt.path / C.BACKBONE_FILE))
    else:
        mixed = request.getfixturevalue("mixed")
        base, paths, bufs = mixed
        fused, theta0 = _stream(mixed, tmp_path, name, paths), load_state(base)
        tasks = [load_state(p) for p in paths]
    ints = [k for k, v in theta0.items() if not v.is_floating_point()]
    assert ints, "the fixture must hold integer tensors"
    for k in ints:
        assert any(not torch.equal(t[k], theta0[k]) for t in tasks) or k == "position_ids", k
        assert fused[k].dtype == theta0[k].dtype and torch.equal(fused[k], theta0[k]), f"{name}: {k}"
    float_bufs = [k for k in bufs if theta0[k].is_floating_point()]
    assert float_bufs
    for k in float_bufs:
        mean = (sum(t[k].double() for t in tasks) / len(tasks)).to(theta0[k].dtype)
        torch.testing.assert_close(fused[k], mean, rtol=1e-6, atol=1e-7, msg=f"{name}: {k}")


# ============================================================================================== strategies

@pytest.fixture(scope="module")
def strategy_records(tmp_path_factory) -> dict[str, list[dict]]:
    """One tiny synthetic run of every registered strategy (one command: shared stages are computed once)."""
    from bench.cli import main

    results = tmp_path_factory.mktemp("strategies")
    argv = ["run", *[a for a in FAST if not a.startswith(("train.epochs", "train.max_train"))], "train.epochs=1",
            "train.max_train_samples=120", f"results_dir={results}"]
    stepwise = [n for n in STRATEGY_NAMES if issubclass(STRATEGIES.get(n), ScheduleStrategy)]
    assert main([*argv, f"strategy={','.join(n for n in STRATEGY_NAMES if n not in stepwise)}"]) == 0
    # a schedule strategy needs a schedule (and joint_continue's rehearsal a multi-input suite, or all of it)
    assert main([*argv, f"strategy={','.join(stepwise)}", "schedule=[[clean,cls3],[noisy]]",
                 "strategy.rehearsal=1"]) == 0
    out: dict[str, list[dict]] = {}
    for p in sorted(results.glob("*/cells/*/*/record.json")):
        out.setdefault(p.parent.parent.name, []).append(json.loads(p.read_text()))
    return out


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_a_strategys_rows_are_the_rows_it_declares(name, strategy_records):
    cls = STRATEGIES.get(name)
    recs = strategy_records.get(name)
    assert recs, f"strategy {name!r} wrote no record"
    for rec in recs:
        assert sorted(rec["rows"]) == sorted(cls.row_names()), f"{name}: declares {cls.row_names()}"


#: override values that no parameter type accepts: a nested list fails every scalar, dict, flat list and Literal
BAD_VALUES = ["[[[bad]]]", "not_a_value", "-1"]


def _refusal(argv: list[str]) -> str | None:
    """The one-line error with which planning (``bench run``'s validation, before any work) refuses ``argv``, or
    None when it accepts it."""
    from bench.errors import BenchError
    from bench.plan import make_plan

    try:
        make_plan(argv)
    except BenchError as e:
        err = str(e)
        assert len(err.splitlines()) == 1, f"not one line:\n{err}"
        return err
    return None


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_a_bad_parameter_value_is_one_line_naming_the_parameter(name, tmp_path):
    """Every parameter of the strategy's ``Params`` (an unknown key for a strategy without any) is given values
    until one is refused; the refusal is one line that names the parameter."""
    cls = STRATEGIES.get(name)
    fields = list(cls.Params.model_fields)
    argv = ["suite=synthetic", f"strategy={name}", "report=false", f"results_dir={tmp_path}"]
    if not fields:
        err = _refusal([*argv, "strategy.bogus_param=1"])
        assert err and "bogus_param" in err
        return
    for field in fields:
        for value in BAD_VALUES:
            err = _refusal([*argv, f"strategy.{field}={value}"])
            if err is not None:
                assert field in err, f"{name}: strategy.{field}={value} gave {err!r}"
                break
        else:
            pytest.fail(f"{name}: no bad value of strategy.{field} was refused ({BAD_VALUES})")
