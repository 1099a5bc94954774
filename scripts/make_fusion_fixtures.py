"""Reference outputs of TIES, DARE-TIES and Model Breadcrumbs from the real FusionBench and mergekit code.

Writes ``tests/fixtures/fusion/``: the inputs (``theta0``, ``task0..2.safetensors``: θ0 and three fine-tunes of a
small Embedding/Linear/LayerNorm net, 1,980 float32 entries), one ``<setting id>.safetensors`` per setting with the
library's merged state dict, and ``settings.json`` (for each setting: the bench method and params, the library call
that made it, and what it exercised; plus the library versions). ``tests/test_fusion_conventions.py`` fuses the same
inputs with bench and compares.

Run it in a throwaway venv that has the libraries; they are not dependencies of bench. From the repository root:

    python3 -m venv /tmp/refvenv
    # reuse the project's torch (and pydantic, transformers, ...) instead of downloading them again
    echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/refvenv/lib/python3.11/site-packages/zz_main_venv.pth
    /tmp/refvenv/bin/pip install --no-deps fusion-bench==0.2.33 mergekit==0.1.5 \
        accelerate bidict lightning lightning-utilities torchmetrics peft
    /tmp/refvenv/bin/python scripts/make_fusion_fixtures.py

(made with torch 2.14.1; the versions used are recorded in settings.json). The output is deterministic.

What the data exercises, on purpose:

* values are dyadic (θ0 on a 2^-8 grid, τ on a 2^-20 grid, |τ| < 2), so θ_i − θ0 and the sums of three task
  vectors are exact in float32: the libraries (float32) and bench (float64) see the same τ, the same ties and the
  same zero sums;
* exact zero sign sums (+a, −a, 0 and a, a, −2a) on large entries that survive every trim, and entries no task moved;
* ties: four equal magnitudes in an 8-entry LayerNorm weight (mergekit keeps the first ones, breadcrumbs cuts through
  them), and ties planted at the paper's global threshold (task 0 at k = 0.2, task 1 at k = 0.1), so ⌊k·d⌋ + 1 + 2
  entries survive there;
* tensor scales that differ by 10×, so global (paper) and per-tensor (mergekit) trimming disagree.

DARE masks: bench draws the mask of task i on tensor ``name`` (every tensor here is one chunk) from
``torch.Generator().manual_seed(hash_seed(seed, i, name, 0))``. The libraries draw from torch's global generator, so
this script seeds the global generator with that same number right before each of their draws (a wrapper around
FusionBench's ``module_random_drop_`` and mergekit's ``sparsify``); the library code that draws and applies the mask
runs unchanged. The comparison is therefore exact, masks included.
"""

from __future__ import annotations

import json
import platform
import sys
from fractions import Fraction
from importlib.metadata import version
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.fusion.methods import hash_seed  # noqa: E402  (the same seed function bench's DARE uses)

OUT = ROOT / "tests" / "fixtures" / "fusion"
N_TASKS = 3
SEED = 0  # the DARE seed param of every DARE setting


