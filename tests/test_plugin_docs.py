"""Every "write a plug-in" page in docs/plugins/ runs as written: its example files are saved in an empty folder, its
command runs there for real on a synthetic suite, and what the page promises about the result is checked.

A page marks each file with ``<!-- example: relative/path -->`` before its fenced block and the command with
``<!-- example-run -->``; both end with a ``<!-- /... -->`` line.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from bench.cli import main
from tests.conftest import records

DOCS = Path(__file__).resolve().parent.parent / "docs" / "plugins"
FILE = re.compile(r"<!-- example: (\S+) -->\n```\w*\n(.*?)```\n<!-- /example -->", re.S)
RUN = re.compile(r"<!-- example-run -->\n```bash\n(.*?)```\n<!-- /example-run -->", re.S)
KINDS = ("strategy", "weighting", "fusion", "tracker", "launcher", "suite")

pytestmark = pytest.mark.usefixtures("one_thread")


def example(page: str) -> tuple[dict[str, str], list[list[str]]]:
    """The page's example files (path -> text) and its commands, each as the arguments after ``python -m bench``."""
    text = (DOCS / f"{page}.md").read_text()
    files = dict(FILE.findall(text))
    (block,) = RUN.findall(text)
    commands = []
    for line in block.strip().splitlines():
        words = shlex.split(line)
        assert words[:3] == ["python", "-m", "bench"], f"docs/plugins/{page}.md: run only `python -m bench ...`"
        commands.append(words[3:])
    assert files and commands, f"docs/plugins/{page}.md lost its example"
    return files, commands


def by_label(results: Path) -> dict[str, dict]:
    """The records of a run by their label (the leaderboard's row name for a one-row strategy)."""
    return {r["label"]: r for r in records(results)}


def check_strategy(results: Path, out: str) -> None:
    assert set(by_label(results)) == {"separate", "linear_probe[epochs=1]"}
    assert "linear_probe[epochs=1]" in out  # the summary table's row


def check_weighting(results: Path, out: str) -> None:
    got = by_label(results)
    assert set(got) == {f"naive_mtl[weighting={w}]" for w in ("equal", "initial_ratio", "min_norm_mean")}
    for name in ("initial_ratio", "min_norm_mean"):
        weights = got[f"naive_mtl[weighting={name}]"]["rows"]["naive_mtl"]["trajectories"]["weights"]
        assert weights and all(v for v in weights.values())


def check_fusion(results: Path, out: str) -> None:
    from bench.fusion import build_fusion

    (record,) = records(results)
    assert record["label"] == "fuse_then_joint[fusion=task_median]"
    assert set(record["rows"]) == {"fused", "fuse_then_joint"} and "fused[fusion=task_median]" in out
    fusion, base, theta = build_fusion("task_median", {}, n=3), torch.zeros(4), torch.arange(4.0)
    assert torch.equal(fusion.fuse("w", base, [theta, theta, theta]).float(), theta)  # N equal inputs give θ


def check_tracker(results: Path, out: str) -> None:
    (record,) = records(results)
    logs = sorted((results / "synthetic" / "jsonl").glob(f"naive_mtl_s0_{record['cell'][:8]}/*.jsonl"))
    assert len(logs) == len(record["stages_computed"])
    (joint,) = [p for p in logs if p.name.startswith("joint")]
    lines = [json.loads(x) for x in joint.read_text().splitlines()]
    assert "config" in lines[0] and lines[-1]["ok"] is True and any("step" in x for x in lines)


def check_launcher(results: Path, out: str) -> None:
    assert "with launcher=pool, 2 at a time" in out
    assert set(by_label(results)) == {"separate", "naive_mtl"}


def check_suite(results: Path, out: str) -> None:
    (suite,) = {r["suite"] for r in records(results)}
    assert suite == "graded" and set(by_label(results)) == {"separate", "naive_mtl"}


CHECKS: dict[str, Callable[[Path, str], None]] = {
    "strategy": check_strategy, "weighting": check_weighting, "fusion": check_fusion, "tracker": check_tracker,
    "launcher": check_launcher, "suite": check_suite}


def test_every_kind_has_a_page_linked_from_the_index_and_the_readme():
    index = (DOCS / "README.md").read_text()
    readme = (DOCS.parent.parent / "README.md").read_text()
    for kind in KINDS:
        example(kind)
        assert f"({kind}.md)" in index and f"docs/plugins/{kind}.md" in readme


# the launcher's example starts worker processes: the slow tier; the others train in this process
TIER = {"launcher": pytest.mark.slow}


@pytest.mark.parametrize("page", [pytest.param(k, marks=TIER.get(k, pytest.mark.integration)) for k in KINDS])
def test_the_page_example_runs_as_written(page, tmp_path, monkeypatch, capsys):
    files, commands = example(page)
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.chdir(tmp_path)  # relative paths (plugin_dirs=[my_plugins], suites/) as a reader runs them
    results = tmp_path / "results"
    for args in commands:
        code = main([*args, f"results_dir={results}", "report=false"])
        out = capsys.readouterr()
        assert code == 0, out.out + out.err
    CHECKS[page](results, out.out)
