"""The trainer's typed state and its resume file: the file's layout is the state's fields, and a file written before
a field existed still resumes (the field keeps its default)."""

from __future__ import annotations

import math

import pytest

from bench import safestate
from bench.engine import RESUME_FILE, TrainState
from tests.conftest import Stop, stop_at, tiny_trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_state_is_typed_and_its_dict_has_the_resume_files_keys():
    s = TrainState.start(["a", "b"], {"a": 1.0})
    assert s.epoch == 0 and s.best_score == -math.inf and s.traj.step == [0]
    d = s.to_dict()
    assert set(d) >= {"epoch", "step", "best_score", "best_epoch", "best_state", "history", "traj", "train_time",
                      "samples", "tokens", "bad_epochs", "compile_time", "compile_steps", "timers"}
    assert list(d["traj"]) == ["step", "weights", "loss"]
    old = {k: v for k, v in d.items() if not k.startswith("compile_")}  # written before compile was counted
    back = TrainState.from_dict(old)
    assert back.compile_steps == 0 and back.compile_timers == {} and back.traj.weights == s.traj.weights


def test_a_resume_file_of_an_earlier_layout_still_resumes(tmp_path, capsys):
    """A file without the compile counters and without the cut logging interval (``loss_acc``) resumes: the same
    epochs and validation scores as an uninterrupted run."""
    full = tiny_trainer(None, log_every=4).fit()
    with pytest.raises(Stop):
        tiny_trainer(tmp_path, stop_at(2), log_every=4).fit()
    path = tmp_path / RESUME_FILE
    ck = safestate.load(path, "resume")
    ck["state"] = {k: v for k, v in ck["state"].items() if not k.startswith("compile_")}
    del ck["loss_acc"], ck["loss_cnt"]
    safestate.save(ck, path, "resume")
    res = tiny_trainer(tmp_path, log_every=4).fit()
    assert "[train] resumed after epoch 1" in capsys.readouterr().err
    assert [h["epoch"] for h in res.history] == [1, 2, 3]
    assert [h["score"] for h in res.history] == [h["score"] for h in full.history]
