"""Published reference tables (bench/references/): every printed Δm% recomputed by ``bench.metrics.delta_m`` from
the table's own metric columns, the Average column of FusionBench's table, the loader's one-line errors, and
``bench report ... reference=NAME``: the published rows under the measured ones, outside every mark."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bench import metrics as M
from bench.cli import cmd_list
from bench.errors import BenchError
from bench.references import load, names, parse
from bench.references.recompute import checks, recomputed, rounding_bound, summary_checks
from bench.report import report_command
from bench.suites import read_suite_yaml, validate_suite
from tests.test_report_stats import SUITE, labels, seeds_of

ALL = checks()


def test_every_table_is_shipped_and_loads():
    assert names() == ["celeba_famo", "cityscapes_famo", "cityscapes_nash_mtl", "fusionbench_clip_vit_b32_ta8",
                       "nyuv2_famo", "nyuv2_nash_mtl", "qm9_famo", "qm9_nash_mtl"]
    for name in names():
        ref = load(name)
        assert ref.source.read_in and ref.source.paper  # every table says where its numbers were read
    assert len(load("nyuv2_nash_mtl").metrics) == 9 and len(load("qm9_nash_mtl").metrics) == 11


@pytest.mark.parametrize("check", ALL, ids=[f"{c.reference}:{c.method}" for c in ALL])
def test_printed_delta_m_equals_the_recomputed_one_within_rounding(check):
    """Each printed Δm% against delta_m over the row's printed cells and the single-task row's, in the paper's
    convention (every metric weighs the same; positive = worse); the bound is the printed cells' rounding."""
    row = load(check.reference).row(check.method)
    if row.mismatch:  # pinned: the published row does not follow from its own cells
        assert abs(check.printed - check.recomputed) > check.bound
    else:
        assert abs(check.printed - check.recomputed) <= check.bound


def test_every_row_with_a_printed_delta_m_and_cells_is_checked():
    assert len(ALL) == 11 + 12 + 11 + 12 + 10 + 11  # NYUv2, CityScapes, QM9: Nash-MTL's tables and FAMO's
    outside = [(c.reference, c.method) for c in ALL if not abs(c.printed - c.recomputed) <= c.bound]
    assert outside == [("nyuv2_famo", "IMTL-G"), ("nyuv2_nash_mtl", "IMTL-G")]  # the one inconsistent row


def test_nash_mtl_nyuv2_averages_over_the_nine_metrics_not_the_three_tasks():
    ref = load("nyuv2_nash_mtl")
    row, base = ref.row("Nash-MTL"), ref.row(ref.baseline)
    assert round(recomputed(ref, row), 2) == -4.05 and row.delta_m == -4.04
    keys = [(m.task, m.metric) for m in ref.metrics]
    values = {k: v for k, v in zip(keys, ref.values(row).values())}
    basev = {k: v for k, v in zip(keys, ref.values(base).values())}
    dirs = {(m.task, m.metric): m.direction for m in ref.metrics}
    per_metric = -M.delta_m(values, basev, keys, dirs, average="metric")
    per_task = -M.delta_m(values, basev, keys, dirs)  # bench's default: per task first
    assert per_metric == pytest.approx(-4.0468, abs=1e-4)
    assert per_task == pytest.approx(-7.6474, abs=1e-4)  # 3.6 points off: not the papers' convention
    assert abs(per_metric - row.delta_m) <= rounding_bound(ref, row) < abs(per_task - row.delta_m)


def test_delta_m_average_option_is_refused_when_unknown():
    with pytest.raises(BenchError, match="unknown Δm% average 'metrics'"):
        M.delta_m({("a", "m"): 1.0}, {("a", "m"): 2.0}, [("a", "m")], {}, average="metrics")


def test_fusionbench_headline_numbers_and_average_column():
    ref = load("fusionbench_clip_vit_b32_ta8")
    average = {r.method: ref.values(r)["average/accuracy"] for r in ref.rows}
    assert average["Task Arithmetic (λ=0.3)"] == 68.0 and average["Ties-Merging (λ=0.3)"] == 72.2
    assert average["Layer-wise AdaMerging (λ=0.3)"] == 82.6 and average["Fine-tuned (STL)"] == 90.3
    for row in ref.rows:
        [(label, printed, mean, bound)] = summary_checks(ref, row)
        assert label == "Average" and abs(printed - mean) <= bound, row.method
    assert recomputed(ref, ref.row("RegMean")) is None  # the table prints no Δm%


