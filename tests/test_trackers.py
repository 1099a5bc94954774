"""Experiment trackers (``tracker=tensorboard|wandb|mlflow``): what a computed stage logs is read back through each
backend's own reader and checked against the stage's ``stage.json``; trackers change no key and no result, a stage
read from the store logs nothing, a broken tracker never fails a stage, and bad input is one line."""

from __future__ import annotations

import importlib.util
import json
import math
import struct
from pathlib import Path

import pytest

from bench.cli import main
from bench.errors import BenchError
from bench.plan import build_suite
from bench.stages import Stages, SuiteContext
from bench.store import Store
from bench.track import TRACKERS, Tracker, register_tracker, trackers_from
from tests.conftest import FAST, records

pytestmark = [pytest.mark.trackers, pytest.mark.usefixtures("one_thread")]

HAS_WANDB = importlib.util.find_spec("wandb") is not None
LOCAL = ["tensorboard", "mlflow"] + (["wandb"] if HAS_WANDB else [])
# linear decay makes the logged learning rate checkable step by step; log_every is a speed knob (in no key)
OVERRIDES = {"suite": "synthetic", "train.epochs": 2, "train.max_train_samples": 400, "train.schedule": "linear",
             "train.log_every": 3}
CELL, LABEL = "c0ffee00d15ea5e5", "naive_mtl"


