"""What makes two rows comparable: paired seeds, matched and visible budgets, kept predictions, provenance, and
every evaluation split a source declares (MNLI mismatched)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from bench import metrics as M
from bench.engine import Trainer
from bench.plan import build_suite
from bench.runner import execute, make_plan
from bench.stages import Stages, SuiteContext, weights_hash
from bench.store import Store

from .conftest import FAST, MULTI, records, run_cli


def _run(results: Path, *args: str) -> None:
    plan = make_plan([*FAST, f"results_dir={results}", *args])
    assert execute(plan, out=io.StringIO()) == 0


def _rows(results: Path) -> dict[str, dict]:
    """label/variant -> (record, row), one seed."""
    out = {}
    for rec in records(results):
        for variant, row in rec["rows"].items():
            name = variant if rec["label"] == rec["strategy"] else f"{rec['label']}:{variant}"
            out[name] = {**row, "_record": rec}
    return out


# -- paired seeds ----------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_naive_mtl_and_static_ones_are_the_same_model_at_the_same_seed(results):
    _run(results, "strategy=naive_mtl")
    _run(results, "strategy=naive_mtl", "strategy.weights=[1,1,1,1,1]")
    rows = _rows(results)
    equal, static = rows["naive_mtl"], rows["naive_mtl[weights=[1, 1, 1, 1, 1]]:naive_mtl"]
    assert equal["metrics"] == static["metrics"]  # bit-identical: same heads, same batches, λ = 1 changes nothing
    assert equal["telemetry"]["stages"][0]["key"] != static["telemetry"]["stages"][0]["key"]  # two real trainings


@pytest.mark.integration
def test_two_weightings_see_the_same_heads_and_first_batches(tmp_path, monkeypatch):
    suite = build_suite({"suite": "synthetic", "train.epochs": 1, "train.max_train_samples": 300})
    store = Store(tmp_path, suite.name)
    ctx = SuiteContext.load(suite, store)
    seen: dict[str, dict] = {}
    prepare = Trainer.prepare

    def spy(self):
        prepare(self)
        heads = {k: v.clone() for k, v in self.model.heads.state_dict().items()}
        draws = [[spec.idx.copy() for spec in self._draw()] for _ in range(3)]
        seen[type(self.w).__name__] = {"heads": heads, "draws": draws}
        # rewind the generator so that training itself is untouched by the spy
        self.rng = np.random.default_rng(self.seed)
        self.streams = {k: type(s)(s.n, self.rng) for k, s in self.streams.items()}

    monkeypatch.setattr(Trainer, "prepare", spy)
    for weighting in ("equal", "uncertainty"):
        Stages(ctx, store, seed=3).joint(weighting=weighting)
    a, b = seen["Equal"], seen["Uncertainty"]
    assert all(torch.equal(a["heads"][k], b["heads"][k]) for k in a["heads"])
    assert all(np.array_equal(x, y) for sa, sb in zip(a["draws"], b["draws"]) for x, y in zip(sa, sb))


# -- budgets ---------------------------------------------------------------------------------------------------

def _budgets(results: Path, suite: Path, *args: str) -> dict[str, dict]:
    plan = make_plan([f"suite={suite}", "report=false", f"results_dir={results}",
                      "strategy=separate,naive_mtl,fuse_then_joint,gradnorm", *args])
    assert execute(plan, out=io.StringIO()) == 0
    match = next((a.split("=")[1] for a in args if a.startswith("budget.match=")), "none")
    return {v: row["spent"] for rec in records(results) if rec["budget_match"] == match
            for v, row in rec["rows"].items()}


@pytest.mark.integration
def test_budgets_are_shown_and_can_be_matched(tmp_path):
    suite = tmp_path / "multi.yaml"
    suite.write_text(MULTI)
    b = 32
    plain = _budgets(tmp_path / "r", suite)
    naive = plain["naive_mtl"]
    # without matching: fuse_then_joint pays for its fine-tunes (≈ 2× naive MTL); GradNorm draws every task in
    # every step, so it takes about a third of the steps for the same samples
    assert plain["fuse_then_joint"]["train_samples_seen"] == (plain["separate"]["train_samples_seen"]
                                                              + naive["train_samples_seen"])
    # (each epoch's last step is a full batch of every task: up to one step of T batches apart per epoch)
    epochs, t = 2, 3
    assert abs(plain["gradnorm"]["train_samples_seen"] - naive["train_samples_seen"]) <= epochs * t * b
    assert abs(plain["gradnorm"]["optimizer_steps"] - naive["optimizer_steps"] / t) <= epochs
    samples = _budgets(tmp_path / "r", suite, "budget.match=samples")
    for variant in ("separate", "fuse_then_joint", "gradnorm"):  # equal up to one batch per stage
        assert abs(samples[variant]["train_samples_seen"] - naive["train_samples_seen"]) <= 3 * b * 3, variant
    assert samples["naive_mtl"] == naive  # the reference itself is unchanged
    steps = _budgets(tmp_path / "r", suite, "budget.match=steps")
    assert steps["gradnorm"]["optimizer_steps"] == naive["optimizer_steps"]
    assert steps["gradnorm"]["train_samples_seen"] == 3 * naive["train_samples_seen"]
    for variant in ("separate", "fuse_then_joint"):
        assert abs(steps[variant]["optimizer_steps"] - naive["optimizer_steps"]) <= 3, variant


@pytest.mark.integration
def test_naive_mtl_controls_are_labelled_rows(results):
    _run(results, "strategy=naive_mtl", "strategy.sampling=all")
    _run(results, "strategy=naive_mtl", "strategy.epochs=4")
    labels = {r["label"]: r["rows"]["naive_mtl"]["spent"] for r in records(results)}
    assert set(labels) == {"naive_mtl[sampling=all]", "naive_mtl[epochs=4]"}
    assert labels["naive_mtl[epochs=4]"]["epochs"] == 4


# -- predictions and provenance --------------------------------------------------------------------------------


@pytest.mark.integration
def test_predictions_are_kept_and_reproduce_the_metrics(results):
    _run(results, "strategy=separate,fuse_then_joint")
    root = results / "synthetic"
    for rec in records(results):
        for variant, row in rec["rows"].items():
            assert set(row["predictions"]) == {"validation", "test"}, variant
            for split, per_task in row["predictions"].items():
                assert set(per_task) == set(rec["tasks"]), variant
                for task, rel in per_task.items():
                    with np.load(root / rel) as z:
                        pred, target = z[f"{split}/{task}/pred"], z[f"{split}/{task}/target"]
                        assert len(z[f"{split}/{task}/id"]) == len(pred) == len(target)
                    names = list(rec["tasks"][task]["metrics"])
                    assert M.compute(names, target, pred) == pytest.approx(row["metrics"][split][task], abs=1e-12)
    fused = next(r for r in records(results) if r["strategy"] == "fuse_then_joint")["rows"]["fused"]
    assert all("/evaluate/" in p for p in fused["predictions"]["test"].values())  # the fused model's own


@pytest.mark.integration
def test_stages_and_records_carry_their_provenance(results):
    _run(results, "strategy=naive_mtl")
    (rec,) = records(results)
    for key in ("config", "config_fingerprint", "budget_fingerprint", "budget_match", "backbone_weights"):
        assert key in rec, key
    (stage,) = rec["rows"]["naive_mtl"]["stages"]
    assert stage["stage"] == "joint" and stage["impl_version"] >= 2 and stage["code_version"] == rec["code_version"]
    assert {"torch", "numpy", "scikit-learn"} <= set(stage["versions"])
    info = json.loads((results / "synthetic" / "stages" / "joint" / stage["key"] / "stage.json").read_text())
    assert info["provenance"]["code_version"] == rec["code_version"]
    init_key = info["key_inputs"]["init"]
    init = json.loads((results / "synthetic" / "stages" / "init" / init_key / "stage.json").read_text())
    assert init["key_inputs"]["weights"] == rec["backbone_weights"]  # θ0's content, not just its name


@pytest.mark.integration
def test_weights_hash_covers_every_tensor_including_batchnorm_buffers():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2)).to(torch.bfloat16)
    first = weights_hash(model)
    assert weights_hash(model) == first  # a content hash: stable
    with torch.no_grad():
        model[1].num_batches_tracked += 1  # a 0-dim integer buffer changes the hash too
    assert weights_hash(model) != first


@pytest.mark.integration
def test_an_aa_pair_is_two_records_from_one_cache(results):
    _run(results, "strategy=naive_mtl")
    _run(results, "strategy=naive_mtl", "label=naive_mtl_aa")
    recs = {r["label"]: r for r in records(results)}
    assert set(recs) == {"naive_mtl", "naive_mtl_aa"} and recs["naive_mtl_aa"]["stages_reused"] >= 1
    assert recs["naive_mtl"]["rows"]["naive_mtl"]["metrics"] == recs["naive_mtl_aa"]["rows"]["naive_mtl"]["metrics"]


@pytest.mark.slow
def test_budget_match_must_be_known(tmp_path):
    proc = run_cli("run", "suite=synthetic", "budget.match=tokens", f"results_dir={tmp_path}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = [x for x in (proc.stdout + proc.stderr).splitlines() if x.strip()]
    assert "budget.match='tokens'" in line and "'samples'" in line


# -- every split a source declares -----------------------------------------------------------------------------


@pytest.mark.slow
def test_mnli_mismatched_is_evaluated_and_kept(tmp_path):
    import pandas as pd

    folder = tmp_path / "glue" / "mnli"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 48), ("validation_matched", 12), ("validation_mismatched", 10)):
        pd.DataFrame({"premise": [f"premise {i} {w}" for i, w in enumerate(rng.integers(0, 9, n))],
                      "hypothesis": [f"hypothesis {i}" for i in range(n)], "label": np.arange(n) % 3,
                      "idx": range(n)}).to_parquet(folder / f"{split}-00000-of-00001.parquet")
    raw = yaml.safe_load((Path(__file__).resolve().parent.parent / "suites" / "glue.yaml").read_text())
    raw["tasks"] = [t for t in raw["tasks"] if t["name"] == "mnli"]
    raw["backbone"] = {"source": "transformers", "name": "minilm", "max_length": 24}
    raw["train"] = {**raw.get("train", {}), "epochs": 1, "batch_size": 8, "max_train_samples": 16,
                    "max_eval_samples": None}
    suite = tmp_path / "glue_mini.yaml"
    suite.write_text(yaml.safe_dump(raw))
    plan = make_plan([f"suite={suite}", "strategy=naive_mtl", f"data_dir={tmp_path / 'glue'}", "report=false",
                      f"results_dir={tmp_path / 'r'}"])
    assert execute(plan, out=io.StringIO()) == 0
    (rec,) = records(tmp_path / "r")
    row = rec["rows"]["naive_mtl"]
    assert set(row["metrics"]) == {"validation", "test", "test_mismatched"}
    with np.load(tmp_path / "r" / rec["suite"] / row["predictions"]["test_mismatched"]["mnli"]) as z:
        assert z["test_mismatched/mnli/target"].tolist() == (np.arange(10) % 3).tolist()


@pytest.mark.slow
def test_a_batchnorm_backbone_runs_end_to_end(tmp_path):
    # EfficientNet-Lite0 (BatchNorm buffers) through the whole path: θ0's weights hash, training, kept predictions
    plan = make_plan(["suite=vision_single", "strategy=naive_mtl", "train.epochs=1", "train.max_train_samples=32",
                      "train.max_eval_samples=32", "report=false", f"results_dir={tmp_path}"])
    assert execute(plan, out=io.StringIO()) == 0
    (rec,) = records(tmp_path)
    assert len(rec["backbone_weights"]) == 32 and set(rec["rows"]["naive_mtl"]["predictions"]) == {"validation", "test"}