class Net(nn.Module):
    """Shapes of a tiny encoder: an embedding, two linears, a LayerNorm (no buffers: see docs/fusion.md)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(32, 24)
        self.fc1 = nn.Linear(24, 32)
        self.fc2 = nn.Linear(32, 12)
        self.norm = nn.LayerNorm(8)


#: per-tensor scale of the task vectors (10× apart, so global and per-tensor trims differ)
SCALES = {"emb.weight": 0.05, "fc1.weight": 0.1, "fc1.bias": 0.02, "fc2.weight": 0.2, "fc2.bias": 0.5,
          "norm.weight": 0.1, "norm.bias": 0.05}


def grid(t: torch.Tensor, bits: int) -> torch.Tensor:
    return torch.round(t * 2.0**bits) / 2.0**bits


def make_inputs() -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(20231206)
    names = list(Net().state_dict())
    theta0 = {k: grid(torch.randn(Net().state_dict()[k].shape, generator=g), 8) for k in names}
    taus = [{k: grid(torch.randn(v.shape, generator=g) * SCALES[k], 20).clamp(-1.5, 1.5) for k, v in theta0.items()}
            for _ in range(N_TASKS)]
    # entries a fine-tune did not move
    taus[2]["emb.weight"].view(-1)[::7] = 0.0
    taus[1]["fc1.bias"][:4] = 0.0
    # exact zero sign sums on entries large enough to survive every trim
    w = [t["fc2.weight"].view(-1) for t in taus]
    for j, (a, b, c) in enumerate([(0.75, -0.75, 0.0), (0.5, 0.5, -1.0), (-0.625, 0.625, 0.0), (1.25, -1.25, 0.0),
                                   (-0.5, -0.5, 1.0), (0.875, 0.0, -0.875)]):
        w[0][10 * j], w[1][10 * j], w[2][10 * j] = a, b, c
    # four equal magnitudes in an 8-entry tensor, with mixed signs
    taus[0]["norm.weight"] = torch.tensor([5, -5, 0.125, 1.5, 5, -0.75, -5, 0.25]) / 16
    taus[1]["norm.weight"] = torch.tensor([-3, 3, 3, -3, 0.75, 3, 0.125, 1.5]) / 16
    # ties at the paper's global threshold: the two magnitudes just below it are raised to it
    for i, k in [(0, 0.2), (1, 0.1)]:
        flat = torch.cat([v.reshape(-1) for v in taus[i].values()])
        d = flat.numel()
        order = torch.sort(flat.abs(), stable=True).indices
        rank = d - floor_times(k, d)  # kthvalue's rank (1-based)
        t = float(flat.abs()[order[rank - 1]])
        for pos in order[rank - 3:rank - 1].tolist():
            flat[pos] = t if flat[pos] >= 0 else -t
        _unflatten(flat, taus[i])
    tasks = [{k: theta0[k] + tau[k] for k in theta0} for tau in taus]
    for tau, th in zip(taus, tasks):  # the construction is exact: the libraries will see exactly these τ
        assert all(torch.equal(th[k] - theta0[k], tau[k]) for k in theta0)
    return theta0, tasks


def _unflatten(flat: torch.Tensor, into: dict[str, torch.Tensor]) -> None:
    s = 0
    for k, v in into.items():
        into[k] = flat[s:s + v.numel()].reshape(v.shape).clone()
        s += v.numel()


def floor_times(x: float, n: int) -> int:
    f = Fraction(str(x))
    return f.numerator * n // f.denominator


def net(state: dict[str, torch.Tensor]) -> Net:
    m = Net()
    m.load_state_dict(state)
    return m


# ---------------------------------------------------------------------------------------------- the libraries

def paper(theta0, tasks, k, lam):
    """The TIES authors' pipeline (ties-merging ``merge_methods``: topk, mass, dis-mean; θ0 + λ·τ_m), through the
    verbatim copies of their functions that FusionBench ships (ties_merging_utils)."""
    from fusion_bench.method.ties_merging.ties_merging_utils import (
        state_dict_to_vector,
        ties_merging,
        vector_to_state_dict,
    )
    flat_ptm = state_dict_to_vector(theta0)
    tv = torch.vstack([state_dict_to_vector(t) for t in tasks]) - flat_ptm
    merged = ties_merging(tv, reset_thresh=k, merge_func="dis-mean")
    return dict(vector_to_state_dict(flat_ptm + lam * merged, {n: v.clone() for n, v in theta0.items()}))


def fusionbench_ties(theta0, tasks, k, lam, merge_func):
    from fusion_bench.method.ties_merging.ties_merging import TiesMergingAlgorithm
    algo = TiesMergingAlgorithm(scaling_factor=lam, threshold=k, remove_keys=[], merge_func=merge_func)
    pool = {"_pretrained_": net(theta0), **{f"task{i}": net(t) for i, t in enumerate(tasks)}}
    return algo.run(pool).state_dict()


def fusionbench_dare_ties(theta0, tasks, p, k, lam, merge_func):
    import fusion_bench.method.dare.ties_merging as dare_module
    from fusion_bench.method.dare.utils import param_random_drop_
    from fusion_bench.modelpool import BaseModelPool
    real, calls = dare_module.module_random_drop_, []

    def seeded_drop(tv, sparsity_level, rescale):  # FusionBench's own drop, after seeding the global generator
        i = len(calls)
        calls.append(i)
        for name, param in tv.named_parameters():
            torch.manual_seed(hash_seed(SEED, i, name, 0))
            param_random_drop_(param, sparsity_level, rescale=rescale)

    dare_module.module_random_drop_ = seeded_drop
    try:
        algo = dare_module.DareTiesMerging(sparsity_ratio=p, only_on_linear_weights=False, rescale=True,
                                           scaling_factor=lam, threshold=k, remove_keys=[], merge_func=merge_func)
        pool = BaseModelPool({"_pretrained_": net(theta0), **{f"task{i}": net(t) for i, t in enumerate(tasks)}})
        with torch.no_grad():
            out = algo.run(pool).state_dict()
    finally:
        dare_module.module_random_drop_ = real
    assert calls == list(range(N_TASKS))
    return out


def mergekit(theta0, tasks, method, parameters):
    """mergekit's in-memory API; a random sparsification is seeded per (task, tensor) as bench seeds it."""
    import mergekit.merge_methods.generalized_task_arithmetic as gta
    from mergekit.merge_methods.api import merge_state_dicts
    real_sparsify, real_group = gta.sparsify, gta.GeneralizedTaskArithmeticMerge.merge_group
    ctx = {"name": None, "i": 0}

    def merge_group(self, group, /, **params):
        ctx.update(name=group.metadata.name, i=0)
        return real_group(self, group, **params)

    def sparsify(tensor, density, method, **kw):
        if method == "random":
            torch.manual_seed(hash_seed(SEED, ctx["i"], ctx["name"], 0))
        ctx["i"] += 1
        return real_sparsify(tensor, density=density, method=method, **kw)

    gta.sparsify, gta.GeneralizedTaskArithmeticMerge.merge_group = sparsify, merge_group
    try:
        models = {"base": theta0, **{f"task{i}": t for i, t in enumerate(tasks)}}
        return merge_state_dicts(models, method, parameters=parameters, base="base")
    finally:
        gta.sparsify, gta.GeneralizedTaskArithmeticMerge.merge_group = real_sparsify, real_group


