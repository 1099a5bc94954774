"""Learned and data-aware fusion (AdaMerging, the neural fusion layer, Fisher, RegMean) and the public stage API
they are built on, checked on known answers: real fine-tunes of the synthetic suite, real stages and store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from bench import checkpoint as C
from bench.engine import FIT_RESUME_FILE, optimise
from bench.errors import BenchError
from bench.fusion import build_fusion
from bench.fusion.data_aware import _rows_of, fisher_merge, linear_layers, regmean_solve
from bench.fusion.learned import _Merger
from bench.fusion.model_based import FusionJob
from bench.plan import build_suite
from bench.stages import Checkpoint, Stages, SuiteContext
from bench.store import Store

from .conftest import run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

CLS = {"suite": "synthetic", "tasks": ["cls3", "cls2"], "train.epochs": 2, "train.max_train_samples": 300,
       "train.max_eval_samples": 200}


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """The synthetic suite's two classification tasks, fine-tuned once (seed 0), with a store to fuse in."""
    root = tmp_path_factory.mktemp("learned")
    suite = build_suite(CLS)
    store = Store(root, suite.name)
    ctx = SuiteContext.load(suite, store)
    stages = Stages(ctx, store, seed=0)
    parts = [stages.finetune(t).ckpt for t in stages.task_names]
    return stages, parts


def _copy_ckpt(src: Checkpoint, dst: Path, backbone_from: Checkpoint) -> Checkpoint:
    """``src``'s heads with ``backbone_from``'s backbone (to build task vectors with known values)."""
    dst.mkdir(parents=True)
    shutil.copy(backbone_from.path / C.BACKBONE_FILE, dst / C.BACKBONE_FILE)
    shutil.copy(src.path / C.HEADS_FILE, dst / C.HEADS_FILE)
    return Checkpoint("finetune", dst.name, dst, src.tasks)


def _coefficients(out) -> torch.Tensor:
    return torch.tensor(out.info["fusion"]["coefficients"]["values"])


# -- AdaMerging -----------------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("method", ["adamerging", "adamerging_layer"])
def test_adamerging_lowers_the_entropy_of_the_heads_on_validation_inputs(tuned, method):
    stages, parts = tuned
    out = stages.fuse(parts, method, {"steps": 40, "lr": 0.02})
    objective = out.info["fusion"]["objective"]
    assert objective[-1] < objective[0] - 1e-3, objective
    lam = _coefficients(out)
    assert lam.shape == ((len(out.info["fusion"]["coefficients"]["layers"]), 2))
    assert lam.shape[0] == (1 if method == "adamerging" else len(C.load_state(parts[0].path / C.BACKBONE_FILE)))
    assert out.info["fusion"]["transductive"] is False
    assert not torch.allclose(lam, torch.full_like(lam, 0.3))  # it learned something
    again = stages.fuse(parts, method, {"steps": 40, "lr": 0.02})
    assert again.reused and again.ckpt.key == out.ckpt.key  # one cached stage per configuration


@pytest.mark.integration
def test_adamerging_coefficients_stay_at_init_when_every_task_vector_is_zero(tuned, tmp_path):
    stages, parts = tuned
    base = stages.init()
    zero = [_copy_ckpt(p, tmp_path / f"zero{i}", base) for i, p in enumerate(parts)]
    for method in ("adamerging", "adamerging_layer"):
        out = stages.fuse(zero, method, {"steps": 20, "lr": 0.05, "init": 0.3})
        assert torch.equal(_coefficients(out), torch.full_like(_coefficients(out), 0.3))
        fused = C.load_state(out.ckpt.path / C.BACKBONE_FILE)
        for k, v in C.load_state(base.path / C.BACKBONE_FILE).items():
            assert torch.equal(fused[k], v), k  # θ0 + Σ λ·0 = θ0


@pytest.mark.integration
def test_with_identical_task_vectors_only_the_sum_of_coefficients_matters(tuned, tmp_path):
    """θ0 + Σ_k λ_k τ = θ0 + (Σ_k λ_k) τ: coefficient sets with the same per-layer sums give the same model, and
    since every λ_k gets the same gradient ⟨∂L/∂θ, τ⟩ the learned coefficients stay equal across tasks."""
    stages, parts = tuned
    same = [_copy_ckpt(p, tmp_path / f"same{i}", parts[0]) for i, p in enumerate(parts)]
    job = FusionJob(stages, same, stages.init(), tmp_path / "job")
    merger = _Merger(job)
    g = torch.Generator().manual_seed(0)
    a = torch.rand(len(merger.names), 2, generator=g)
    b = torch.stack([a.sum(1) * 0.8, a.sum(1) * 0.2], dim=1)
    for k in merger.names:
        assert torch.allclose(merger.merged(a)[k], merger.merged(b)[k], atol=1e-6)
    for method in ("adamerging_layer", "neural_fusion"):
        lam = _coefficients(stages.fuse(same, method, {"steps": 15, "lr": 0.05}))
        assert torch.allclose(lam[:, 0], lam[:, 1], atol=1e-6), method


