"""The task-schedule report: BWT, forgetting and FWT equal a hand computation from the records' step metrics, their
intervals the two-level formula on the per-example pseudo-values (test-set only with one seed), the cost ratios to
retrain's, the task-arrival figure, a retire step, and the final-step leaderboard of a schedule run."""

from __future__ import annotations

import io
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sst

from bench.report import build_leaderboards, report_command
from bench.report.records import load_records
from bench.report.schedule import schedule_rows, write_schedule
from bench.report.schedule.plots import arrival_figure
from bench.report.schedule.rows import StepScores
from bench.report.schedule.tables import cost_table, schedule_table, score_table
from bench.runner import execute, make_plan

from .conftest import MULTI

SCHEDULE = [["a", "b"], ["c"], ["-a"]]  # c arrives at step 2, a (a regression: pearson) retires at step 3
FIXTURES = Path(__file__).parent / "fixtures" / "records"

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("schedule_report")
    (root / "multi.yaml").write_text(MULTI)
    plan = make_plan([f"suite={root / 'multi.yaml'}", "schedule=[[a,b],[c],[-a]]", "report=false",
                      "strategy=retrain,sequential,separate", "seeds=2", f"results_dir={root / 'results'}"])
    assert execute(plan, out=io.StringIO()) == 0
    return root / "results"


@pytest.fixture(scope="module")
def loaded(store):
    records = load_records(store, "multi")
    rows = {r.name: r for r in schedule_rows(records)}
    return records, rows, StepScores(list(rows.values()), records, 0.95)


def _r(record, row: str, step: int, task: str) -> float:
    """R[step][task] of one record by hand: accuracy in points (b and c are classification tasks)."""
    return 100.0 * record.rows[row].schedule[step - 1].metrics["test"][task]["accuracy"]


def _s(record, row: str, task: str) -> float:
    return 100.0 * record.rows[row].schedule_reference["metrics"]["test"][task]["accuracy"]


def test_transfer_measures_equal_a_hand_computation(loaded):
    records, rows, scores = loaded
    table = schedule_table(list(rows.values()), scores, 0.95)
    for name in ("retrain", "sequential", "separate"):
        mine = sorted((r for r in records if name in r.rows), key=lambda r: r.seed)
        assert len(mine) == 2
        # at K = 3 the model serves b (arrived at 1) and c (arrived at 2); a retired at 3 enters none of them
        bwt = [((_r(x, name, 3, "b") - _r(x, name, 1, "b")) + (_r(x, name, 3, "c") - _r(x, name, 2, "c"))) / 2
               for x in mine]
        forgetting = [((max(_r(x, name, 1, "b"), _r(x, name, 2, "b")) - _r(x, name, 3, "b"))
                       + (_r(x, name, 2, "c") - _r(x, name, 3, "c"))) / 2 for x in mine]
        fwt = [_r(x, name, 2, "c") - _s(x, name, "c") for x in mine]  # only c arrived after step 1
        final = [(_r(x, name, 3, "b") + _r(x, name, 3, "c")) / 2 for x in mine]
        line = table.loc[name]
        assert line["bwt"] == pytest.approx(np.mean(bwt))
        assert line["forgetting"] == pytest.approx(np.mean(forgetting))
        assert line["fwt"] == pytest.approx(np.mean(fwt))
        assert line["final"] == pytest.approx(np.mean(final))
        assert line["bwt:tasks"] == "b,c" and line["fwt:tasks"] == "c" and line["final_tasks"] == "b,c"
    # separate's models never change and its fine-tune of c is the reference itself
    assert table.loc["separate", ["bwt", "forgetting", "fwt"]].tolist() == pytest.approx([0.0, 0.0, 0.0])


