"""Task schedules: the steps a schedule means, what each schedule strategy carries from step to step, what a step
costs, and that adding a step to a stored schedule trains only the new step."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest

from bench import checkpoint as C
from bench.plan import build_suite
from bench.runner import execute, make_plan
from bench.stages import SuiteContext
from bench.taskset import schedule_steps

from .conftest import MULTI, cli_error, records


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    path = tmp_path / "multi.yaml"
    path.write_text(MULTI)
    return path


def _run(results: Path, suite: Path, schedule: str, *args: str) -> None:
    plan = make_plan([f"suite={suite}", f"schedule={schedule}", "report=false", f"results_dir={results}", *args])
    assert execute(plan, out=io.StringIO()) == 0


def _by_strategy(results: Path, schedule: list) -> dict[str, dict]:
    return {r["strategy"]: r for r in records(results) if r["config"]["suite"]["schedule"] == schedule}


# -- what a schedule means -----------------------------------------------------------------------------------

def test_steps_serve_add_and_retire_in_suite_order():
    steps = schedule_steps([["c", "a"], ["b"], ["-a", "-c"]], ["a", "b", "c"])
    assert steps == [(("a", "c"), (), ("a", "c"), ("c", "a")),
                     (("b",), (), ("a", "b", "c"), ("c", "a", "b")),
                     ((), ("a", "c"), ("b",), ("c", "a", "b"))]


@pytest.mark.parametrize("schedule,needle", [
    ("[[a],[d]]", "schedule step 2 names 'd', which is not a task of the suite; tasks: a, b, c"),
    ("[[a],[-b]]", "schedule step 2 retires 'b', which the model does not serve then"),
    ("[[a],[b,a]]", "schedule step 2 adds 'a', which arrived at step 1; a task arrives once"),
    ("[[a],[-a]]", "schedule step 2 retires every task; keep at least one"),
    ("[[a],[]]", "schedule step 2 ([]) must be a non-empty list of task names"),
    ("a", "schedule='a' must be a list of steps"),
])
def test_bad_schedules_are_one_line(capsys, suite, schedule, needle):
    assert needle in cli_error(capsys, f"suite={suite}", f"schedule={schedule}", "strategy=retrain")


def test_schedule_strategy_without_schedule_and_matched_budget_are_refused(capsys, suite):
    msg = cli_error(capsys, f"suite={suite}", "strategy=sequential")
    assert "strategy 'sequential' absorbs tasks step by step and needs a schedule, e.g. schedule=[[a,b],[c]]" in msg
    msg = cli_error(capsys, f"suite={suite}", "schedule=[[a],[b]]", "budget.match=samples")
    assert "budget.match=samples is not defined under a schedule" in msg


# -- what the strategies carry ---------------------------------------------------------------------------------

@pytest.mark.integration
def test_strategies_carry_models_and_steps_add_up(tmp_path, suite):
    results = tmp_path / "r"
    _run(results, suite, "[[a,b],[c]]", "strategy=retrain,sequential,joint_continue,naive_mtl")
    recs = _by_strategy(results, [["a", "b"], ["c"]])
    store = results / "multi"
    rows = {s: r["rows"][s] for s, r in recs.items()}
    for name, row in rows.items():
        steps = row["schedule"]
        assert [s["tasks"] for s in steps] == [["a", "b"], ["a", "b", "c"]], name
        assert [s["arrived"] for s in steps] == [["a", "b"], ["c"]]
        assert row["metrics"]["test"] == steps[-1]["metrics"]["test"]  # the row is its last step
        # the steps' costs add up to the row's
        assert sum(s["spent"]["train_samples_seen"] for s in steps) == row["spent"]["train_samples_seen"]
        assert row["schedule_reference"]["metrics"]["test"].keys() == {"c"}  # FWT baseline: c alone from θ0

    # step 1 is one joint training on a and b from θ0, the same stage in every schedule strategy
    first = {name: [s["key"] for s in row["schedule"][0]["stages"] if s["stage"] == "joint"] for name, row in
             rows.items() if name != "naive_mtl"}
    assert len({tuple(v) for v in first.values()}) == 1 and len(first["retrain"]) == 1
    # naive_mtl under a schedule is retrain: the same joint stage at every step, the same scores
    assert rows["naive_mtl"]["metrics"] == rows["retrain"]["metrics"]

    # sequential's step 2: the backbone trained on c alone, a's and b's heads untouched since step 1
    seq = rows["sequential"]["schedule"]
    joint1 = next(s["key"] for s in seq[0]["stages"] if s["stage"] == "joint")
    joint2 = next(s["key"] for s in seq[1]["stages"] if s["stage"] == "joint")
    assembled = next(s["key"] for s in seq[1]["stages"] if s["stage"] == "assemble")
    heads1 = C.load_state(store / "stages/joint" / joint1 / C.HEADS_FILE)
    heads = C.load_state(store / "stages/assemble" / assembled / C.HEADS_FILE)
    assert {k.split(".")[0] for k in heads} == {"a", "b", "c"}
    for k, v in heads.items():
        if not k.startswith("c."):
            assert np.array_equal(v.numpy(), heads1[k].numpy()), k
    bb2 = C.load_state(store / "stages/joint" / joint2 / C.BACKBONE_FILE)
    bb = C.load_state(store / "stages/assemble" / assembled / C.BACKBONE_FILE)
    assert all(np.array_equal(bb[k].numpy(), bb2[k].numpy()) for k in bb)
    assert seq[1]["spent"]["train_samples_per_task"].keys() == {"c"}  # the new task only

    # joint_continue's step 2: all of c and a fixed tenth of a and b (its rehearsal buffer) in each of 2 epochs
    ctx = SuiteContext.load(build_suite({"suite": str(suite)}))
    n = {t: len(ctx.encoded[t]["train"]) for t in "abc"}
    drawn = n["c"] + round(0.1 * n["a"]) + round(0.1 * n["b"])
    cont = rows["joint_continue"]["schedule"][1]["spent"]
    assert cont["optimizer_steps"] == 2 * math.ceil(drawn / 32)  # an epoch is a pass over c and the buffers
    for t in "ab":  # a buffer smaller than a batch gives batches of the buffer's size
        rows_t = round(0.1 * n[t])
        assert cont["train_samples_per_task"][t] % min(32, rows_t) == 0 or rows_t > 32
    # more than sequential's step (c alone), less than retrain's (all of a, b and c)
    assert seq[1]["spent"]["train_samples_seen"] < cont["train_samples_seen"] < \
        rows["retrain"]["schedule"][1]["spent"]["train_samples_seen"]


# -- the cache: adding a step trains only the step -------------------------------------------------------------

@pytest.mark.integration
def test_adding_a_step_reuses_every_stored_stage(tmp_path, suite):
    results = tmp_path / "r"
    strategies = "strategy=retrain,sequential,joint_continue"
    _run(results, suite, "[[a],[b]]", strategies)
    before = _by_strategy(results, [["a"], ["b"]])
    _run(results, suite, "[[a],[b],[c]]", strategies)
    after = _by_strategy(results, [["a"], ["b"], ["c"]])
    for name, rec in after.items():
        row, old = rec["rows"][name], before[name]["rows"][name]
        # the first two steps: the same stages and scores as the stored two-step run, all read from the store
        for k in (0, 1):
            assert [s["key"] for s in row["schedule"][k]["stages"]] == \
                [s["key"] for s in old["schedule"][k]["stages"]], name
            assert row["schedule"][k]["metrics"] == old["schedule"][k]["metrics"]
            assert all(s["reused"] for s in row["schedule"][k]["stages"])
        # computed now: the third step's stages and c's reference fine-tune, nothing else
        new = {f"{s['stage']}/{s['key']}" for s in row["schedule"][2]["stages"]}
        ref = set(row["schedule_reference"]["stages"]) - set(old["schedule_reference"]["stages"])
        assert set(rec["stages_computed"]) <= new | ref, name
        assert any(s.startswith("joint/") for s in rec["stages_computed"]), name  # step 3 trained c
