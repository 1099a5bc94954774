"""The trainer's typed state and its resume file: the file's layout is the state's fields, and a file written before
a field existed still resumes (the field keeps its default)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench import safestate
from bench.backbones.simple import MLP, ArrayPreprocessor
from bench.config import TaskConfig, TrainConfig
from bench.encode import EncodedSplit
from bench.engine import RESUME_FILE, Trainer, TrainState
from bench.model import MultiTaskModel
from bench.weighting import build_weighting

pytestmark = pytest.mark.usefixtures("one_thread")


def _trainer(work_dir, on_epoch=None) -> Trainer:
    tasks = [TaskConfig(name=f"t{i}", input="vector", target="classification", num_classes=3) for i in range(2)]
    rng = np.random.default_rng(0)
    pre = ArrayPreprocessor("bench")

    def split(n):
        x = rng.standard_normal((n, 8)).astype(np.float32)
        return EncodedSplit(pre.encode(x), {t.name: torch.as_tensor(rng.integers(0, 3, n)) for t in tasks}, None)

    shared = {"train": split(96), "validation": split(32)}
    torch.manual_seed(0)
    model = MultiTaskModel(MLP(8, 16, 2), tasks)
    cfg = TrainConfig(epochs=3, batch_size=16, lr=1e-2, num_workers=0, log_every=4)
    return Trainer(model, tasks, {t.name: shared for t in tasks}, build_weighting("equal", tasks), cfg, 0,
                   pre.collate, True, work_dir=work_dir, on_epoch=on_epoch)


class _Stop(Exception):
    pass


def _stop_at(epoch: int):
    def stop(e, score):
        if e == epoch:
            raise _Stop
    return stop


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
    full = _trainer(None).fit()
    with pytest.raises(_Stop):
        _trainer(tmp_path, _stop_at(2)).fit()
    path = tmp_path / RESUME_FILE
    ck = safestate.load(path, "resume")
    ck["state"] = {k: v for k, v in ck["state"].items() if not k.startswith("compile_")}
    del ck["loss_acc"], ck["loss_cnt"]
    safestate.save(ck, path, "resume")
    res = _trainer(tmp_path).fit()
    assert "[train] resumed after epoch 1" in capsys.readouterr().err
    assert [h["epoch"] for h in res.history] == [1, 2, 3]
    assert [h["score"] for h in res.history] == [h["score"] for h in full.history]