def test_celeba_ships_the_summary_only():
    ref = load("celeba_famo")
    assert not ref.metrics and ref.baseline is None
    assert {r.method: r.delta_m for r in ref.rows} == {
        "LS": 4.15, "SI": 7.20, "RLW": 1.46, "DWA": 3.20, "UW": 3.23, "MGDA": 14.85, "PCGrad": 3.17, "GradDrop": 3.29,
        "CAGrad": 2.48, "IMTL-G": 0.84, "Nash-MTL": 2.84, "FAMO": 1.21}
    assert all(recomputed(ref, r) is None for r in ref.rows)


# ----------------------------------------------------------------------------------------------- loader errors


def _write(tmp_path: Path, text: str, name: str = "mine") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


GOOD = """name: mine
title: t
source: {paper: p, read_in: r}
delta_m: {average: metric, sign: drop}
baseline: STL
metrics: [{task: a, metric: acc, direction: max}, {task: b, metric: err, direction: min}]
rows:
  - {method: STL, values: "1.0 2.0"}
  - {method: X, values: "1.1 1.9", delta_m: "-7.50"}
"""


@pytest.mark.parametrize("old, new, message", [
    ('"1.1 1.9"', '"1.1"', "mine.yaml: row 'X' has 1 cells for 2 metrics"),
    ('"1.1 1.9"', '"1.1 abc"', "rows.1.cells: could not convert string to float: 'abc'"),
    ("direction: min", "direction: lower", "metrics.1.direction: Input should be 'max' or 'min'"),
    ("baseline: STL", "baseline: ST", "baseline 'ST' is not a row"),
    ("delta_m: {average: metric, sign: drop}\n", "", "rows print a Δm% but the table has no delta_m"),
    ("name: mine", "name: yours", "name 'yours' must equal the file name 'mine'"),
    ("source: {paper: p, read_in: r}", "source: {paper: p}", "source.read_in: Field required"),
])
def test_a_bad_reference_file_is_one_line_naming_file_and_key(tmp_path, old, new, message):
    assert parse(_write(tmp_path, GOOD)).row("X").delta_m == -7.5
    with pytest.raises(BenchError) as err:
        parse(_write(tmp_path, GOOD.replace(old, new)))
    text = str(err.value)
    assert "\n" not in text and text.startswith("reference mine.yaml: ") and message in text


def test_not_yaml_is_one_line(tmp_path):
    with pytest.raises(BenchError, match=r"^reference mine.yaml: not valid YAML") as err:
        parse(_write(tmp_path, "rows: [unclosed\n"))
    assert "\n" not in str(err.value)


def test_an_unknown_name_is_one_line_naming_the_choices():
    with pytest.raises(BenchError) as err:
        load("nyuv2_nash")
    text = str(err.value)
    assert "\n" not in text and "unknown reference 'nyuv2_nash' (did you mean 'nyuv2_nash_mtl'?)" in text
    assert "valid: celeba_famo, cityscapes_famo, " in text


def test_bench_list_names_the_references(capsys):
    assert cmd_list([]) == 0
    out = capsys.readouterr().out
    assert "published references" in out and all(n in out for n in names())


# ----------------------------------------------------------------------------------------------- in the report


@pytest.fixture
def marked(tmp_path: Path) -> Path:
    """A board with a significant bold winner (schema-2 records with predictions, tests/test_report_stats.py)."""
    results = tmp_path / "results"
    target = {"a": labels(200)}
    seeds_of(results, "separate", target, {"a": [118, 120, 122]})
    seeds_of(results, "naive_mtl", target, {"a": [189, 190, 191]}, shift=1)
    return results


def _report(results: Path, out: Path, **opts) -> dict[str, str]:
    assert report_command({"suite": SUITE, "results_dir": str(results), "out": str(out), "plots": False,
                           **opts}) == 0
    return {ext: (out / f"leaderboard.{ext}").read_text() for ext in ("md", "tex", "csv", "json")}