# ---------------------------------------------------------------------------------------------- settings

def settings() -> list[dict]:
    """id, bench method + params, and the library call (a function of (theta0, tasks)) with its description."""
    out = []

    def add(id_, method, params, library, call, fn):
        out.append({"id": id_, "method": method, "params": params, "library": library, "call": call, "fn": fn})

    for k, lam in [(0.2, 1.0), (0.1, 0.3), (0.5, 0.7)]:
        add(f"ties_paper_k{k}_lam{lam}", "ties", {"k": k, "lam": lam, "convention": "paper"},
            "TIES authors' functions (fusion_bench ties_merging_utils)",
            f"ties_merging(tv, reset_thresh={k}, merge_func='dis-mean'); θ0 + {lam}·τ_m",
            lambda a, b, k=k, lam=lam: paper(a, b, k, lam))
    for k, lam, mf in [(0.2, 0.3, "sum"), (0.1, 1.0, "sum"), (0.2, 1.0, "mean")]:
        params = {"k": k, "lam": lam, "convention": "fusionbench"} | ({"merge": "mean"} if mf == "mean" else {})
        add(f"ties_fusionbench_k{k}_lam{lam}_{mf}", "ties", params, "FusionBench TiesMergingAlgorithm",
            f"TiesMergingAlgorithm(scaling_factor={lam}, threshold={k}, remove_keys=[], merge_func={mf!r})",
            lambda a, b, k=k, lam=lam, mf=mf: fusionbench_ties(a, b, k, lam, mf))
    for k, lam in [(0.2, 1.0), (0.1, 0.5), (0.25, 1.0)]:
        add(f"ties_mergekit_k{k}_lam{lam}", "ties", {"k": k, "lam": lam, "convention": "mergekit"},
            "mergekit ties", f"merge_state_dicts(..., 'ties', density={k}, weight=1, lambda={lam})",
            lambda a, b, k=k, lam=lam: mergekit(a, b, "ties", {"density": k, "weight": 1.0, "lambda": lam}))
    for p, k, lam, mf in [(0.5, 0.2, 0.5, "sum"), (0.25, 0.5, 1.0, "mean")]:
        params = {"dare": p, "k": k, "lam": lam, "convention": "fusionbench", "seed": SEED}
        params |= {"merge": "mean"} if mf == "mean" else {}
        add(f"dare_ties_fusionbench_p{p}_k{k}_{mf}", "dare_ties", params, "FusionBench DareTiesMerging",
            f"DareTiesMerging(sparsity_ratio={p}, rescale=True, scaling_factor={lam}, threshold={k}, "
            f"merge_func={mf!r})", lambda a, b, p=p, k=k, lam=lam, mf=mf: fusionbench_dare_ties(a, b, p, k, lam, mf))
    for p, lam, normalize in [(0.5, 1.0, False), (0.25, 0.5, False), (0.5, 1.0, True)]:
        params = {"dare": p, "lam": lam, "convention": "mergekit", "seed": SEED}
        params |= {"merge": "mean"} if normalize else {}
        add(f"dare_ties_mergekit_p{p}_lam{lam}" + ("_normalize" if normalize else ""), "dare_ties", params,
            "mergekit dare_ties", f"merge_state_dicts(..., 'dare_ties', density={1 - p}, weight=1, lambda={lam}, "
            f"normalize={normalize})",
            lambda a, b, p=p, lam=lam, nz=normalize: mergekit(
                a, b, "dare_ties", {"density": 1 - p, "weight": 1.0, "lambda": lam, "normalize": nz}))
    for density, gamma, lam, ties in [(0.5, 0.125, 0.3, False), (0.8, 0.05, 1.0, False), (0.6, 0.125, 1.0, True)]:
        method = "breadcrumbs_ties" if ties else "breadcrumbs"
        params = {"density": density, "gamma": gamma, "lam": lam} | ({"elect_sign": True} if ties else {})
        add(f"{method}_mergekit_d{density}_g{gamma}", "breadcrumbs", params, f"mergekit {method}",
            f"merge_state_dicts(..., {method!r}, density={density}, gamma={gamma}, weight=1, lambda={lam})",
            lambda a, b, d=density, g=gamma, lam=lam, m=method: mergekit(
                a, b, m, {"density": d, "gamma": g, "weight": 1.0, "lambda": lam}))
    return out