def compute(results: Path, trackers: list[str] | None) -> tuple[Stages, dict]:
    """A fine-tune, a joint training and an evaluation of the joint model on the synthetic suite."""
    suite = build_suite(dict(OVERRIDES))
    store = Store(results, suite.name)
    stages = Stages(SuiteContext.load(suite, store), store, seed=0, trackers=trackers, cell=CELL, label=LABEL,
                    config={"strategy": "naive_mtl", "params": {}})
    joint = stages.joint()
    outs = {"finetune": stages.finetune("clean"), "joint": joint, "evaluate": stages.evaluate(joint.ckpt)}
    return stages, outs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same stages computed without trackers, with every local tracker, and once more from the store."""
    with pytest.MonkeyPatch.context() as env:
        env.delenv("MLFLOW_TRACKING_URI", raising=False)  # the suite's own local store
        env.delenv("WANDB_DIR", raising=False)
        env.setenv("WANDB_MODE", "offline")  # never online from a test, whatever the machine's login
        plain_dir, tracked_dir = tmp_path_factory.mktemp("plain"), tmp_path_factory.mktemp("tracked")
        plain, plain_out = compute(plain_dir, None)
        tracked, tracked_out = compute(tracked_dir, LOCAL)
        suite_root = tracked.store.root
        before = _snapshot(suite_root)
        again, again_out = compute(tracked_dir, LOCAL)
        yield {"plain": (plain, plain_out), "tracked": (tracked, tracked_out), "again": (again, again_out),
               "root": suite_root, "before": before, "after": _snapshot(suite_root)}


def _snapshot(root: Path) -> dict[str, int]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{root / 'mlflow' / 'mlflow.db'}")
    return {"tensorboard": len(list((root / "tensorboard").glob("*/*/events.out.tfevents.*"))),
            "mlflow": len(client.search_runs([e.experiment_id for e in client.search_experiments()])),
            "wandb": len(list((root / "wandb").glob("offline-run-*")))}


def _computed(stages: Stages) -> list[tuple[str, str]]:
    return [tuple(s.split("/")) for s in stages.log.computed]  # type: ignore[misc]


def test_trackers_change_no_key_and_no_result(runs):
    plain, plain_out = runs["plain"]
    tracked, tracked_out = runs["tracked"]
    assert plain.log.computed == tracked.log.computed  # the same stages under the same keys
    for name in plain_out:
        assert tracked_out[name].ckpt.key == plain_out[name].ckpt.key
        assert tracked_out[name].info["metrics"] == plain_out[name].info["metrics"], name  # bit for bit
    same = [json.dumps(o["joint"].info["trajectories"], sort_keys=True) for o in (tracked_out, plain_out)]
    assert same[0] == same[1]  # losses and weights at every logged step (as JSON: NaN == NaN there)


def test_a_stage_from_the_store_logs_nothing(runs):
    again, again_out = runs["again"]
    assert again.log.computed == [] and all(o.reused for o in again_out.values())
    assert runs["after"] == runs["before"]  # no new event file, MLflow run or W&B run
    assert runs["before"]["tensorboard"] == len(runs["tracked"][0].log.computed)  # one run per computed stage


def _tb(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_logs_curves_final_metrics_and_config_per_cell_and_stage(runs):
    tracked, out = runs["tracked"]
    cell_dir = runs["root"] / "tensorboard" / f"{LABEL}_s0_{CELL[:8]}"
    folders = sorted(p.name for p in cell_dir.iterdir())
    assert len(folders) == len(tracked.log.computed)  # one folder per computed stage, none for reused ones
    for stage, key in _computed(tracked):
        assert sum(f.startswith(stage) and f.endswith(key[:8]) for f in folders) == 1, (stage, key, folders)
    joint = out["joint"]
    acc = _tb(cell_dir / f"joint[equal]_{joint.ckpt.key[:8]}")
    scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
    tasks = tracked.task_names
    # per-task losses are the trajectory the stage keeps (same steps, same values), and the total is their sum
    traj = joint.info["trajectories"]
    for t in tasks:
        assert [s for s, _ in scalars[f"loss/{t}"]] == traj["step"][1:]
        assert [v for _, v in scalars[f"loss/{t}"]] == pytest.approx(traj["loss"][t][1:], rel=1e-6)
        assert [v for _, v in scalars[f"weight/{t}"]] == pytest.approx(traj["weights"][t][1:])
    for i, (_, total) in enumerate(scalars["loss/total"]):
        assert total == pytest.approx(sum(traj["loss"][t][i + 1] for t in tasks), rel=1e-6)
    # the learning rate follows the linear schedule: lr · (T − s) / T after s of T steps
    steps = joint.info["telemetry"]["steps"]
    assert scalars["lr"] == [(s, pytest.approx(3e-3 * (steps - s) / steps, rel=1e-6)) for s, _ in scalars["lr"]]
    assert scalars["throughput/samples_per_s"] and all(v > 0 for _, v in scalars["throughput/samples_per_s"])
    # one validation point per epoch, equal to the stage's history; final metrics of every split, task and metric
    history = joint.info["history"]
    assert [v for _, v in scalars["epoch_validation/score"]] == pytest.approx([h["score"] for h in history])
    for split, per_task in joint.info["metrics"].items():
        for t, per_metric in per_task.items():
            for m, v in per_metric.items():
                assert scalars[f"{split}/{t}/{m}"] == [(steps, pytest.approx(v, rel=1e-6))]
    config = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert f"key: {joint.ckpt.key}" in config and "strategy: naive_mtl" in config and f"cell: {CELL}" in config


def test_mlflow_runs_are_tagged_by_cell_with_metrics_params_and_status(runs):
    from mlflow.tracking import MlflowClient

    tracked, out = runs["tracked"]
    client = MlflowClient(f"sqlite:///{runs['root'] / 'mlflow' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("bench-synthetic")
    found = client.search_runs([exp.experiment_id], f"tags.cell = '{CELL}'")
    assert sorted((r.data.tags["stage"], r.data.tags["stage_key"]) for r in found) == sorted(_computed(tracked))
    assert {r.info.status for r in found} == {"FINISHED"}
    assert {r.data.tags["cell_name"] for r in found} == {f"{LABEL}_s0_{CELL[:8]}"}
    joint = out["joint"]
    (run,) = [r for r in found if r.data.tags["stage_key"] == joint.ckpt.key]
    for split, per_task in joint.info["metrics"].items():
        for t, per_metric in per_task.items():
            for m, v in per_metric.items():
                assert run.data.metrics[f"{split}/{t}/{m}"] == pytest.approx(v, rel=1e-12)
    history = client.get_metric_history(run.info.run_id, "loss/clean")
    traj = joint.info["trajectories"]
    assert [(h.step, h.value) for h in history] == list(zip(traj["step"][1:], traj["loss"]["clean"][1:]))
    assert run.data.params["stage.key"] == joint.ckpt.key and run.data.params["strategy"] == "naive_mtl"
    assert run.data.params["suite.train.schedule"] == "linear"  # the resolved suite configuration
    config = json.loads(Path(client.download_artifacts(run.info.run_id, "config.json")).read_text())
    assert config["stage"]["inputs"]["weighting"] == "equal"


def _wandb_records(path: Path) -> list:
    """The records of an offline W&B run file (a LevelDB-style log of protobuf ``Record`` messages: a 7-byte file
    header, then 32 KiB blocks of chunks, each with a 7-byte header: checksum, length, type)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, out, buf = path.read_bytes(), 7, [], b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and n == 0:
            pos += left
            continue
        buf = data[pos + 7:pos + 7 + n] if kind in (1, 2) else buf + data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
    return out


