"""TIES, DARE-TIES and Breadcrumbs against the real libraries, and the rules that make each convention.

The fixtures in tests/fixtures/fusion were written by scripts/make_fusion_fixtures.py, which ran FusionBench 0.2.33's
and mergekit 0.1.5's own merge code (and the TIES authors' functions, as FusionBench ships them) on θ0 and three
task models. DARE settings are compared with the masks held equal, not merely in distribution: the script seeded
torch's global generator, right before each library draw, with the seed bench's mask of that (task, tensor) uses.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bench.checkpoint import load_state, save_state
from bench.cli import main
from bench.errors import BenchError
from bench.fusion import FUSIONS, build_fusion, fuse_files
from bench.fusion.base import CHUNK
from bench.fusion.methods import floor_times, keep_count

FIXTURES = Path(__file__).parent / "fixtures" / "fusion"
META = json.loads((FIXTURES / "settings.json").read_text())
SETTINGS = {s["id"]: s for s in META["settings"]}
TASKS = [FIXTURES / f"task{i}.safetensors" for i in range(3)]
THETA0 = FIXTURES / "theta0.safetensors"
TOL = 1e-6


def fuse(tmp_path: Path, method: str, params: dict, base: Path = THETA0, tasks: list[Path] = TASKS
         ) -> dict[str, torch.Tensor]:
    out = tmp_path / f"{method}.safetensors"
    fuse_files(base, tasks, build_fusion(method, params, len(tasks)), out)
    return load_state(out)


def max_error(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> float:
    assert got.keys() == want.keys()
    return max(float((got[k].double() - want[k].double()).abs().max()) for k in want)


# -------------------------------------------------------------------------------------------------- the fixtures

@pytest.mark.parametrize("sid", sorted(SETTINGS))
def test_bench_reproduces_the_library_output(tmp_path, sid):
    s = SETTINGS[sid]
    want = load_file(str(FIXTURES / f"{sid}.safetensors"))
    got = fuse(tmp_path, s["method"], s["params"])
    err = max_error(got, want)
    assert err <= TOL, f"{sid}: max abs error {err:.3g} vs {s['library']}: {s['call']}"


def test_fixtures_are_small_and_record_the_library_versions():
    assert sum(f.stat().st_size for f in FIXTURES.iterdir()) < 200 * 1024
    assert META["versions"]["fusion-bench"] == "0.2.33" and META["versions"]["mergekit"] == "0.1.5"
    assert {(s["method"], s["params"].get("convention", "mergekit")) for s in SETTINGS.values()} == {
        ("ties", "paper"), ("ties", "fusionbench"), ("ties", "mergekit"), ("dare_ties", "fusionbench"),
        ("dare_ties", "mergekit"), ("breadcrumbs", "mergekit")}


def test_the_fixtures_exercise_ties_at_the_global_threshold():
    # the paper keeps ⌊k·d⌋ + 1 entries plus the ties; two were planted at the threshold of task 0 (k = .2), task 1
    s = SETTINGS["ties_paper_k0.2_lam1.0"]["exercised"]
    assert s["keep_rule"] == keep_count(0.2, 1980, "paper") == 397 and s["kept_per_task"] == [399, 397, 397]


def test_fusionbench_with_mean_is_the_paper_and_conventions_differ():
    """Library facts read off the fixtures: FusionBench's TIES with merge_func='mean' *is* the authors' code (bit for
    bit); its default 'sum', and mergekit's per-tensor trim, give other models."""
    paper = load_file(str(FIXTURES / "ties_paper_k0.2_lam1.0.safetensors"))
    fb_mean = load_file(str(FIXTURES / "ties_fusionbench_k0.2_lam1.0_mean.safetensors"))
    assert all(torch.equal(paper[k], fb_mean[k]) for k in paper)
    mk = load_file(str(FIXTURES / "ties_mergekit_k0.2_lam1.0.safetensors"))
    assert max_error(paper, mk) > 0.1


# -------------------------------------------------------------------------------------------------- keep counts

def test_keep_count_of_each_convention_is_exact_at_large_d():
    d = 86_000_000  # k = 0.28: ⌊k·d⌋ = 24,080,000 exactly; the old ⌈…⌉ with a 1e-9 margin gave 24,080,001
    assert floor_times(0.28, d) == 24_080_000
    assert keep_count(0.28, d, "paper") == keep_count(0.28, d, "fusionbench") == 24_080_001  # kthvalue's + 1
    assert keep_count(0.28, d, "mergekit") == 24_080_000
    # where float64 rounds k·d below an integer the libraries' int(k * d) is one less than the exact ⌊k·d⌋
    assert int(0.29 * 100) == 28 and floor_times(0.29, 100) == 29
    assert keep_count(0.001, 100, "mergekit") == 1 and keep_count(0.001, 100, "paper") == 1  # at least one
    assert keep_count(1.0, 7, "paper") == keep_count(1.0, 7, "mergekit") == 7  # the libraries' k = 1: all


