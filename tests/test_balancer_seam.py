"""The engine's balancer seam: the default path is today's step bit for bit, and the hooks a plugin needs (every
task's loss per step, the shared features, the epoch boundary with its mean losses, the losses after the update)
arrive as documented."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.backbones.simple import MLP, ArrayPreprocessor
from bench.config import TaskConfig, TrainConfig
from bench.encode import EncodedSplit
from bench.engine import Trainer, _autocast, _to
from bench.model import MultiTaskModel, task_loss
from bench.weighting import WEIGHTINGS, Aggregator, Step, Weighting, build_weighting, register_weighting

DIM = 8


pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]


def _tasks(T: int = 3) -> list[TaskConfig]:
    return [TaskConfig(name=f"t{i}", input="vector", target="classification", num_classes=3) for i in range(T)]


def _trainer(weighting, single_input: bool = True, sampling: str = "proportional", trainer_cls=Trainer,
             epochs: int = 2, grad_clip: float | None = 1.0, T: int = 3) -> Trainer:
    tasks = _tasks(T)
    rng = np.random.default_rng(0)
    pre = ArrayPreprocessor("bench")

    def split(n):
        x = rng.standard_normal((n, DIM)).astype(np.float32)
        return EncodedSplit(pre.encode(x), {t.name: torch.as_tensor(rng.integers(0, 3, n)) for t in tasks}, None)

    if single_input:
        shared = {"train": split(96), "validation": split(32)}
        data = {t.name: shared for t in tasks}
    else:
        data = {t.name: {"train": split(64 + 16 * i), "validation": split(32)} for i, t in enumerate(tasks)}
    torch.manual_seed(0)
    model = MultiTaskModel(MLP(DIM, 16, 2), tasks, dropout=0.1)
    w = weighting if isinstance(weighting, torch.nn.Module) else build_weighting(weighting, tasks)
    cfg = TrainConfig(epochs=epochs, batch_size=16, lr=1e-2, grad_clip=grad_clip, sampling=sampling, log_every=2,
                      num_workers=0)
    return trainer_cls(model, tasks, data, w, cfg, 0, pre.collate, single_input)


class OldStepTrainer(Trainer):
    """The engine's step before the balancer seam, verbatim (combine → backward, hard-coded): the reference that the
    default path must equal bit for bit (here) and in throughput (benchmarks/test_aggregator_speed.py)."""

    def step(self) -> None:
        cfg, device, state, timer = self.cfg, self.device, self.state, self.timer
        timer.start()
        batches = [(spec, _to(b["inputs"], device), _to(b["targets"], device)) for spec, b in next(self.batches)]
        timer.mark("data")
        losses: dict[str, torch.Tensor] = {}
        for spec, x, ys in batches:
            with _autocast(device, cfg.precision):
                out = self.fwd(x, list(spec.targets))
            for t in spec.targets:
                losses[t] = task_loss(self.task_cfgs[t], out[t], ys[t])
            state.samples += len(spec.idx)
            lengths = self.data[spec.task][spec.split].lengths
            if lengths is not None:
                state.tokens += int(lengths[spec.idx].sum())
        timer.mark("forward")
        if device.type == "cpu":  # free on the CPU; on a GPU the check waits for the logging interval
            self._check_finite(losses, state.step)
        total_loss = self.w.combine(losses)
        timer.mark("weighting")
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total_loss).backward()
            self.scaler.unscale_(self.opt)
        else:
            total_loss.backward()
        timer.mark("backward")
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.sched.step()
        self.w.after_step()
        timer.mark("optimizer")
        for t, l in losses.items():
            self.meter.interval_sum[t] += l.detach()
            self.meter.interval_n[t] += 1
        state.step += 1
        if state.step % cfg.log_every == 0:
            self._log()


@pytest.mark.parametrize("single_input", [True, False])
@pytest.mark.parametrize("weighting", ["equal", "uncertainty"])
def test_default_path_is_bit_identical_to_the_old_step(single_input, weighting):
    new, old = _trainer(weighting, single_input), _trainer(weighting, single_input, trainer_cls=OldStepTrainer)
    torch.manual_seed(1)  # dropout draws from the global generator
    r_new = new.fit()
    torch.manual_seed(1)
    r_old = old.fit()
    for (k, a), b in zip(new.model.state_dict().items(), old.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert [h["score"] for h in r_new.history] == [h["score"] for h in r_old.history]
    for t, losses in r_new.trajectories["loss"].items():
        np.testing.assert_array_equal(losses, r_old.trajectories["loss"][t])  # NaN at step 0 compares equal


class Recorder(Weighting):
    """Equal weighting that records what the engine hands it."""

    def __init__(self, tasks, params=None):
        super().__init__(tasks, params)
        self.steps: list[tuple[set[str], float]] = []
        self.epochs: list[tuple[int, dict[str, float]]] = []
        self.after: list[dict[str, float]] = []

    def combine(self, losses):
        total = torch.stack(list(losses.values())).sum()
        self.steps.append((set(losses), float(total)))
        return total

    def after_step(self, step=None):
        self.after.append({t: float(v) for t, v in step.recompute().items()})

    def end_epoch(self, epoch, mean_losses):
        self.epochs.append((epoch, mean_losses))


def test_end_epoch_gets_each_epochs_mean_losses_and_after_step_the_recomputed_ones():
    rec = Recorder(_tasks())
    tr = _trainer(rec, single_input=True, epochs=3, grad_clip=None)
    tr.fit()
    per_epoch = tr.steps_per_epoch
    assert [e for e, _ in rec.epochs] == [1, 2, 3]
    # the mean of what the steps of each epoch saw (their losses summed to the recorded total per step)
    for k, (_, means) in enumerate(rec.epochs):
        totals = [tot for _, tot in rec.steps[k * per_epoch:(k + 1) * per_epoch]]
        assert sum(means.values()) == pytest.approx(np.mean(totals), rel=1e-5)
    # the losses recomputed after each update, on the same batches: with dropout off they are the post-step losses
    assert len(rec.after) == len(rec.steps) and set(rec.after[0]) == {"t0", "t1", "t2"}


def test_aggregators_get_every_task_each_step_and_features_on_single_input():
    seen = []

    with WEIGHTINGS.scope():  # the spy leaves no name behind for the next test's list of weightings
        @register_weighting("_test_spy_agg")
        class Spy(Aggregator):
            """Records the step it is handed, then sums the losses."""

            uses_features = True  # declared: an Aggregator gets the shared representations only when it asks

            def backward(self, losses, step: Step):
                seen.append((set(losses), None if step.features is None else len(step.features), len(step.shared),
                             sorted(step.heads)))
                step.backward(sum(losses.values()))

        for single in (True, False):
            seen.clear()
            tr = _trainer("_test_spy_agg", single_input=single, sampling="proportional", epochs=1)
            tr.fit()
            assert tr._sampling() == "all"  # forced for gradient-level balancers
            assert all(s == {"t0", "t1", "t2"} for s, *_ in seen)
            n_feats = {f for _, f, _, _ in seen}
            assert n_feats == ({1} if single else {3})  # one shared representation, or one per task batch
            assert seen[0][2] == len(list(tr.model.backbone.parameters()))
            assert seen[0][3] == ["t0", "t1", "t2"]


@pytest.mark.parametrize("name", ["pcgrad", "upgrad", "mgda", "famo", "dwa"])
@pytest.mark.parametrize("single_input", [True, False])
def test_methods_train_through_the_engine_and_record_weights(name, single_input):
    tr = _trainer(name, single_input=single_input, epochs=2)
    res = tr.fit()
    w = np.array([v for v in res.trajectories["weights"].values()])  # tasks × logged points
    assert w.shape[0] == 3 and np.isfinite(w[:, 1:]).all()
    assert res.history[-1]["score"] > res.history[0]["score"] - 0.5  # trained, no blow-up
    if name in ("mgda",):
        assert np.allclose(w[:, 1:].sum(0), 1.0, atol=1e-3)  # MGDA's weights are a convex combination


def test_resume_restores_aggregator_state(tmp_path):
    """GradVac keeps an EMA of pairwise similarities outside state_dict: a resumed stage must continue with it."""
    w = build_weighting("gradvac", _tasks())
    J = torch.tensor([[1.0, 0.0, 0.2], [-1.0, 1.0, 0.0], [0.5, -0.5, 1.0]])
    theta = torch.zeros(3, requires_grad=True)
    for _ in range(3):
        z = (theta + 0).unsqueeze(0)
        w.backward({f"t{i}": (z @ g).sum() for i, g in enumerate(J)}, Step(shared=[theta], features=[z]))
    sd = w.state_dict()
    torch.save(sd, tmp_path / "w.pt")
    w2 = build_weighting("gradvac", _tasks())
    w2.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=False))
    phi = [m._phi_t for m in w.agg.modules() if hasattr(m, "_phi_t")][0]
    phi2 = [m._phi_t for m in w2.agg.modules() if hasattr(m, "_phi_t")][0]
    assert phi is not None and torch.equal(phi, phi2)


@pytest.mark.parametrize("name", ["pcgrad", "upgrad", "famo"])
@pytest.mark.parametrize("single_input", [True, False])
def test_bf16_autocast_trains_with_both_kinds(name, single_input):
    """The forward runs under autocast (bf16 features), the Jacobian and the backward outside it."""
    tr = _trainer(name, single_input=single_input, epochs=1)
    tr.cfg = tr.cfg.model_copy(update={"precision": "bf16"})
    res = tr.fit()
    assert all(np.isfinite(p.detach().numpy()).all() for p in tr.model.parameters())
    assert np.isfinite(res.history[-1]["score"])


def test_fuse_then_joint_takes_an_aggregator(tmp_path, capsys):
    import json

    from bench.cli import main

    rc = main(["run", "suite=synthetic", "strategy=fuse_then_joint", "strategy.weighting=upgrad", "train.epochs=1",
               f"results_dir={tmp_path}", "report=false"])
    assert rc == 0, capsys.readouterr().err
    (record,) = tmp_path.rglob("record.json")
    rows = json.loads(record.read_text())["rows"]
    assert set(rows) == {"fused", "fuse_then_joint"}
    w = np.array(list(rows["fuse_then_joint"]["trajectories"]["weights"].values()))
    assert w.shape[0] == 5 and np.isfinite(w[:, 1:]).all()