@pytest.mark.skipif(not HAS_WANDB, reason="wandb is not installed (pip install 'mtbench[wandb]')")
def test_wandb_offline_runs_are_grouped_by_cell_with_config_and_summary(runs):
    tracked, out = runs["tracked"]
    files = sorted((runs["root"] / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == len(tracked.log.computed)
    joint = out["joint"]
    by_type: dict[str, list] = {}
    for f in files:
        recs = _wandb_records(f)
        (run,) = [r.run for r in recs if r.WhichOneof("record_type") == "run"]
        assert run.run_group == f"{LABEL}_s0_{CELL[:8]}"
        by_type.setdefault(run.job_type, []).append((run, recs))
    assert sorted(by_type) == sorted({s for s, _ in _computed(tracked)})
    (run, recs), = by_type["joint"]
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["stage"]["key"] == joint.ckpt.key and config["cell"] == CELL
    summary = {"/".join(u.nested_key) or u.key: json.loads(u.value_json)
               for r in recs if r.WhichOneof("record_type") == "summary" for u in r.summary.update}
    assert summary["test/clean/mse"] == pytest.approx(joint.info["metrics"]["test"]["clean"]["mse"], rel=1e-12)
    history = [{i.nested_key[0] if i.nested_key else i.key: json.loads(i.value_json) for i in r.history.item}
               for r in recs if r.WhichOneof("record_type") == "history"]
    logged = [(h["_step"], h["loss/clean"]) for h in history if "loss/clean" in h]
    traj = joint.info["trajectories"]
    assert logged == list(zip(traj["step"][1:], traj["loss"]["clean"][1:]))


class Recorder(Tracker):
    """Every call, in order (a plug-in tracker registered from outside bench/)."""

    calls: list[tuple] = []
    fail_on_log = False

    def start(self, run):
        Recorder.calls.append(("start", run.stage, run.group))

    def log(self, step, scalars):
        if Recorder.fail_on_log:
            raise ConnectionError("tracking server unreachable")
        Recorder.calls.append(("log", step, sorted(scalars)))

    def finish(self, metrics, ok=True):
        Recorder.calls.append(("finish", ok, sorted(metrics)))


@pytest.fixture
def recorder():
    with TRACKERS.scope():  # other tests (and doctests) list the valid trackers
        register_tracker("test_recorder")(Recorder)
        Recorder.calls, Recorder.fail_on_log = [], False
        yield Recorder


def test_a_plugin_tracker_sees_a_failed_stage_closed_as_failed(recorder, tmp_path):
    suite = build_suite(dict(OVERRIDES))
    store = Store(tmp_path, suite.name)
    stages = Stages(SuiteContext.load(suite, store), store, seed=0, trackers=trackers_from("test_recorder"))

    def broken(folder):
        raise RuntimeError("bad stage")

    with pytest.raises(RuntimeError, match="bad stage"):
        stages.custom("probe", {"v": 1}, (), broken)
    assert recorder.calls[-2:] == [("start", "probe", "s0"), ("finish", False, [])]


def test_a_tracker_that_raises_never_fails_or_changes_a_stage(recorder, tmp_path, capsys):
    recorder.fail_on_log = True
    suite = build_suite(dict(OVERRIDES))
    store = Store(tmp_path / "a", suite.name)
    out = Stages(SuiteContext.load(suite, store), store, seed=0, trackers=["test_recorder"]).finetune("clean")
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: tracker=")]
    assert len(warnings) == 1 and "tracker=test_recorder failed" in warnings[0] and "unreachable" in warnings[0]
    # init (no steps) opens and closes; the fine-tune's run is dropped at its first log, and the stage goes on
    assert [c[:2] for c in recorder.calls] == [("start", "init"), ("finish", True), ("start", "finetune")]
    store_b = Store(tmp_path / "b", suite.name)
    plain = Stages(SuiteContext.load(suite, store_b), store_b, seed=0).finetune("clean")
    assert out.info["metrics"] == plain.info["metrics"] and out.ckpt.key == plain.ckpt.key


def test_unknown_tracker_is_one_line_with_the_closest_name():
    with pytest.raises(BenchError) as e:
        trackers_from("tensorbord")
    assert str(e.value) == ("unknown tracker 'tensorbord' (did you mean 'tensorboard'?); "
                            "valid: mlflow, tensorboard, wandb")
    with pytest.raises(BenchError, match=r"tracker=\[tensorboard,mlflow\]"):
        trackers_from(["tensorboard", "mlflow"], sweep=True)  # tracker=tensorboard,mlflow is a sweep
    with pytest.raises(BenchError, match="must be a tracker name or a list of them"):
        trackers_from([1, 2])
    assert trackers_from(None) == [] and trackers_from(["tensorboard", "tensorboard"]) == ["tensorboard"]


def test_a_missing_backend_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(BenchError) as e:
        trackers_from(["tensorboard", "wandb"])
    assert str(e.value) == "tracker=wandb needs the wandb package: pip install 'mtbench[wandb]'"


def test_wandb_runs_offline_unless_logged_in(monkeypatch, tmp_path):
    from bench.track.wandb_ import mode

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert mode() == "offline"
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    (tmp_path / "netrc").chmod(0o600)
    assert mode() == "online"  # what `wandb login` leaves
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert mode() == "disabled"  # the user's choice wins


def _wired() -> None:
    """Skip until bench/runner.py and bench/plan.py accept ``tracker=`` (the lead wires them)."""
    from bench.plan import make_plan

    try:
        make_plan(["suite=synthetic", "strategy=naive_mtl", "tracker=tensorboard"])
    except BenchError as e:
        if "unknown key 'tracker'" in str(e):
            pytest.skip("tracker= is not wired into the command line yet")
        raise


def test_cli_typo_is_one_line_and_exit_2(capsys):
    _wired()
    code = main(["run", "suite=synthetic", "tracker=tensorbord"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "did you mean 'tensorboard'" in err[0] and "Traceback" not in err[0]


def test_the_cell_hash_ignores_the_tracker():
    _wired()
    from bench.plan import make_plan

    base = [*FAST, "strategy=separate,naive_mtl,fuse_then_joint", "seeds=2"]
    cells = [[v.cell_hash(s) for v, s in make_plan(base + extra).cells]
             for extra in ([], ["tracker=tensorboard"], ["tracker=[tensorboard,mlflow]"])]
    assert cells[0] == cells[1] == cells[2] and len(set(cells[0])) == 6


def test_cli_run_logs_each_computed_stage_under_its_cell_and_a_rerun_logs_nothing(tmp_path, capsys):
    _wired()
    results = tmp_path / "results"
    args = ["run", *FAST, "strategy=naive_mtl", f"results_dir={results}", "tracker=[tensorboard]"]
    assert main(args) == 0, capsys.readouterr()
    (record,) = records(results)
    cell_dir = results / "synthetic" / "tensorboard" / f"naive_mtl_s0_{record['cell'][:8]}"
    events = sorted(cell_dir.glob("*/events.out.tfevents.*"))
    assert len(events) == len(record["stages_computed"]) and any(p.parent.name.startswith("joint") for p in events)
    capsys.readouterr()
    assert main(args) == 0
    assert "nothing was trained" in capsys.readouterr().out
    assert sorted(cell_dir.glob("*/events.out.tfevents.*")) == events


def test_finite_scalars_only():
    """A NaN loss of a task without a batch in an interval is left out rather than plotted as a gap marker."""
    from bench.track.base import StageRun, _Run

    class Keep(Tracker):
        seen: list = []

        def start(self, run):
            pass

        def log(self, step, scalars):
            Keep.seen.append(dict(scalars))

        def finish(self, metrics, ok=True):
            pass

    run = _Run([Keep], StageRun("s", Path("."), 0, "joint", "k", ("a", "b")))
    run.log(3, {"loss/a": 1.0, "loss/b": math.nan, "lr": 0.1})
    assert Keep.seen == [{"loss/a": 1.0, "lr": 0.1}]


PLUGIN = '''
import csv

from bench.track import StageRun, Tracker, register_tracker


@register_tracker("csv_test")
class Csv(Tracker):
    """One CSV of scalars per computed stage."""

    def start(self, run: StageRun) -> None:
        path = run.root / "csv" / run.group / f"{run.name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "w", newline="")
        self.rows = csv.writer(self.file)

    def log(self, step, scalars):
        self.rows.writerows((step, k, v) for k, v in scalars.items())

    def finish(self, metrics, ok=True):
        self.rows.writerows(("final", k, v) for k, v in metrics.items())
        self.file.close()
'''


def test_a_plugin_tracker_from_a_strategy_folder_needs_no_edit_of_bench(tmp_path, capsys):
    """docs/trackers.md's example: a file in a plugin_dirs folder registers `tracker=csv_test`."""
    _wired()
    import csv

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "csv_tracker.py").write_text(PLUGIN)
    results = tmp_path / "results"
    with TRACKERS.scope():
        code = main(["run", *FAST, "strategy=naive_mtl", f"results_dir={results}", f"plugin_dirs=[{plugins}]",
                     "tracker=[csv_test,tensorboard]"])
        assert code == 0, capsys.readouterr()
    (record,) = records(results)
    (joint,) = (results / "synthetic" / "csv").glob(f"naive_mtl_s0_{record['cell'][:8]}/joint*.csv")
    rows = list(csv.reader(joint.open()))
    final = {k: float(v) for step, k, v in rows if step == "final"}
    assert final["test/clean/mse"] == record["rows"]["naive_mtl"]["metrics"]["test"]["clean"]["mse"]
    assert {k for step, k, _ in rows if step != "final"} >= {"loss/total", "lr", "weight/clean"}