@pytest.mark.integration
def test_transductive_adamerging_reads_test_inputs_and_says_so(tuned):
    stages, parts = tuned
    inductive = stages.fuse(parts, "adamerging", {"steps": 5})
    transductive = stages.fuse(parts, "adamerging", {"steps": 5, "transductive": True})
    assert transductive.info["fusion"]["transductive"] is True
    assert transductive.info["key_inputs"]["split"] == "test" and inductive.info["key_inputs"]["split"] == "validation"
    assert transductive.ckpt.key != inductive.ckpt.key
    with pytest.raises(BenchError, match="transductive"):  # labels of the test split: never
        build_fusion("neural_fusion", {"transductive": True}, 2)


# -- the supervised fusion layer --------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("gate", ["none", "mlp"])
def test_neural_fusion_lowers_the_validation_loss(tuned, gate):
    stages, parts = tuned
    out = stages.fuse(parts, "neural_fusion", {"steps": 40, "lr": 0.02, "gate": gate})
    objective = out.info["fusion"]["objective"]
    assert objective[-1] < objective[0] - 1e-3, objective
    assert ("gate_params" in out.info["fusion"]) == (gate == "mlp")


# -- Fisher -----------------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_fisher_merging_with_equal_fishers_is_the_mean_and_a_one_hot_fisher_picks_that_model():
    g = torch.Generator().manual_seed(0)
    states = [{"w": torch.randn(3, 4, generator=g)} for _ in range(3)]
    f = {"w": torch.rand(3, 4, generator=g, dtype=torch.float64)}
    merged = fisher_merge(states, [f, f, f], floor=1e-6)
    assert torch.allclose(merged["w"], sum(s["w"].double() for s in states) / 3, atol=1e-12)
    one_hot = [{"w": torch.full((3, 4), v, dtype=torch.float64)} for v in (0.0, 1e6, 0.0)]
    assert torch.allclose(fisher_merge(states, one_hot, floor=1e-6)["w"], states[1]["w"].double(), atol=1e-9)


@pytest.mark.integration
def test_fisher_merging_end_to_end_stays_between_the_task_models(tuned):
    stages, parts = tuned
    out = stages.fuse(parts, "fisher", {"examples": 32})
    fused = C.load_state(out.ckpt.path / C.BACKBONE_FILE)
    ws = [C.load_state(p.path / C.BACKBONE_FILE) for p in parts]
    for k, v in fused.items():
        lo, hi = torch.minimum(ws[0][k], ws[1][k]), torch.maximum(ws[0][k], ws[1][k])
        assert bool(((v >= lo - 1e-6) & (v <= hi + 1e-6)).all()), k  # a per-entry convex combination


# -- RegMean ----------------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_regmean_is_the_mean_when_every_gram_matrix_is_equal():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 4, generator=g, dtype=torch.float64)
    gram = x.T @ x / 50
    ws = [torch.randn(3, 4, generator=g, dtype=torch.float64) for _ in range(3)]
    for alpha in (1.0, 0.5, 0.0):
        assert torch.allclose(regmean_solve(ws, [gram] * 3, alpha), sum(ws) / 3, atol=1e-9)


@pytest.mark.integration
def test_regmean_is_the_least_squares_solution_of_a_two_task_linear_problem():
    """W* = argmin_W Σ_i ‖X_i Wᵀ − X_i W_iᵀ‖², solved by hand as one stacked least-squares problem."""
    g = torch.Generator().manual_seed(2)
    n = 40
    x1 = torch.randn(n, 5, generator=g, dtype=torch.float64)
    x2 = torch.randn(n, 5, generator=g, dtype=torch.float64) * torch.tensor([3.0, 1, 0.2, 1, 2], dtype=torch.float64)
    w1, w2 = (torch.randn(2, 5, generator=g, dtype=torch.float64) for _ in range(2))
    by_hand = torch.linalg.lstsq(torch.cat([x1, x2]), torch.cat([x1 @ w1.T, x2 @ w2.T])).solution.T
    got = regmean_solve([w1, w2], [x1.T @ x1 / n, x2.T @ x2 / n], alpha=1.0)
    assert torch.allclose(got, by_hand, atol=1e-8)
    assert not torch.allclose(got, (w1 + w2) / 2, atol=1e-2)  # not merely the mean


