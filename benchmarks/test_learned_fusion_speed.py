"""Learned fusion's cost per step against a joint-training step of the same model (MiniLM, the default text suite).

One AdaMerging step (layer-wise) runs the fused model once per task, forward and backward to the coefficients; one
joint step of ``naive_mtl`` runs one task batch forward and backward through all weights and updates them. Each is
measured in its own fresh process (peak RSS is per process), from the cached fine-tunes, at the same batch size.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

from bench.runner import execute, make_plan
from benchmarks.conftest import report

ARGS = ["suite=text", "train.max_train_samples=32", "train.epochs=1", "train.max_eval_samples=32"]

SCRIPT = textwrap.dedent("""
    import json, sys, torch
    from bench.runner import make_plan
    from bench.stages import Stages, SuiteContext
    from bench.store import Store
    torch.set_num_threads(1)
    plan = make_plan(sys.argv[3:])
    suite = plan.variants[0].suite
    store = Store(plan.results_dir, suite.name)
    stages = Stages(SuiteContext.load(suite, store), store, 0, eval_splits=("validation",))
    tunes = [stages.finetune(t).ckpt for t in stages.task_names]
    if sys.argv[1] == "fuse":
        out = stages.fuse(tunes, "adamerging_layer", {"steps": int(sys.argv[2]), "batch_size": 16})
        tel = out.info["telemetry"]["fusion"]["fit"]
    else:
        tel = stages.joint(weighting="equal", epochs=int(sys.argv[2])).info["telemetry"]
    model_mb = sum(v.numel() * v.element_size() for v in stages.model().backbone.state_dict().values()) / 2**20
    print(json.dumps({"step_time_ms": tel["step_time_ms"], "peak_rss_mb": tel["peak_rss_mb"],
                      "steps": tel["steps"], "model_mb": model_mb, "tasks": len(tunes)}))
""")


def _measure(kind: str, n: int, args: list[str]) -> dict:
    r = subprocess.run([sys.executable, "-c", SCRIPT, kind, str(n), *args], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_learned_fusion_step_vs_joint_step(benchmark, tmp_path):
    args = [*ARGS, f"results_dir={tmp_path}", "report=false"]
    assert execute(make_plan([*args, "strategy=separate"]), out=io.StringIO()) == 0  # the fine-tunes, cached
    fuse = _measure("fuse", 30, args)
    joint = _measure("joint", 3, [*args, "train.batch_size=16"])
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    ratio = fuse["step_time_ms"] / joint["step_time_ms"]
    report(benchmark, "AdaMerging (layer-wise) step / joint step (MiniLM, 3 tasks)", ratio,
           "report (3 task forwards vs 1)", fuse_step_ms=round(fuse["step_time_ms"], 1),
           joint_step_ms=round(joint["step_time_ms"], 1), fuse_peak_rss_mb=round(fuse["peak_rss_mb"]),
           joint_peak_rss_mb=round(joint["peak_rss_mb"]))
    # a learned-fusion step forwards every task (3 here) but updates only the coefficients: it stays within a few
    # joint steps. It holds θ0, the T stacked task vectors and the merged weights (T + 2 model copies) where joint
    # training holds the optimiser's two moments and the gradients (3 copies): a few copies more, not a multiple
    extra = fuse["peak_rss_mb"] - joint["peak_rss_mb"]
    benchmark.extra_info["extra_model_copies"] = round(extra / fuse["model_mb"], 2)
    assert ratio <= 6
    assert extra <= (fuse["tasks"] + 2) * fuse["model_mb"]