def _one_task(tmp_path, tau: list[float], params: dict, method: str = "ties") -> list[float]:
    base = tmp_path / "b.safetensors"
    save_state({"w": torch.zeros(len(tau))}, base)
    save_state({"w": torch.tensor(tau)}, tmp_path / "t.safetensors")
    return fuse(tmp_path, method, params, base, [tmp_path / "t.safetensors"])["w"].tolist()


@pytest.mark.parametrize("k,paper,mergekit", [
    # τ = [2, -2, 2, 1, .5]: three magnitudes tie at 2
    (0.2, [2, -2, 2, 0, 0], [2, 0, 0, 0, 0]),    # ⌊1⌋: paper's 2nd largest is 2, all ties kept; mergekit keeps 1
    (0.4, [2, -2, 2, 0, 0], [2, -2, 0, 0, 0]),   # ⌊2⌋: paper 3 + ties; mergekit the first two in index order
    (0.6, [2, -2, 2, 1, 0], [2, -2, 2, 0, 0]),   # ⌊3⌋: paper keeps 4 (down to |1|), mergekit 3
    (0.1, [2, -2, 2, 0, 0], [2, 0, 0, 0, 0]),    # ⌊0.5⌋ = 0: paper's largest + ties, mergekit max(1, 0) = 1
])
def test_keep_count_and_ties_on_a_hand_made_vector(tmp_path, k, paper, mergekit):
    tau = [2.0, -2.0, 2.0, 1.0, 0.5]
    assert _one_task(tmp_path, tau, {"k": k, "convention": "paper"}) == paper
    assert _one_task(tmp_path, tau, {"k": k, "convention": "fusionbench"}) == paper  # one task: sum = mean
    assert _one_task(tmp_path, tau, {"k": k, "convention": "mergekit"}) == mergekit


def test_paper_trims_over_the_whole_vector_mergekit_within_each_tensor(tmp_path):
    base = tmp_path / "b.safetensors"
    save_state({"a": torch.zeros(4), "b": torch.zeros(4)}, base)
    save_state({"a": torch.tensor([8.0, 7, 6, 5]), "b": torch.tensor([0.4, 0.3, 0.2, 0.1])}, tmp_path / "t.safetensors")
    paper = fuse(tmp_path, "ties", {"k": 0.25, "convention": "paper"}, base, [tmp_path / "t.safetensors"])
    mk = fuse(tmp_path, "ties", {"k": 0.25, "convention": "mergekit"}, base, [tmp_path / "t.safetensors"])
    assert paper["a"].tolist() == [8, 7, 6, 0] and paper["b"].tolist() == [0, 0, 0, 0]  # ⌊.25·8⌋ + 1 = 3 overall
    assert mk["a"].tolist() == [8, 0, 0, 0] and torch.allclose(mk["b"], torch.tensor([0.4, 0, 0, 0]))  # 1 per tensor


def test_exact_counts_with_ties_across_chunks(tmp_path):
    """mergekit's exact count and Breadcrumbs' window, with ties spread over several streamed chunks, match a stable
    sort of the whole tensor (the order mergekit's argsort gives when it happens to be stable)."""
    n = 2 * CHUNK + 1234
    g = torch.Generator().manual_seed(0)
    tau = (torch.randint(1, 12, (n,), generator=g) * torch.where(torch.rand(n, generator=g) < 0.5, -1, 1)).float()
    base = tmp_path / "b.safetensors"
    save_state({"w": torch.zeros(n)}, base)
    save_state({"w": tau}, tmp_path / "t.safetensors")
    mags = tau.abs()
    k = 0.37
    keep = keep_count(k, n, "mergekit")
    want = torch.zeros(n)
    idx = torch.sort(mags, descending=True, stable=True).indices[:keep]
    want[idx] = tau[idx]
    got = fuse(tmp_path, "ties", {"k": k, "convention": "mergekit"}, base, [tmp_path / "t.safetensors"])["w"]
    assert int((got != 0).sum()) == keep and torch.equal(got, want)
    density, gamma = 0.55, 0.07
    target, top = floor_times(density, n), floor_times(gamma, n)
    bot = n - target - top
    idx = torch.sort(mags, stable=True).indices[bot:bot + target]
    want = torch.zeros(n)
    want[idx] = tau[idx]
    got = fuse(tmp_path, "breadcrumbs", {"density": density, "gamma": gamma, "lam": 1.0}, base,
               [tmp_path / "t.safetensors"])["w"]
    assert int((got != 0).sum()) == target and torch.equal(got, want)


