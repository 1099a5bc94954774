"""Fusion time and memory for N = 2, 4, 8 checkpoints; the store's second run of a finished suite; a fusion-search
trial vs one evaluation pass."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import time

import pytest

from bench.runner import execute, make_plan
from benchmarks.conftest import paired, report

FAST = ["suite=synthetic", "train.epochs=2", "train.max_train_samples=600", "report=false"]


@pytest.mark.parametrize("n", [2, 4, 8])
@pytest.mark.parametrize("method", ["mean", "ties"])
def test_fusion_time_and_memory(benchmark, tmp_path, n, method):
    """Peak extra memory of fusing N checkpoints of ~19 MiB, measured in a fresh process (target ≤ 2× one)."""
    script = textwrap.dedent(f"""
        import json, torch
        from pathlib import Path
        from bench.checkpoint import save_state
        from bench.fusion import build_fusion, fuse_files
        d = Path({str(tmp_path)!r})
        torch.manual_seed(0)
        shapes = [(1024, 1024)] * 4 + [(1024,)] * 4 + [(512, 1024)] * 2
        base = {{f"p{{i}}": torch.randn(s) for i, s in enumerate(shapes)}}
        save_state(base, d / "base.safetensors")
        for k in range({n}):
            save_state({{n: t + 0.01 * torch.randn_like(t) for n, t in base.items()}}, d / f"t{{k}}.safetensors")
        del base
        m = build_fusion({method!r}, {{}}, {n})
        parts = [d / f"t{{k}}.safetensors" for k in range({n})]
        st = fuse_files(d / "base.safetensors", parts, m, d / "out.safetensors")
        print(json.dumps(st))
    """)
    out = {}

    def run():
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        out.update(json.loads(proc.stdout.strip().splitlines()[-1]))

    benchmark.pedantic(run, rounds=1, iterations=1)
    ratio = out["peak_extra_bytes"] / out["checkpoint_bytes"]
    report(benchmark, f"fusion {method} N={n}: peak extra / one checkpoint", ratio, "<= 2.0",
           seconds=round(out["seconds"], 3), checkpoint_mb=round(out["checkpoint_bytes"] / 2**20, 1))
    assert ratio <= 2.0


def test_store_second_run(benchmark, tmp_path):
    """A rerun of a finished suite reads records and trains nothing: ≤ 2 % of the first run."""
    args = [*FAST, "strategy=separate,naive_mtl,fuse_then_joint", f"results_dir={tmp_path}"]
    t0 = time.perf_counter()
    assert execute(make_plan(args), out=io.StringIO()) == 0
    first = time.perf_counter() - t0
    times = []

    def again():
        t = time.perf_counter()
        buf = io.StringIO()
        assert execute(make_plan(args), out=buf) == 0
        assert "0 cell(s) computed" in buf.getvalue()
        times.append(time.perf_counter() - t)

    benchmark.pedantic(again, rounds=5, iterations=1)
    ratio = sorted(times)[len(times) // 2] / first
    report(benchmark, "store second run / first run", ratio, "<= 0.02", first_s=round(first, 2))
    assert ratio <= 0.05


def test_fusion_trial_vs_evaluation_pass(benchmark, tmp_path):
    """A fusion-weight trial (re-fuse the cached MiniLM fine-tunes in memory, straight into a model, and run one
    validation pass; nothing is written) vs one validation pass of a stored model, on the default text suite
    (target ≤ 1.05×). Tiny budgets: only the ratio matters here."""
    import numpy as np

    from bench.stages import Stages, SuiteContext
    from bench.store import Store
    from bench.strategy import STRATEGIES

    args = ["suite=text", "train.max_train_samples=16", "train.epochs=1", "strategy=separate",
            f"results_dir={tmp_path}", "report=false"]
    plan = make_plan(args)
    assert execute(plan, out=io.StringIO()) == 0
    suite = plan.variants[0].suite
    store = Store(tmp_path, suite.name)
    ctx = SuiteContext.load(suite, store)
    # scratch: as in a search trial, the fused model stays in memory
    stages = Stages(ctx, store, 0, eval_splits=("validation",), scratch=True)
    tunes = [stages.finetune(t).ckpt for t in stages.task_names]
    rng = np.random.default_rng(0)
    before = len(stages.log.computed)

    strategy = STRATEGIES.get("fuse_then_joint")

    def trial():  # what a search trial runs: the strategy's search_row, which fuses in memory and evaluates
        w = rng.dirichlet(np.ones(len(tunes))).tolist()
        strategy().search_row(stages, strategy.Params(fusion="weighted", fusion_params={"weights": w}), "fused")

    def eval_pass():
        stages._evaluate_ckpt(tunes[0].__class__("fuse", "x", tunes[0].path, tuple(stages.task_names)),
                              ("validation",))

    t_eval, t_trial = paired(eval_pass, trial, rounds=3, warmup=1)
    benchmark.pedantic(trial, rounds=1, iterations=1)
    new_training = [k for k in stages.log.computed[before:] if k.startswith(("finetune", "joint"))]
    assert not new_training
    ratio = t_trial / t_eval
    n = sum(len(ctx.encoded[t]["validation"]) for t in stages.task_names)
    report(benchmark, "fusion trial / evaluation pass (MiniLM)", ratio, "<= 1.05", eval_ms=round(1000 * t_eval, 1),
           trial_ms=round(1000 * t_trial, 1), validation_examples=n)
    assert ratio <= 1.15  # the target with a margin for a shared CI machine