@pytest.mark.integration
def test_a_1x1_convolution_contributes_the_gram_matrix_of_its_channels():
    conv, x = nn.Conv2d(3, 2, 1, stride=2), torch.randn(2, 3, 4, 4)
    rows = _rows_of(conv, x, None)
    assert rows.shape == (2 * 2 * 2, 3)  # the stride's positions only: what the map sees
    y = conv(x).permute(0, 2, 3, 1).reshape(-1, 2)
    assert torch.allclose(rows @ conv.weight.reshape(2, 3).T + conv.bias, y, atol=1e-6)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert _rows_of(nn.Linear(3, 2), torch.randn(2, 3, 3), mask).shape == (3, 3)  # padding tokens left out


@pytest.mark.integration
def test_regmean_end_to_end_first_layer_is_the_mean_on_a_shared_input_suite(tuned):
    """On a single-input suite every task model sees the same raw inputs at its first linear layer, so their Gram
    matrices are equal there and RegMean's first layer is the plain mean; deeper layers see different
    activations and are not."""
    stages, parts = tuned
    out = stages.fuse(parts, "regmean", {"examples": 64})
    fused = C.load_state(out.ckpt.path / C.BACKBONE_FILE)
    ws = [C.load_state(p.path / C.BACKBONE_FILE) for p in parts]
    assert torch.allclose(fused["body.0.weight"], (ws[0]["body.0.weight"] + ws[1]["body.0.weight"]) / 2, atol=1e-5)
    assert not torch.allclose(fused["body.2.weight"], (ws[0]["body.2.weight"] + ws[1]["body.2.weight"]) / 2,
                              atol=1e-4)
    assert out.info["fusion"]["linear_layers"] == 2
    assert list(linear_layers(stages.ctx.template)) == ["body.0", "body.2"]


# -- the engine's loop for small parameter sets ------------------------------------------------------------------


@pytest.mark.integration
def test_optimise_resumes_exactly_where_a_killed_run_stopped(tmp_path):
    x = torch.randn(32, 3, generator=torch.Generator().manual_seed(0))
    y = x @ torch.tensor([1.0, -2.0, 0.5])

    def make(stop_at=None):
        w = torch.zeros(3, requires_grad=True)

        def loss_at(step):
            if step == stop_at:
                raise KeyboardInterrupt
            i = (step * 8) % 32
            return ((x[i:i + 8] @ w - y[i:i + 8]) ** 2).mean()
        return w, loss_at

    w_ref, f = make()
    ref = optimise([w_ref], f, 120, lr=0.05, device=torch.device("cpu"))
    w_a, f = make(stop_at=77)
    with pytest.raises(KeyboardInterrupt):
        optimise([w_a], f, 120, lr=0.05, device=torch.device("cpu"), work_dir=tmp_path, save_every=50)
    assert (tmp_path / FIT_RESUME_FILE).exists()  # safetensors + JSON (bench.safestate): nothing to unpickle
    w_b, f = make()
    res = optimise([w_b], f, 120, lr=0.05, device=torch.device("cpu"), work_dir=tmp_path, save_every=50)
    assert torch.equal(w_b, w_ref) and res.losses == ref.losses
    assert not (tmp_path / FIT_RESUME_FILE).exists()


