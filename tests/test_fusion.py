"""Fusion identities, TIES on a hand-computed example, buffer/integer rules and input errors, on real files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from bench.checkpoint import buffer_names, load_state, read_buffers, save_state
from bench.errors import BenchError
from bench.fusion import FUSIONS, build_fusion, fuse_files
from bench.fusion.methods import Ties, TiesParams


class TinyBackbone(nn.Module):
    """Linear + BatchNorm (float buffers, an int64 counter) + an integer position-id buffer."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
        self.register_buffer("position_ids", torch.arange(5))


def write(state: dict[str, torch.Tensor], path: Path, buffers: list[str]) -> Path:
    save_state(state, path, buffers)
    return path


@pytest.fixture
def family(tmp_path):
    """θ0 and three fine-tunes of it: every float tensor moved, running_var shrunk, the counter advanced."""
    torch.manual_seed(0)
    m = TinyBackbone()
    bufs = buffer_names(m)
    base = {k: v.clone() for k, v in m.state_dict().items()}
    base["body.1.running_var"] = torch.ones(4)
    base["body.1.num_batches_tracked"] = torch.tensor(7)
    paths = []
    for i in range(3):
        s = {k: v.clone() for k, v in base.items()}
        for k, v in s.items():
            if v.is_floating_point() and k not in bufs:
                s[k] = v + 0.1 * (i + 1) * torch.randn_like(v)
        s["body.1.running_mean"] = torch.full((4,), float(i))
        s["body.1.running_var"] = torch.full((4,), 0.5 - 0.1 * i)  # each task's features have less variance
        s["body.1.num_batches_tracked"] = torch.tensor(100 + i)
        paths.append(write(s, tmp_path / f"t{i}.safetensors", bufs))
    return write(base, tmp_path / "base.safetensors", bufs), paths, bufs


def run(family, tmp_path, name, params):
    base, paths, _ = family
    method = build_fusion(name, params, n=len(paths))
    stats = fuse_files(base, paths, method, tmp_path / f"out_{name}.safetensors")
    return load_state(tmp_path / f"out_{name}.safetensors"), stats


def params_of(state, bufs):
    return {k: v for k, v in state.items() if k not in bufs and v.is_floating_point()}


def test_registry_lists_the_data_free_methods():
    assert {"mean", "weighted", "task_arithmetic", "ties", "dare_ties", "breadcrumbs"} <= set(FUSIONS.names())


def test_mean_of_identical_checkpoints_is_that_checkpoint(tmp_path):
    torch.manual_seed(1)
    m = TinyBackbone()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    state["body.0.weight"] = state["body.0.weight"].half()  # dtype is kept, and the identity holds bit for bit
    paths = [write(state, tmp_path / f"c{i}.safetensors", buffer_names(m)) for i in range(3)]
    fuse_files(None, paths, build_fusion("mean", {}, 3), tmp_path / "out.safetensors")
    out = load_state(tmp_path / "out.safetensors")
    assert out.keys() == state.keys()
    for k in state:
        assert out[k].dtype == state[k].dtype and torch.equal(out[k], state[k]), k


def test_task_arithmetic_lambda_zero_is_theta0_and_one_over_n_is_the_mean(family, tmp_path):
    base, paths, bufs = family
    theta0 = load_state(base)
    out, _ = run(family, tmp_path, "task_arithmetic", {"lam": 0.0})
    for k, v in params_of(theta0, bufs).items():
        assert torch.equal(out[k], v), k
    out3, _ = run(family, tmp_path, "task_arithmetic", {"lam": 1 / 3})
    mean, _ = run(family, tmp_path, "mean", {})
    for k in params_of(theta0, bufs):
        torch.testing.assert_close(out3[k], mean[k], rtol=1e-6, atol=1e-7)


def test_weighted_one_hot_is_that_model_and_weights_are_renormalised(family, tmp_path):
    _, paths, bufs = family
    task1 = load_state(paths[1])
    out, stats = run(family, tmp_path, "weighted", {"weights": [0, 5, 0]})  # renormalised to [0, 1, 0]
    assert stats["weights"] == [0.0, 1.0, 0.0]
    for k, v in params_of(task1, bufs).items():
        assert torch.equal(out[k], v), k
    out, _ = run(family, tmp_path, "weighted", {"weights": [1, 1, 2]})
    t = [load_state(p)["body.3.weight"].double() for p in paths]
    torch.testing.assert_close(out["body.3.weight"], ((t[0] + t[1] + 2 * t[2]) / 4).float())


