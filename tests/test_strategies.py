"""Strategies end to end on the synthetic suite: defining properties visible in the records, and plugins."""

from __future__ import annotations

import io
import textwrap

import numpy as np
import pytest

from bench.runner import execute, make_plan
from tests.conftest import FAST, records

pytestmark = pytest.mark.integration


def _run(results, *extra):
    buf = io.StringIO()
    code = execute(make_plan([*FAST, f"results_dir={results}", *extra]), out=buf)
    return code, buf.getvalue()


def test_uncertainty_recovers_the_noise_variance_of_the_synthetic_suite(results):
    """The synthetic regression tasks have noise variance 0.01, 0.25 and 1.0. Uncertainty weighting's optimum is
    σ_i² = the task's mean squared error *on the batches it trains on*, so the learned σ² of the noisy task must
    approach 1.0 and every σ² must track the task's own recent training loss (the validation MSE of the clean task
    is higher: it overfits a little, which σ² cannot see)."""
    code, _ = _run(results, "strategy=uncertainty", "train.epochs=12", "train.max_train_samples=null",
                   "strategy.lr=0.05")
    assert code == 0
    (rec,) = records(results)
    row = rec["rows"]["uncertainty"]
    sigma2 = {t: w[-1] for t, w in row["trajectories"]["weights"].items()}
    mse = {t: float(np.mean(row["trajectories"]["loss"][t][-3:])) for t in ("clean", "medium", "noisy")}
    assert abs(sigma2["noisy"] - 1.0) / 1.0 < 0.25, sigma2
    for t in ("clean", "medium", "noisy"):
        assert abs(sigma2[t] - mse[t]) / mse[t] < 0.25, (t, sigma2[t], mse[t])
    assert sigma2["clean"] < sigma2["medium"] < sigma2["noisy"]


def test_gradnorm_weights_sum_to_T_in_the_record(results):
    code, _ = _run(results, "strategy=gradnorm")
    assert code == 0
    (rec,) = records(results)
    w = np.array(list(rec["rows"]["gradnorm"]["trajectories"]["weights"].values()))  # tasks x logged steps
    assert w.shape[0] == 5
    np.testing.assert_allclose(w.sum(0), 5.0, rtol=1e-5)
    assert w.std() > 0  # the weights moved


def test_fuse_then_joint_reports_fused_and_joint_rows_and_any_weighting(results):
    code, _ = _run(results, "strategy=fuse_then_joint", "strategy.weighting=equal,uncertainty",
                   "strategy.fusion=task_arithmetic", "strategy.fusion_params={lam:0.5}")
    assert code == 0
    recs = records(results)
    assert sorted(r["label"] for r in recs) == [
        "fuse_then_joint[fusion=task_arithmetic,fusion_params={'lam': 0.5},weighting=equal]",
        "fuse_then_joint[fusion=task_arithmetic,fusion_params={'lam': 0.5},weighting=uncertainty]"]
    for r in recs:
        assert set(r["rows"]) == {"fused", "fuse_then_joint"}
    # both variants fuse the same cached fine-tunes into the same fused model
    fused = [r["rows"]["fused"]["metrics"] for r in recs]
    assert fused[0] == fused[1]
    # joint training recovers what plain fusion loses
    for r in recs:
        f = np.mean([m["pearson"] for t, m in r["rows"]["fused"]["metrics"]["validation"].items() if "pearson" in m])
        j = np.mean([m["pearson"] for t, m in r["rows"]["fuse_then_joint"]["metrics"]["validation"].items()
                     if "pearson" in m])
        assert j > f


def test_a_strategy_file_in_another_folder_is_found_and_runs(results, tmp_path):
    folder = tmp_path / "my_strategies"
    folder.mkdir()
    (folder / "head_only.py").write_text(textwrap.dedent('''
        """A plugin strategy: fine-tune, then evaluate the fine-tunes fused by task arithmetic."""
        from bench.config import Frozen
        from bench.stages import Stages, make_row
        from bench.strategy import Strategy, register_strategy

        class Params(Frozen):
            lam: float = 0.3

        @register_strategy("plugin_ta")
        class PluginTA(Strategy):
            """Task arithmetic of the per-task fine-tunes, no joint training."""
            Params = Params

            def run(self, stages: Stages, params: Params) -> dict:
                tunes = [stages.finetune(t) for t in stages.task_names]
                fused = stages.fuse([t.ckpt for t in tunes], "task_arithmetic", {"lam": params.lam})
                return {"plugin_ta": make_row(*tunes, fused, stages.evaluate(fused.ckpt))}
    '''))
    code, out = _run(results, "strategy=plugin_ta", f"strategy_dirs=[{folder}]", "strategy.lam=0.0")
    assert code == 0, out
    (rec,) = records(results)
    assert rec["label"] == "plugin_ta[lam=0.0]"
    # λ = 0 is θ0 with the fine-tuned heads: worse than the fine-tunes themselves
    assert set(rec["rows"]) == {"plugin_ta"}