class _Planted:
    """A pickle that would leave a file behind if it were ever unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.integration
def test_optimise_deletes_an_old_pickle_resume_unread_and_starts_over(tmp_path, capsys):
    """A ``resume_fit.pt`` of an earlier version is deleted unread (one line) and the fit starts from step 0."""
    marker = tmp_path / "unpickled"
    torch.save({"params": _Planted(marker)}, tmp_path / "resume_fit.pt")
    w = torch.zeros(1, requires_grad=True)
    res = optimise([w], lambda step: ((w - 1) ** 2).sum(), 20, lr=0.1, device=torch.device("cpu"), work_dir=tmp_path)
    assert not marker.exists() and not (tmp_path / "resume_fit.pt").exists()
    assert res.telemetry["steps"] == 20 and len(res.losses) == 2
    assert "ignoring resume_fit.pt of an older version (never unpickled); the fit restarts" in capsys.readouterr().err


# -- bad input: one line, exit 2, before any work ------------------------------------------------------------------


@pytest.mark.slow
def test_adamerging_on_a_regression_suite_fails_before_any_work(results):
    r = run_cli("run", "suite=synthetic", "strategy=fuse_then_joint", "strategy.fusion=adamerging_layer",
                f"results_dir={results}")
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "adamerging_layer" in line and "regression" in line and "'clean'" in line and "Traceback" not in r.stderr
    assert not (results / "synthetic" / "stages").exists()


@pytest.mark.slow
def test_regmean_on_a_backbone_without_linear_layers_fails_before_any_work(results):
    r = run_cli("run", "suite=vision_single", "strategy=fuse_then_joint", "strategy.fusion=regmean", "backbone.source=cnn",
                f"results_dir={results}")
    assert r.returncode == 2, r.stderr
    assert "regmean" in r.stderr and "linear" in r.stderr and "Traceback" not in r.stderr
    assert not (results / "vision_single" / "stages").exists()


@pytest.mark.slow
def test_an_unknown_ties_convention_fails_before_any_work(results):
    r = run_cli("run", "suite=synthetic", "strategy=fuse_then_joint", "strategy.fusion=ties",
                "strategy.fusion_params.convention=foo", f"results_dir={results}")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "convention='foo'" in r.stderr and "'paper', 'fusionbench' or 'mergekit'" in r.stderr
    assert not (results / "synthetic").exists()


# -- searching a learned fusion's hyper-parameters, then running the best ---------------------------------------------


@pytest.mark.integration
def test_a_search_over_a_learned_fusion_reuses_the_fine_tunes_and_its_best_runs(results, capsys):
    """Each trial's fit is one cached fuse stage evaluated on validation only; `bench run params=best.yaml` then
    reuses that stage and evaluates the missing test split from the fused model (not from the evaluate stage's own
    folder, which holds no weights)."""
    from bench.cli import main

    fast = ["suite=synthetic", "train.epochs=2", "train.max_train_samples=300", "threads=1"]
    assert main(["search", *fast, "strategy=fuse_then_joint", "space=neural_fusion", "trials=2", "plots=false",
                 f"results_dir={results}"]) == 0
    out = capsys.readouterr().out
    assert "new trainings during the search (fine-tunes + joint runs): 0" in out
    fused = sorted((results / "synthetic" / "stages" / "fuse").glob("*/stage.json"))
    assert len(fused) == 2  # one stage per configuration, kept
    folder = results / "synthetic" / "search" / "synthetic-fuse_then_joint-neural_fusion"
    best = folder / "best.yaml"
    assert main(["run", f"params={best}", "report=false"]) == 0
    rec = [r for r in records_of(results) if r["strategy"] == "fuse_then_joint"]
    assert len(rec) == 1 and "test" in rec[0]["rows"]["fused"]["metrics"]
    assert rec[0]["rows"]["fused"]["fusion"]["method"] == "neural_fusion"
    assert len(sorted((results / "synthetic" / "stages" / "fuse").glob("*/stage.json"))) == 2  # reused, not refit


def records_of(results: Path) -> list[dict]:
    from .conftest import records

    return records(results)


@pytest.mark.integration
def test_a_learned_fusion_fits_with_the_batchnorm_statistics_it_is_stored_with(tmp_path):
    """θ(λ) is evaluated by overriding parameters only, so the model it runs in must already hold the fused
    model's buffers (the mean of the fine-tunes' running statistics), not θ0's."""
    suite = build_suite({"suite": "vision_single", "backbone.source": "cnn", "tasks": ["parity", "ge5"],
                         "train.epochs": 1, "train.max_train_samples": 64, "train.max_eval_samples": 32})
    store = Store(tmp_path, suite.name)
    stages = Stages(SuiteContext.load(suite, store), store, seed=0)
    parts = [stages.finetune(t).ckpt for t in stages.task_names]
    job = FusionJob(stages, parts, stages.init(), tmp_path / "job")
    states = [C.load_state(p.path / C.BACKBONE_FILE) for p in parts]
    buffers = dict(job.model().backbone.named_buffers())
    running = [k for k in buffers if k.endswith("running_var")]
    assert running
    for k in running:
        assert not torch.equal(states[0][k], states[1][k])  # the fine-tunes' statistics differ
        assert torch.allclose(buffers[k], (states[0][k] + states[1][k]) / 2)
    out = stages.fuse(parts, "adamerging", {"steps": 2})
    fused = C.load_state(out.ckpt.path / C.BACKBONE_FILE)
    assert all(torch.allclose(fused[k], buffers[k]) for k in running)