def test_buffers_are_the_plain_mean_and_integers_come_from_theta0(family, tmp_path):
    base, paths, bufs = family
    for name, params in [("mean", {}), ("weighted", {"weights": [1, 0, 0]}), ("task_arithmetic", {"lam": 1.0}),
                         ("ties", {"k": 0.2})]:
        out, stats = run(family, tmp_path, name, params)
        # running_var: mean of 0.5, 0.4, 0.3 = 0.4; task arithmetic with λ = 1 would give 1 + Σ(v_i − 1) = −0.8
        torch.testing.assert_close(out["body.1.running_var"], torch.full((4,), 0.4))
        torch.testing.assert_close(out["body.1.running_mean"], torch.full((4,), 1.0))
        assert out["body.1.num_batches_tracked"].item() == 7  # θ0's counter, unchanged
        assert out["body.1.num_batches_tracked"].dtype == torch.int64
        assert torch.equal(out["position_ids"], torch.arange(5))
        assert read_buffers(tmp_path / f"out_{name}.safetensors") == sorted(bufs)
        # 3 weights + 3 biases (the BatchNorm affine pair included); 4 buffers
        assert stats["tensors"] == len(out) and stats["fused_tensors"] == 6
    # without θ0 (mean/weighted) the integers come from the first checkpoint
    fuse_files(None, paths, build_fusion("mean", {}, 3), tmp_path / "nobase.safetensors")
    assert load_state(tmp_path / "nobase.safetensors")["body.1.num_batches_tracked"].item() == 100


# -------------------------------------------------------------------------------------------------- TIES

THETA0 = {"a": torch.tensor([1.0, 2.0, -1.0, 0.5]), "b": torch.tensor([0.25, -2.0])}
TAU1 = {"a": torch.tensor([3.0, -1.0, 2.0, 0.5]), "b": torch.tensor([-4.0, 5.0])}
TAU2 = {"a": torch.tensor([-1.0, -2.0, 4.0, 0.0]), "b": torch.tensor([1.0, -3.0])}

# k = 0.5, worked by hand.
# paper (global over the 6 entries): keep |τ| ≥ the (⌊.5·6⌋ + 1) = 4th largest magnitude, ties included
#   τ1 magnitudes [3, 1, 2, .5 | 4, 5] → 4th largest 2: a [3, 0, 2, 0], b [-4, 5]
#   τ2 magnitudes [1, 2, 4, 0 | 1, 3] → 4th largest 1, tied twice: a [-1, -2, 4, 0], b [1, -3] (5 entries kept)
#   a: Σ = [2, -2, 6, 0], γ = [+, −, +, 0]   b: Σ = [-3, 2], γ = [−, +]
#   entry a3 sums to 0: γ there is the majority sign(Σγ) = sign(1) = +, and no trimmed entry is positive → 0
#   disjoint mean: a [3 (τ2's −1 disagrees), -2, (2 + 4)/2, 0], b [-4, 5]
# mergekit (per tensor, exactly ⌊.5·numel⌋): a keeps 2 of 4 per task, b 1 of 2
#   a: τ1 → [3, 0, 2, 0]   τ2 → [0, -2, 4, 0]   Σ = [3, -2, 6, 0]   → [3, -2, 3, 0]
#   b: τ1 → [0, 5]         τ2 → [0, -3]         Σ = [0, 2]: entry 0 elects + (Σ ≥ 0) but nothing survived → [0, 5]
# fusionbench: the paper's trim and election with a disjoint sum (its default): a [3, -2, 6, 0], b [-4, 5]
MERGED = {
    "paper": {"a": [3.0, -2.0, 3.0, 0.0], "b": [-4.0, 5.0]},
    "mergekit": {"a": [3.0, -2.0, 3.0, 0.0], "b": [0.0, 5.0]},
    "fusionbench": {"a": [3.0, -2.0, 6.0, 0.0], "b": [-4.0, 5.0]},
}


@pytest.mark.parametrize("convention", ["paper", "mergekit", "fusionbench"])
def test_ties_matches_the_hand_computed_two_task_example(tmp_path, convention):
    base = write(THETA0, tmp_path / "base.safetensors", [])
    paths = [write({k: THETA0[k] + tau[k] for k in THETA0}, tmp_path / f"t{i}.safetensors", [])
             for i, tau in enumerate([TAU1, TAU2])]
    lam = 0.5  # scales the disjoint merge: θ = θ0 + λ·τ_m
    method = build_fusion("ties", {"k": 0.5, "lam": lam, "convention": convention}, n=2)
    fuse_files(base, paths, method, tmp_path / "out.safetensors")
    out = load_state(tmp_path / "out.safetensors")
    for k in THETA0:
        want = THETA0[k] + lam * torch.tensor(MERGED[convention][k])
        assert torch.equal(out[k], want), (convention, k, out[k], want)