def _correct(store: Path, rel: str, task: str, ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-example correctness of a predictions file on ``task`` (the accuracy's pseudo-values), in id order."""
    with np.load(store / "multi" / rel) as f:
        order = np.argsort(f[f"test/{task}/id"])
        return f[f"test/{task}/id"][order], (f[f"test/{task}/pred"] == f[f"test/{task}/target"])[order] * 100.0


def _half_width(per_space: dict[str, np.ndarray], level: float = 0.95) -> float:
    """The two-level t half-width of a mean over seeds, written out: per space the per-seed pseudo-values ψ [k, n];
    s² over the seeds' values, c_e the test-set covariance between different seeds, ν Welch–Satterthwaite."""
    k = next(iter(per_space.values())).shape[0]
    x = sum(psi.mean(axis=1) for psi in per_space.values())  # the per-seed value: a sum over the spaces' means
    if k == 1:  # one seed: the test-set variance alone, normal quantile
        var = sum(float(np.var(psi[0], ddof=1)) / psi.shape[1] for psi in per_space.values())
        return float(sst.norm.ppf((1 + level) / 2)) * math.sqrt(var)
    c_e = 0.0
    for psi in per_space.values():
        n = psi.shape[1]
        centred = psi - psi.mean(axis=1, keepdims=True)
        pairs = [(u, v) for u in range(k) for v in range(k) if u != v]
        c_e += float(np.mean([centred[u] @ centred[v] / (n * (n - 1)) for u, v in pairs]))
    seed_term = float(np.var(x, ddof=1)) / k
    var = seed_term + max(c_e, 0.0)
    df = var**2 / (seed_term**2 / (k - 1))
    return float(sst.t.ppf((1 + level) / 2, df)) * math.sqrt(var)


def _bwt_pseudo_values(store: Path, records, row: str) -> dict[str, np.ndarray]:
    """BWT's pseudo-values per task space: (ψ_K − ψ_a(i)) / 2 for b (a = 1) and c (a = 2), seed by seed."""
    out = {}
    for task, arrived in (("b", 1), ("c", 2)):
        per_seed = []
        for rec in sorted((r for r in records if row in r.rows), key=lambda r: r.seed):
            steps = rec.rows[row].schedule
            ids, last = _correct(store, steps[2].predictions["test"][task], task)
            ids0, first = _correct(store, steps[arrived - 1].predictions["test"][task], task)
            assert np.array_equal(ids, ids0)  # the same test examples at every step
            per_seed.append((last - first) / 2)
        out[task] = np.stack(per_seed)
    return out


def test_bwt_interval_is_the_two_level_formula_on_differences_of_pseudo_values(store, loaded):
    records, rows, scores = loaded
    table = schedule_table(list(rows.values()), scores, 0.95)
    line = table.loc["sequential"]
    half = _half_width(_bwt_pseudo_values(store, records, "sequential"))
    assert (line["bwt:hi"] - line["bwt:lo"]) / 2 == pytest.approx(half, rel=1e-9)
    assert (line["bwt:hi"] + line["bwt:lo"]) / 2 == pytest.approx(line["bwt"], abs=1e-9)


def test_one_seed_gives_the_test_set_only_width(store, loaded):
    records, _, _ = loaded
    one = [r for r in records if r.seed == 0]
    rows = schedule_rows(one)
    table = schedule_table(rows, StepScores(rows, one, 0.95), 0.95)
    line = table.loc["sequential"]
    assert bool(line["test_only"]) and math.isnan(line["bwt:seed_sd"])
    half = _half_width(_bwt_pseudo_values(store, one, "sequential"))
    assert (line["bwt:hi"] - line["bwt:lo"]) / 2 == pytest.approx(half, rel=1e-9)


def test_costs_per_step_and_their_ratio_to_retrain(loaded):
    records, rows, scores = loaded
    costs = cost_table(list(rows.values()))

    def spent(row: str, step: int) -> float:
        return float(np.mean([r.rows[row].schedule[step - 1].spent.get("train_samples_seen", 0)
                              for r in records if row in r.rows]))

    for row in ("sequential", "separate"):
        for step in (1, 2, 3):
            line = costs[(costs["variant"] == row) & (costs["step"] == step)].iloc[0]
            assert line["train_samples_seen"] == pytest.approx(spent(row, step))
            if spent("retrain", step):
                assert line["train_samples_seen:ratio"] == pytest.approx(spent(row, step) / spent("retrain", step))
    # sequential trains step 1 as retrain does (the same stage), step 2 on c only, and nothing to retire a
    seq = costs[costs["variant"] == "sequential"].set_index("step")
    assert seq.loc[1, "train_samples_seen:ratio"] == pytest.approx(1.0)
    assert seq.loc[3, "train_samples_seen"] == 0 and seq.loc[3, "change"] == "−a"
    table = schedule_table(list(rows.values()), scores, 0.95)
    total = sum(spent("sequential", k) for k in (1, 2, 3)) / sum(spent("retrain", k) for k in (1, 2, 3))
    assert table.loc["sequential", "train_samples_seen:ratio"] == pytest.approx(total)
    assert table.loc["retrain", "wall_time_s:ratio"] == pytest.approx(1.0)


def test_arrival_figure_has_a_line_per_task_from_its_arrival(loaded):
    _, rows, scores = loaded
    per_step = score_table(list(rows.values()), scores, 0.95)
    fig = arrival_figure(per_step, list(rows))
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
    assert [ax.get_title() for ax in panels] == list(rows)
    for ax in panels:
        lines = {line.get_label(): line.get_xdata() for line in ax.get_lines()}
        assert sorted(lines) == ["a", "b", "c"]  # one line per task of the schedule
        assert lines["a"].tolist() == [1, 2]  # a arrived at 1 and was retired at 3: no score there
        assert lines["b"].tolist() == [1, 2, 3]
        assert lines["c"].tolist() == [2, 3]  # c starts at its arrival step
    retired = per_step[per_step["event"] == "retired"]
    assert set(zip(retired["task"], retired["step"])) == {("a", 3)}


def test_a_retired_task_leaves_the_final_leaderboard(store):
    boards, _ = build_leaderboards(store, "multi")
    table = boards[0].table
    assert not any(c.startswith("a/") for c in table.columns)  # no row has metrics for a: no column
    assert {"b/accuracy", "c/accuracy"} <= set(table.columns)
    assert table.loc["sequential", "delta_m"] == table.loc["sequential", "delta_m"]  # against separate: not NaN
    assert boards[0].baselines["retrain"] == "separate"
    # retrain spends more than separate, and budget.match is refused under a schedule: the note says so
    assert any(n.startswith("retrain spent") and "cannot be matched under a task schedule" in n
               for n in boards[0].notes)
    assert not any("budget.match=samples" in n for n in boards[0].notes)


def test_report_writes_the_schedule_files_and_a_plain_store_none(store, tmp_path, capsys):
    out = tmp_path / "report"
    assert report_command({"suite": "multi", "results_dir": str(store), "out": str(out)}) == 0
    said = capsys.readouterr().out.replace("\n", "")  # the console wraps long paths
    for name in ("schedule.md", "schedule.tex", "schedule.csv", "schedule_steps.csv", "schedule_scores.csv",
                 "schedule.json", "schedule_arrival.png", "schedule_cost.pdf"):
        assert (out / name).is_file() and name in said
    text = (out / "schedule.md").read_text()
    assert "| `retrain` | 2 | +a +b \\| +c \\| −a |" in text
    shutil.copytree(FIXTURES, tmp_path / "plain")
    assert write_schedule(load_records(tmp_path / "plain", "synthetic"), tmp_path / "none", 0.95) == {}
    assert not (tmp_path / "none").exists()