# -------------------------------------------------------------------------------------------------- zero sign sums

def _two_tasks(tmp_path, tau1, tau2, params, method="ties"):
    base = tmp_path / "b.safetensors"
    save_state({"w": torch.zeros(len(tau1))}, base)
    paths = []
    for i, t in enumerate([tau1, tau2]):
        save_state({"w": torch.tensor(t)}, tmp_path / f"t{i}.safetensors")
        paths.append(tmp_path / f"t{i}.safetensors")
    return fuse(tmp_path, method, params, base, paths)["w"].tolist()


def test_zero_sign_sum_rule_of_each_convention(tmp_path):
    # entry 0 sums to exactly 0; entries 1–3 elect +, −, − (paper's majority over the vector: Σγ = −1 → −)
    t1, t2 = [1.0, 2.0, -3.0, -2.0], [-1.0, 1.0, -1.0, -2.0]
    paper = _two_tasks(tmp_path, t1, t2, {"k": 1.0, "convention": "paper"})
    assert paper == [-1.0, 1.5, -2.0, -2.0]  # entry 0: the majority sign −, so τ2's −1
    fb = _two_tasks(tmp_path, t1, t2, {"k": 1.0, "convention": "fusionbench"})  # default: disjoint sum
    assert fb == [-1.0, 3.0, -4.0, -4.0]
    mk = _two_tasks(tmp_path, t1, t2, {"k": 1.0, "convention": "mergekit"})
    assert mk == [1.0, 1.5, -2.0, -2.0]  # Σ ≥ 0 elects +: τ1's +1
    # the paper's majority is itself 0 when the elected signs cancel: then, as in its disjoint_merge
    # (torch.where(γ > 0, τ > 0, τ < 0)), a zero γ selects the negative entries
    assert _two_tasks(tmp_path, [1.0, 2.0, -2.0], [-1.0, 0.0, 0.0], {"k": 1.0, "convention": "paper"}) == \
        [-1.0, 2.0, -2.0]


def test_an_entry_no_task_moved_stays_at_theta0(tmp_path):
    for conv in ["paper", "fusionbench", "mergekit"]:
        assert _two_tasks(tmp_path, [0.0, 1.0], [0.0, 1.0], {"k": 1.0, "convention": conv})[0] == 0.0


# -------------------------------------------------------------------------------------------------- k and errors

@pytest.mark.parametrize("method,params,msg", [
    ("ties", {"k": 20}, "fusion 'ties': k=20 looks like a percentage; k is the fraction of entries kept, in (0, 1] "
                        "(as in FusionBench and mergekit): use k=0.2"),
    ("dare_ties", {"k": 12.5}, "fusion 'dare_ties': k=12.5 looks like a percentage; k is the fraction of entries "
                               "kept, in (0, 1] (as in FusionBench and mergekit): use k=0.125"),
    ("breadcrumbs", {"density": 90}, "fusion 'breadcrumbs': density=90 looks like a percentage; density is the "
                                     "fraction of entries kept, in (0, 1] (as in FusionBench and mergekit): use "
                                     "density=0.9"),
])
def test_a_percentage_k_fails_at_construction_naming_the_fraction(method, params, msg):
    with pytest.raises(BenchError) as e:
        build_fusion(method, params, 3)
    assert str(e.value) == msg


def test_the_cli_rejects_a_percentage_k_before_any_work(capsys, tmp_path):
    code = main(["run", "suite=synthetic", "strategy=fuse_then_joint", "strategy.fusion=ties",
                 "strategy.fusion_params={k:20}", f"results_dir={tmp_path}"])
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line]
    assert code == 2 and len(lines) == 1 and "use k=0.2" in lines[0], err
    assert not any(tmp_path.rglob("*.safetensors"))


# -------------------------------------------------------------------------------------------------- identities

@pytest.mark.parametrize("conv", ["paper", "fusionbench", "mergekit"])
def test_dare_ties_with_p_zero_is_ties(tmp_path, conv):
    k = 1.0 if conv == "mergekit" else 0.2
    ties = fuse(tmp_path, "ties", {"k": k, "lam": 0.7, "convention": conv})
    dare = fuse(tmp_path, "dare_ties", {"dare": 0.0, "k": k, "lam": 0.7, "convention": conv,
                                        "merge": "sum" if conv == "fusionbench" else "mean"})
    assert all(torch.equal(ties[n], dare[n]) for n in ties)