def test_ties_mergekit_keeps_exactly_k_and_global_conventions_need_prepare():
    ties = Ties(TiesParams(k=0.25, convention="mergekit"), n=1)  # ⌊.25 · 4⌋ = 1 entry, though three tie at |2|
    out = ties.fuse("w", torch.zeros(4), [torch.tensor([2.0, -2.0, 2.0, 1.0])])
    assert out.tolist() == [2.0, 0.0, 0.0, 0.0]  # the first of the ties in index order
    with pytest.raises(RuntimeError, match="prepare"):
        Ties(TiesParams(), n=1).fuse("w", torch.zeros(2), [torch.ones(2)])


def test_ties_disjoint_mean_ignores_tasks_that_did_not_move_an_entry():
    ties = Ties(TiesParams(k=1.0, convention="mergekit"), n=2)
    # τ1 = [1, 2, 0], τ2 = [3, 0, 0]: entry 0 averages both, entry 1 only τ1 (a zero does not dilute), entry 2 none
    out = ties.fuse("w", torch.ones(3), [torch.tensor([2.0, 3.0, 1.0]), torch.tensor([4.0, 1.0, 1.0])])
    assert out.tolist() == [3.0, 3.0, 1.0]


def test_dare_drops_and_rescales_deterministically(family, tmp_path):
    base, paths, bufs = family
    theta0, theta1 = load_state(base), load_state(paths[0])
    method = build_fusion("task_arithmetic", {"lam": 1.0, "dare": 0.5, "seed": 3}, n=1)
    fuse_files(base, paths[:1], method, tmp_path / "d1.safetensors")
    fuse_files(base, paths[:1], method, tmp_path / "d2.safetensors")
    o1, o2 = load_state(tmp_path / "d1.safetensors"), load_state(tmp_path / "d2.safetensors")
    k = "body.0.weight"
    assert torch.equal(o1[k], o2[k])
    tau, got = (theta1[k] - theta0[k]).double(), (o1[k] - theta0[k]).double()
    dropped, kept = got.abs() < 1e-6, (got - 2 * tau).abs() < 1e-5  # each entry: 0 or 2τ
    assert bool((dropped | kept).all()) and 0 < int(dropped.sum()) < tau.numel()


# -------------------------------------------------------------------------------------------------- bad input

def test_bad_fusion_inputs_name_the_value_and_the_fix(family, tmp_path):
    base, paths, _ = family
    with pytest.raises(BenchError, match=r"unknown fusion method 'tie'.*did you mean 'ties'.*valid: .*mean"):
        build_fusion("tie", {}, 3)
    with pytest.raises(BenchError, match=r"weights \[0\.5, 0\.5\] has 2 values for 3 checkpoints"):
        build_fusion("weighted", {"weights": [0.5, 0.5]}, 3)
    with pytest.raises(BenchError, match=r"negative or non-finite values \[-0\.2\].*>= 0"):
        build_fusion("weighted", {"weights": [0.6, 0.6, -0.2]}, 3)
    with pytest.raises(BenchError, match="sum to 0"):
        build_fusion("weighted", {"weights": [0, 0, 0]}, 3)
    with pytest.raises(BenchError, match="missing required key 'weights'"):
        build_fusion("weighted", {}, 3)
    with pytest.raises(BenchError, match=r"k=0"):
        build_fusion("ties", {"k": 0}, 3)
    with pytest.raises(BenchError, match=r"unknown key 'lambda'.*valid keys here: .*lam"):
        build_fusion("task_arithmetic", {"lambda": 0.3}, 3)
    with pytest.raises(BenchError, match="needs the pre-trained checkpoint"):
        fuse_files(None, paths, build_fusion("ties", {}, 3), tmp_path / "o.safetensors")
    with pytest.raises(BenchError, match="built for 2 checkpoints but got 3"):
        fuse_files(base, paths, build_fusion("mean", {}, 2), tmp_path / "o.safetensors")
    with pytest.raises(BenchError, match="does not exist"):
        fuse_files(base, [*paths[:2], tmp_path / "nope.safetensors"], build_fusion("mean", {}, 3),
                   tmp_path / "o.safetensors")
    other = write({"x": torch.zeros(2)}, tmp_path / "other.safetensors", [])
    with pytest.raises(BenchError, match="same architecture"):
        fuse_files(base, [*paths[:2], other], build_fusion("mean", {}, 3), tmp_path / "o.safetensors")
    state = load_state(paths[0])
    state["body.0.weight"] = torch.zeros(5, 3)
    wrong = write(state, tmp_path / "wrong.safetensors", [])
    with pytest.raises(BenchError, match=r"'body\.0\.weight' has shape \[5, 3\]"):
        fuse_files(base, [*paths[:2], wrong], build_fusion("mean", {}, 3), tmp_path / "o.safetensors")
    assert not (tmp_path / "o.safetensors").exists()
