"""``merge_in`` (fine-tune each arriving task from θ0, fuse in arrival order, retire by subtraction or re-fusion) and
the continual fusion method ``opcm`` (orthogonal projection onto the earlier merged vector's complement)."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from bench import checkpoint as C
from bench.errors import BenchError
from bench.fusion.base import build_fusion
from bench.fusion.opcm import OPCM, kept_rank, linear_weights, opcm_merge, project
from bench.runner import execute, make_plan
from bench.strategy import discover

from .conftest import MULTI, cli_error, records

# -- opcm: the projection, t = 1, the closed form against the step-by-step update ------------------------------


def _orthogonal(n: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def test_kept_rank_counts_directions_whose_share_stays_at_most_alpha():
    s = torch.tensor([4.0, 3.0, 2.0, 1.0])  # cumulative shares .4 .7 .9 1.
    assert [kept_rank(s, a) for a in (0.3, 0.5, 0.8, 0.95)] == [0, 1, 2, 3]


def test_projection_on_a_diagonal_merged_vector_zeroes_the_kept_block_and_the_diagonal():
    prev = torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0], dtype=torch.float64))  # U = V = I, r_0.8 = 2
    out = project(torch.ones(4, 4, dtype=torch.float64), prev, 0.8)
    want = torch.ones(4, 4, dtype=torch.float64)
    for i, j in [(0, 0), (0, 1), (1, 0), (1, 1), (2, 2), (3, 3)]:
        want[i, j] = 0
    assert torch.allclose(out, want, atol=1e-12)


def test_projected_update_is_orthogonal_to_the_kept_singular_subspace():
    """A hand-built merged vector U diag(5, 4, 1, .5) Vᵀ (5 × 4): r_0.9 = 2 (shares .48 .86 .95 1.), so the new task vector loses its
    components on u_i v_jᵀ for i, j < 2 and on every u_i v_iᵀ, keeps every other coefficient, and is therefore
    Frobenius-orthogonal to the merged vector itself."""
    u, v = _orthogonal(5, 1), _orthogonal(4, 2)
    s = torch.tensor([5.0, 4.0, 1.0, 0.5], dtype=torch.float64)
    prev = u[:, :4] @ torch.diag(s) @ v.T
    tau = torch.randn(5, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    out = project(tau, prev, 0.9)
    assert kept_rank(s, 0.9) == 2
    coeff_out, coeff_in = u.T @ out @ v, u.T @ tau @ v
    assert coeff_out[:2, :2].abs().max() < 1e-12
    assert coeff_out.diagonal().abs().max() < 1e-12
    mask = torch.ones(5, 4, dtype=torch.bool)
    mask[:2, :2] = False
    mask[range(4), range(4)] = False
    assert torch.allclose(coeff_out[mask], coeff_in[mask], atol=1e-12)  # nothing else is touched
    assert abs(float((out * prev).sum())) < 1e-12
    assert torch.equal(project(tau, torch.zeros(5, 4, dtype=torch.float64), 0.9), tau)  # nothing to avoid yet


def test_opcm_of_one_task_is_task_arithmetic_with_lambda_one():
    theta0, theta1 = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    merged, lambdas = opcm_merge([{"w": theta1 - theta0}], ["w"], {"w"}, 0.5)
    ta = build_fusion("task_arithmetic", {"lam": 1.0}, n=1).fuse("w", theta0.reshape(-1), [theta1.reshape(-1)])
    assert torch.allclose(theta0 + merged["w"], ta.reshape(3, 2), atol=1e-12) and lambdas == [1.0]


def test_opcm_worked_example():
    """Two tasks, a 2 × 2 linear weight and a bias. m_1 = τ_1 = diag(2, 0): r_0.5 = 0, so τ_2's diagonal goes;
    the bias is summed. S_2 = [[2, 2], [3, 0]], bias [1, 1]: ‖S_2‖ = √19; ‖τ_1‖ = √5, ‖τ_2‖ = √31, so
    λ_2 = √19 / ((√5 + √31) / 2) and m_2 = S_2 / λ_2."""
    t1 = {"w": torch.tensor([[2.0, 0.0], [0.0, 0.0]]), "b": torch.tensor([1.0, 0.0])}
    t2 = {"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "b": torch.tensor([0.0, 1.0])}
    merged, lambdas = opcm_merge([t1, t2], ["w", "b"], {"w"}, 0.5)
    lam = 19 ** 0.5 / ((5 ** 0.5 + 31 ** 0.5) / 2)
    assert lambdas == pytest.approx([1.0, lam], abs=1e-12)
    assert torch.allclose(merged["w"], torch.tensor([[2.0, 2.0], [3.0, 0.0]], dtype=torch.float64) / lam)
    assert torch.allclose(merged["b"], torch.tensor([1.0, 1.0], dtype=torch.float64) / lam)


def test_opcm_of_equal_task_vectors_projects_the_repeats_off_the_linear_weights():
    """N equal τ: every repeat lies in the span of m's own singular directions (the diagonal), so a linear weight keeps
    τ once while a bias sums it N times; both are divided by λ = ‖S‖ / ‖τ‖ (so not θ0 + c·τ with one c)."""
    tau = {"w": torch.tensor([[1.0, 2.0], [0.0, 3.0]], dtype=torch.float64), "b": torch.tensor([1.0, -1.0])}
    merged, lambdas = opcm_merge([tau] * 3, ["w", "b"], {"w"}, 0.5)
    lam = float(torch.sqrt(tau["w"].square().sum() + 9 * tau["b"].double().square().sum())
                / torch.sqrt(tau["w"].square().sum() + tau["b"].double().square().sum()))
    assert lambdas[-1] == pytest.approx(lam, abs=1e-12)
    assert torch.allclose(merged["w"], tau["w"] / lam) and torch.allclose(merged["b"], 3 * tau["b"].double() / lam)


def _fusionbench_steps(taus: list[dict], matrices: set[str], alpha: float) -> dict:
    """FusionBench's ``OPCM.run`` loop transcribed: the merged model updated in place one task at a time, linear
    weights projected off the previous merged vector, everything rescaled to the mean task-vector norm each step."""
    norm = lambda d: float(torch.sqrt(sum((v.double() ** 2).sum() for v in d.values())))
    merged = {k: v.double().clone() for k, v in taus[0].items()}
    norms, prev_lam = [norm(taus[0])], 1.0
    for tau in taus[1:]:
        norms.append(norm(tau))
        avg = sum(norms) / len(norms)
        new = {}
        for k, m in merged.items():
            t = tau[k].double()
            if k in matrices:
                u, s, vh = torch.linalg.svd(m, full_matrices=True)
                r = int((s.cumsum(0) / s.sum() > alpha).float().argmax())
                p = u.T @ t @ vh.T
                p.diagonal().fill_(0)
                p[:r, :r] = 0
                t = u @ p @ vh
            new[k] = prev_lam * m + t
        lam = norm(new) / avg
        merged = {k: v * avg / norm(new) for k, v in new.items()}
        prev_lam = lam
    return merged


def test_closed_form_equals_the_step_by_step_update():
    g = torch.Generator().manual_seed(0)
    taus = [{"w": torch.randn(6, 4, generator=g), "v": torch.randn(4, 6, generator=g), "b": torch.randn(4, generator=g)}
            for _ in range(4)]
    merged, _ = opcm_merge(taus, ["w", "v", "b"], {"w", "v"}, 0.5)
    ref = _fusionbench_steps(taus, {"w", "v"}, 0.5)
    for k in merged:
        assert torch.allclose(merged[k], ref[k], atol=1e-10), k


def test_opcm_refuses_a_backbone_without_linear_layers():
    with pytest.raises(BenchError, match="fusion 'opcm' projects linear weight matrices, but the Conv2d backbone"):
        OPCM(n=2).check(nn.Conv2d(1, 2, 3), [])
    assert linear_weights(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))) == {"0.weight", "2.weight"}


# -- magmax: the largest-magnitude entry, a later task winning ties ------------------------------------------------


def test_magmax_keeps_each_entrys_largest_magnitude_and_the_later_task_on_ties():
    base = torch.tensor([1.0, 1.0, 1.0, 1.0])
    t1, t2, t3 = base + torch.tensor([0.5, -2.0, 0.0, 1.0]), base + torch.tensor([-1.0, 1.0, 0.25, -1.0]), base
    fused = build_fusion("magmax", {}, n=3).fuse("w", base, [t1, t2, t3])  # λ = 0.5 by default
    assert fused.tolist() == [1 - 0.5, 1 - 1.0, 1 + 0.125, 1 - 0.5]  # entry 4: |1| = |−1|, task 2 came later
    swapped = build_fusion("magmax", {}, n=3).fuse("w", base, [t2, t1, t3])
    assert swapped[3] == 1 + 0.5  # the order decides the tie
    one = build_fusion("magmax", {"lam": 1.0}, n=1).fuse("w", base, [t1])
    assert torch.equal(one, t1.double())  # one task with λ = 1 is the fine-tune


# -- merge_in on the multi-input suite -----------------------------------------------------------------------------

def test_the_coefficient_a_task_is_subtracted_with():
    """``subtract`` takes away c_i τ_i: defined for θ0 + Σ c_i τ_i only."""
    coefficients = sys.modules[discover().get("merge_in").__module__].linear_coefficients
    assert coefficients(build_fusion("mean", {}, n=4)) == [0.25] * 4
    assert coefficients(build_fusion("task_arithmetic", {"lam": 0.4}, n=2)) == [0.4, 0.4]
    assert coefficients(build_fusion("weighted", {"weights": [3, 1]}, n=2)) == [0.75, 0.25]
    for name, params in [("task_arithmetic", {"dare": 0.1}), ("ties", {}), ("magmax", {}), ("opcm", {})]:
        assert coefficients(build_fusion(name, params, n=2)) is None, name


LAM = 0.3  # task_arithmetic's default λ


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("suite") / "multi.yaml"
    path.write_text(MULTI)
    return path


def _run(results: Path, suite: Path, schedule: str, *args: str, label: str = "merge_in") -> dict:
    """Run merge_in under ``schedule``; the record of that schedule with ``label`` (the row's display name)."""
    plan = make_plan([f"suite={suite}", f"schedule={schedule}", "strategy=merge_in", "report=false",
                      f"results_dir={results}", *args])
    assert execute(plan, out=io.StringIO()) == 0
    want = json.loads(re.sub(r"([-\w]+)", r'"\1"', schedule))
    return next(r for r in records(results) if r["config"]["suite"]["schedule"] == want and r["label"] == label)


def _state(results: Path, stage: str, key: str, file: str = C.BACKBONE_FILE) -> dict[str, torch.Tensor]:
    return C.load_state(results / "multi" / "stages" / stage / key / file)


def _only(step: dict, stage: str) -> str:
    keys = [s["key"] for s in step["stages"] if s["stage"] == stage]
    assert len(keys) == 1, (stage, step["stages"])
    return keys[0]


def _close(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k in got:
        assert torch.allclose(got[k].double(), want[k], atol=1e-6), k


@pytest.fixture(scope="module")
def arithmetic(tmp_path_factory, suite):
    """[[a],[b],[c],[-a]] with task arithmetic, retiring by subtraction; the θ0 and fine-tune states."""
    results = tmp_path_factory.mktemp("ta")
    rec = _run(results, suite, "[[a],[b],[c],[-a]]", "strategy.fusion=task_arithmetic",
               label="merge_in[fusion=task_arithmetic]")
    steps = rec["rows"]["merge_in"]["schedule"]
    theta0 = C.load_state(next((results / "multi" / "stages" / "init").glob("*/" + C.BACKBONE_FILE)))
    tunes = {s["arrived"][0]: _state(results, "finetune", _only(s, "finetune")) for s in steps[:3]}
    taus = {t: {k: v.double() - theta0[k].double() for k, v in st.items()} for t, st in tunes.items()}
    return results, steps, theta0, taus


def _ta(theta0: dict, taus: dict, tasks: str) -> dict:
    return {k: theta0[k].double() + LAM * sum(taus[t][k] for t in tasks) for k in theta0}


@pytest.mark.integration
def test_merged_backbone_is_theta0_plus_lambda_sum_of_task_vectors(arithmetic):
    results, steps, theta0, taus = arithmetic
    assert [s["tasks"] for s in steps] == [["a"], ["a", "b"], ["a", "b", "c"], ["b", "c"]]
    for k, tasks in enumerate(["a", "ab", "abc"]):
        fused = _only(steps[k], "fuse")
        _close(_state(results, "fuse", fused), _ta(theta0, taus, tasks))
        heads = _state(results, "fuse", fused, C.HEADS_FILE)
        assert {n.split(".")[0] for n in heads} == set(tasks)  # a head for every task the step serves
        # each head is its own fine-tune's
        tune = _state(results, "finetune", _only(steps[k], "finetune"), C.HEADS_FILE)
        assert all(torch.equal(heads[n], v) for n, v in tune.items())
    assert steps[2]["spent"]["train_samples_per_task"].keys() == {"c"}  # step 3 trained c alone


@pytest.mark.integration
def test_retiring_by_subtraction_leaves_the_others_sum(arithmetic):
    results, steps, theta0, taus = arithmetic
    retire = steps[3]
    assert retire["retired"] == ["a"] and retire["spent"].get("train_samples_seen", 0) == 0
    key = _only(retire, "merge_in_retire")
    _close(_state(results, "merge_in_retire", key), _ta(theta0, taus, "bc"))
    assert {n.split(".")[0] for n in _state(results, "merge_in_retire", key, C.HEADS_FILE)} == {"b", "c"}
    assert retire["metrics"]["test"].keys() == {"b", "c"}


@pytest.mark.integration
def test_retiring_by_refusing_fuses_the_remaining_fine_tunes(arithmetic, suite):
    results, steps, theta0, taus = arithmetic
    rec = _run(results, suite, "[[a],[b],[c],[-a]]", "strategy.fusion=task_arithmetic", "strategy.retire=refuse",
               label="merge_in[fusion=task_arithmetic,retire=refuse]")
    new = rec["rows"]["merge_in"]["schedule"]
    assert [s["stages"] for s in new[:3]] == [[{**x, "reused": True} for x in s["stages"]] for s in steps[:3]]
    fused = _only(new[3], "fuse")
    info = json.loads((results / "multi" / "stages" / "fuse" / fused / "stage.json").read_text())
    tunes = [_only(steps[k], "finetune") for k in (1, 2)]
    assert info["key_inputs"]["parts"] == tunes  # b and c, in arrival order
    _close(_state(results, "fuse", fused), _ta(theta0, taus, "bc"))
    assert rec["stages_computed"] == [f"fuse/{fused}", f"evaluate/{_only(new[3], 'evaluate')}"]


@pytest.mark.integration
def test_a_third_step_computes_only_its_fine_tune_fusion_and_evaluation(tmp_path, suite):
    _run(tmp_path, suite, "[[a],[b]]")
    rec = _run(tmp_path, suite, "[[a],[b],[c]]")
    steps = rec["rows"]["merge_in"]["schedule"]
    assert all(s["reused"] for step in steps[:2] for s in step["stages"])
    assert sorted(rec["stages_computed"]) == sorted(f"{s['stage']}/{s['key']}" for s in steps[2]["stages"])
    assert sorted(s["stage"] for s in steps[2]["stages"]) == ["evaluate", "finetune", "fuse"]


@pytest.mark.integration
def test_opcm_through_merge_in_is_the_fine_tune_then_the_projected_merge(tmp_path, suite):
    rec = _run(tmp_path, suite, "[[a],[b]]", "strategy.fusion=opcm", label="merge_in[fusion=opcm]")
    steps = rec["rows"]["merge_in"]["schedule"]
    theta0 = C.load_state(next((tmp_path / "multi" / "stages" / "init").glob("*/" + C.BACKBONE_FILE)))
    tunes = [_state(tmp_path, "finetune", _only(s, "finetune")) for s in steps]
    _close(_state(tmp_path, "fuse", _only(steps[0], "fuse")), {k: v.double() for k, v in tunes[0].items()})
    taus = [{k: s[k].double() - theta0[k].double() for k in theta0} for s in tunes]
    matrices = {k for k, v in theta0.items() if k.endswith("weight") and v.dim() == 2}
    merged, _ = opcm_merge(taus, list(theta0), matrices, 0.5)
    _close(_state(tmp_path, "fuse", _only(steps[1], "fuse")), {k: theta0[k].double() + merged[k] for k in theta0})


@pytest.mark.integration
def test_subtracting_a_non_linear_fusion_and_entropy_on_regression_are_refused(capsys, suite, tmp_path):
    base = [f"suite={suite}", "strategy=merge_in", f"results_dir={tmp_path}", "report=false"]
    msg = cli_error(capsys, *base, "schedule=[[a,b],[c],[-a]]", "strategy.fusion=ties")
    assert "merge_in step 3 retires a by subtracting its task vector, but fusion 'ties' is not θ0 + Σ c_i τ_i; use " \
           "strategy.retire=refuse" in msg
    msg = cli_error(capsys, *base, "schedule=[[a],[b]]", "strategy.fusion=adamerging")
    assert "merge_in step 1 fuses 1 fine-tune(s): fusion 'adamerging' minimises the entropy" in msg
    assert not (tmp_path / "multi" / "stages" / "finetune").exists()  # refused before any training