@pytest.mark.integration
def test_reference_rows_follow_the_measured_rows_and_take_no_mark(marked, tmp_path, capsys):
    plain = _report(marked, tmp_path / "plain")
    ref = _report(marked, tmp_path / "ref", reference="nyuv2_nash_mtl")
    terminal = capsys.readouterr().out
    assert "**" in plain["md"]  # the measured board has its bold winner
    # every measured table is unchanged, byte for byte; the published table comes after it
    assert ref["md"].startswith(plain["md"]) and ref["tex"].startswith(plain["tex"])
    section = ref["md"][len(plain["md"]):]
    assert section.lstrip("\n").startswith("## Published: NYUv2, 3 tasks, SegNet-MTAN")
    assert "Numbers as published, not measured by this report" in section and "Navon et al. 2022" in section
    assert "(Navon et al. 2022, Multi-Task Learning as a Bargaining Game (Nash-MTL), Table 2)" in section
    assert "| _Nash-MTL_ | 40.13 | 65.93 | 0.5261 | 0.2171 | 25.26 | 20.08 | 28.4 | 55.47 | 68.15 | -4.04 |" \
        in section
    assert "**" not in section and "\\*" not in section and "≈" not in section and "[" not in section.split("|", 1)[1]
    assert "‡ IMTL-G: the printed cells give -0.60" in section
    tex = ref["tex"][len(plain["tex"]):]
    assert r"\caption{Published: NYUv2" in tex and r"\bfseries" not in tex and r"\textit{Nash-MTL} & 40.13" in tex
    plain_lines, ref_lines = plain["csv"].splitlines(), ref["csv"].splitlines()
    for a, b in zip(plain_lines, ref_lines):  # measured cells as before; the published columns follow, empty
        assert b.startswith(a + ",")
    published = pd.read_csv(tmp_path / "ref" / "leaderboard.csv").iloc[len(plain_lines) - 1:]
    assert set(published["split"]) == {"published"} and len(published) == 12
    assert list(published["variant"])[-1] == "Nash-MTL" and published["delta_m_published"].iloc[-1] == -4.04
    assert published["published"].str.startswith("nyuv2_nash_mtl: Navon et al. 2022").all()
    payload = json.loads(ref["json"])
    assert {k: v for k, v in payload.items() if k != "reference"} == json.loads(plain["json"])
    assert payload["reference"]["published"] is True and payload["reference"]["rows"][-1]["delta_m"] == -4.04
    assert "Published: NYUv2" in terminal


@pytest.mark.integration
def test_unknown_reference_fails_before_any_work(marked, tmp_path):
    with pytest.raises(BenchError, match="unknown reference 'qm9'.*valid: celeba_famo"):
        report_command({"suite": SUITE, "results_dir": str(marked), "out": str(tmp_path / "o"), "reference": "qm9"})
    assert not (tmp_path / "o").exists()


@pytest.mark.integration
def test_a_suite_names_its_reference_and_reference_none_turns_it_off(marked, tmp_path, monkeypatch):
    suites = tmp_path / "suites"
    suites.mkdir()
    builtin = Path(__file__).parents[1] / "suites" / "synthetic.yaml"
    text = builtin.read_text().replace("name: synthetic", f"name: {SUITE}")
    (suites / f"{SUITE}.yaml").write_text(text + "reference: qm9_famo\n")
    with_ref = validate_suite(read_suite_yaml(suites / f"{SUITE}.yaml"), "suite")
    without = validate_suite(read_suite_yaml(_write(tmp_path, text, "plain")), "suite")
    assert with_ref.reference == "qm9_famo" and with_ref.results_dump() == without.results_dump()
    monkeypatch.chdir(tmp_path)  # ./suites/<SUITE>.yaml is found first
    md = _report(marked, tmp_path / "declared")["md"]
    assert "## Published: QM9, 11 targets, MPNN: FAMO" in md
    md = _report(marked, tmp_path / "off", reference="none")["md"]
    assert "Published" not in md


def test_shipped_files_are_in_the_wheel_list():
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"bench.references"' in text and '"bench.references" = ["*.yaml"]' in text