@pytest.mark.parametrize("conv", ["paper", "fusionbench", "mergekit"])
def test_ties_with_dare_is_dare_ties(tmp_path, conv):
    params = {"dare": 0.3, "k": 0.5, "lam": 1.0, "convention": conv, "merge": "mean", "seed": 4}
    a, b = fuse(tmp_path, "ties", params), fuse(tmp_path, "dare_ties", params)
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_breadcrumbs_without_sparsification_is_task_arithmetic(tmp_path):
    ta = fuse(tmp_path, "task_arithmetic", {"lam": 0.4})
    for params in [{"density": 1.0, "gamma": 0.0}, {"density": 1.0, "gamma": 0.5}]:  # density 1: mergekit no-op
        bc = fuse(tmp_path, "breadcrumbs", {**params, "lam": 0.4})
        assert max_error(bc, ta) == 0.0, params


def test_breadcrumbs_drops_the_outliers_and_the_smallest(tmp_path):
    # n = 10, density .5 → keep 5; gamma .2 → the 2 largest go; so the 3 smallest go too
    tau = [10.0, -9.0, 1.0, -2.0, 3.0, -4.0, 5.0, 0.5, -0.25, 6.0]
    got = _one_task(tmp_path, tau, {"density": 0.5, "gamma": 0.2, "lam": 1.0}, "breadcrumbs")
    assert got == [0.0, 0.0, 0.0, -2.0, 3.0, -4.0, 5.0, 0.0, 0.0, 6.0]


def test_dare_masks_are_reproducible_and_independent_of_tensor_order(tmp_path):
    theta0, tasks = load_state(THETA0), [load_state(t) for t in TASKS]
    names = list(theta0)[::-1]
    rev = tmp_path / "rev"
    rev.mkdir()
    save_state({n: theta0[n] for n in names}, rev / "b.safetensors")
    for i, t in enumerate(tasks):
        save_state({n: t[n] for n in names}, rev / f"t{i}.safetensors")
    for conv in ["paper", "fusionbench", "mergekit"]:
        params = {"dare": 0.5, "convention": conv, "seed": 7}
        a = fuse(tmp_path, "dare_ties", params)
        b = fuse(tmp_path, "dare_ties", params, rev / "b.safetensors", [rev / f"t{i}.safetensors" for i in range(3)])
        c = fuse(tmp_path, "dare_ties", {**params, "seed": 8})
        assert all(torch.equal(a[n], b[n]) for n in a), conv
        assert max_error(a, c) > 0.01, conv  # another seed, another mask


def test_mergekit_dare_rescales_to_the_l1_norm_of_each_tensor(tmp_path):
    """One task, no trim, λ = 1: the fused τ keeps a 1 − p share of the entries and exactly the L1 norm of τ."""
    theta0, task = load_state(THETA0), load_state(TASKS[0])
    got = fuse(tmp_path, "dare_ties", {"dare": 0.5, "convention": "mergekit"}, THETA0, TASKS[:1])
    for n in theta0:
        tau, out = (task[n] - theta0[n]).double(), (got[n] - theta0[n]).double()
        assert abs(float(out.abs().sum() - tau.abs().sum())) < 1e-5 * float(tau.abs().sum()), n
    paper = fuse(tmp_path, "dare_ties", {"dare": 0.5, "convention": "paper"}, THETA0, TASKS[:1])
    n = "emb.weight"  # the paper rescale is 1/(1 − p) = 2 on every kept entry
    tau, out = (task[n] - theta0[n]).double(), (paper[n] - theta0[n]).double()
    kept = out != 0
    assert torch.allclose(out[kept], 2 * tau[kept], atol=1e-6) and 0.3 < float(kept.double().mean()) < 0.7


def test_the_new_methods_are_registered_and_describe_their_merge():
    assert {"ties", "dare_ties", "breadcrumbs"} <= set(FUSIONS.names())
    assert build_fusion("ties", {"convention": "fusionbench"}, 2).describe()["merge"] == "sum"
    assert build_fusion("ties", {}, 2).describe() == {"method": "ties", "k": 0.2, "lam": 1.0, "convention": "paper",
                                                      "merge": "mean", "dare": 0.0, "seed": 0}
    assert build_fusion("dare_ties", {"convention": "mergekit"}, 2).describe()["merge"] == "sum"
