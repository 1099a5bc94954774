"""One suite argument: a suite given by name or by the path of its YAML file is read the same way by run, search,
report, check and verify (the store uses the YAML's ``name:``, which need not be the file's stem)."""

from __future__ import annotations

import pytest
import yaml

from bench.cli import main
from bench.errors import BenchError
from bench.suites import stored_suite, suite_name
from tests.conftest import FAST, REPO

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A user's suite file ``my_suite.yaml`` whose ``name:`` is ``mine``, run once by its path."""
    root = tmp_path_factory.mktemp("suite_arg")
    raw = yaml.safe_load((REPO / "suites" / "synthetic.yaml").read_text())
    raw["name"] = "mine"
    path = root / "my_suite.yaml"
    path.write_text(yaml.safe_dump(raw))
    results = root / "results"
    fast = [a for a in FAST if not a.startswith("suite=")]
    assert main(["run", f"suite={path}", "strategy=separate,naive_mtl", *fast, f"results_dir={results}"]) == 0
    return {"path": path, "results": results}


def test_suite_name_reads_the_yaml(store):
    assert suite_name(str(store["path"])) == "mine"
    assert stored_suite(str(store["path"]), store["results"]) == "mine" == stored_suite("mine", store["results"])


@pytest.mark.parametrize("by", ["path", "name"])
def test_report_check_verify_take_a_path_or_a_name(store, by, capsys, tmp_path):
    suite, results = str(store["path"]) if by == "path" else "mine", store["results"]
    assert main(["report", f"suite={suite}", f"results_dir={results}", f"out={tmp_path / 'report'}"]) == 0
    assert (tmp_path / "report" / "leaderboard.md").is_file()
    assert main(["verify", f"suite={suite}", f"results_dir={results}"]) == 0
    baseline = tmp_path / "mine.json"
    assert main(["check", f"suite={suite}", f"results_dir={results}", f"baseline={baseline}", "--update"]) == 0
    assert main(["check", f"suite={suite}", f"results_dir={results}", f"baseline={baseline}"]) == 0
    out = capsys.readouterr()
    assert "no records" not in out.err + out.out and "no store" not in out.err + out.out


def test_search_takes_the_path_and_stores_under_the_name(store):
    results = store["results"]
    assert main(["search", f"suite={store['path']}", "strategy=naive_mtl", "space=lambda", "trials=1",
                 "train.epochs=1", "train.max_train_samples=200", "threads=1", f"results_dir={results}",
                 "plots=false"]) == 0
    assert (results / "mine" / "search").is_dir() and not (results / "my_suite").exists()


def test_a_store_elsewhere_is_not_a_rerun(store, tmp_path, capsys):
    """A store that is not under results_dir: the message says where it looked and which stores are there, and
    offers results_dir= first (the run may have happened elsewhere), for verify as for report and check."""
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    for command in ("verify", "report", "check"):
        assert main([command, f"suite={store['path']}", f"results_dir={empty}", f"baseline={tmp_path / 'b.json'}"]
                    if command == "check" else [command, f"suite={store['path']}", f"results_dir={empty}"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, err
        if command != "check":  # check reads its baseline first
            assert "'mine'" in err and str(empty) in err
    with pytest.raises(BenchError, match=r"no store for suite 'mine' .*give results_dir= the folder"):
        stored_suite(str(store["path"]), empty, records=False)


def test_check_messages_quote_the_flag_the_cli_takes(store, tmp_path, capsys):
    assert main(["check", "suite=mine", f"results_dir={store['results']}", f"baseline={tmp_path / 'none.json'}"]) == 2
    err = capsys.readouterr().err
    assert "--update" in err and "update=true" not in err