# ---------------------------------------------------------------------------------------------- checks of the data

def check_exact_regime(theta0, tasks, s: dict) -> dict:
    """Assert the setting is one where the comparison is meaningful; return what it exercises."""
    p = s["params"]
    numels = {k: v.numel() for k, v in theta0.items()}
    d = sum(numels.values())
    taus = [{k: t[k] - theta0[k] for k in theta0} for t in tasks]
    info: dict = {}
    for x in [p.get("k"), p.get("density"), p.get("gamma")]:
        if x is not None and x < 1:  # the libraries' int(x * n) equals the exact ⌊x·n⌋ here (see floor_times)
            assert all(int(x * n) == floor_times(x, n) for n in [d, *numels.values()]), (s["id"], x)
    if s["method"] == "ties" and p["convention"] != "mergekit":
        k = p["k"]
        kept = [int((torch.cat([v.reshape(-1) for v in tau.values()]).abs() >=
                     torch.cat([v.reshape(-1) for v in tau.values()]).abs().kthvalue(d - floor_times(k, d)).values)
                    .sum()) for tau in taus]
        info["kept_per_task"], info["keep_rule"] = kept, floor_times(k, d) + 1
    sparsify = {"ties": "magnitude", "breadcrumbs": "outliers"}.get(s["method"])
    if p.get("convention", "mergekit") == "mergekit" and sparsify:
        # mergekit's argsort is not stable: the tied entries it keeps are the lowest-index ones only when its sort
        # orders them like a stable sort. Check that here, tensor by tensor.
        for tau in taus:
            for name, v in tau.items():
                w = v.abs().reshape(-1).float()
                if sparsify == "magnitude":
                    q = max(1, int(p["k"] * w.numel()))
                    a = set(torch.argsort(w, descending=True)[:q].tolist())
                    b = set(torch.sort(w, descending=True, stable=True).indices[:q].tolist())
                else:
                    tgt, top = int(p["density"] * w.numel()), int(p["gamma"] * w.numel())
                    bot = max(0, w.numel() - tgt - top)
                    a = set(torch.sort(w).indices[bot:bot + tgt].tolist())
                    b = set(torch.sort(w, stable=True).indices[bot:bot + tgt].tolist())
                assert a == b, f"{s['id']}: mergekit's unstable sort breaks a tie in {name}; change the data"
    return info


def main() -> None:
    theta0, tasks = make_inputs()
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.safetensors"):
        old.unlink()
    save_file(theta0, str(OUT / "theta0.safetensors"))
    for i, t in enumerate(tasks):
        save_file(t, str(OUT / f"task{i}.safetensors"))
    records = []
    for s in settings():
        info = check_exact_regime(theta0, tasks, s)
        got = s["fn"]({k: v.clone() for k, v in theta0.items()}, [{k: v.clone() for k, v in t.items()} for t in tasks])
        got = {k: v.detach().to(torch.float32).contiguous() for k, v in got.items()}
        assert got.keys() == theta0.keys(), s["id"]
        save_file(got, str(OUT / f"{s['id']}.safetensors"))
        records.append({k: s[k] for k in ["id", "method", "params", "library", "call"]} | {"exercised": info})
        print(f"{s['id']:45s} {s['call']}")
    meta = {
        "about": "made by scripts/make_fusion_fixtures.py; inputs theta0 + task0..2, one output file per setting",
        "versions": {p: version(p) for p in ["fusion-bench", "mergekit", "torch", "safetensors"]}
        | {"python": platform.python_version()},
        "dare_seed": "torch.manual_seed(hash_seed(seed, task index, tensor name, 0)) before each library draw",
        "settings": records,
    }
    (OUT / "settings.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    total = sum(f.stat().st_size for f in OUT.iterdir())
    print(f"{len(records)} settings, {total / 1024:.0f} kB in {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
