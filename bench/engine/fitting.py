"""The engine's loop for a small set of parameters (fusion coefficients, a gating network): :func:`optimise`."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from bench.engine import resume
from bench.engine.console import ProgressLines, live_bar, progress
from bench.engine.device import autocast
from bench.engine.telemetry import MemoryMeter
from bench.errors import CellFailed


@dataclass
class FitResult:
    """What :func:`optimise` did: the mean loss of every logging interval and the run's telemetry."""

    losses: list[float]
    telemetry: dict[str, Any]


def optimise(params: list[torch.Tensor], loss_at: Callable[[int], torch.Tensor], steps: int, *, lr: float,
             device: torch.device, precision: str = "fp32", work_dir: Path | None = None, desc: str = "optimise",
             log_every: int = 10, save_every: int = 50, on_log=None) -> FitResult:
    """Minimise ``loss_at(step)`` over the leaf tensors ``params`` with Adam for ``steps`` steps.

    The engine's loop for a *small* set of parameters (fusion coefficients, a gating network): the forward runs under
    the configured autocast precision, the backward outside it; a non-finite loss stops with one line; telemetry
    matches :class:`~bench.engine.trainer.Trainer`'s (step time, peak memory, device). ``loss_at`` must be a function
    of the step index alone (draw batch ``step`` of a fixed sequence), so that a run resumed from
    ``work_dir/resume_fit.safetensors``, written every ``save_every`` steps (:mod:`bench.engine.resume`), continues
    exactly where it stopped. No weight decay: a coefficient whose gradient is zero stays where it started.
    ``on_log(step, {"loss/total": mean})`` sees every logging interval (trackers).

    Example (a least-squares fit):
        >>> w = torch.zeros(2, requires_grad=True)
        >>> x, y = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([1.0, -2.0])
        >>> r = optimise([w], lambda step: ((x @ w - y) ** 2).sum(), 300, lr=0.1, device=torch.device("cpu"))
        >>> [round(v, 2) for v in w.tolist()]
        [1.0, -2.0]
    """
    opt = torch.optim.Adam(params, lr=lr)
    path = Path(work_dir) / resume.FIT_RESUME_FILE if work_dir is not None else None
    start, losses, train_time = 0, [], 0.0
    ck = resume.read(path, resume.LEGACY_FIT_RESUME_FILE, resume.FIT_KIND, desc, "the fit restarts")
    if ck is not None:
        with torch.no_grad():
            for p, v in zip(params, ck["params"]):
                p.copy_(v)
        opt.load_state_dict(ck["opt"])
        start, losses, train_time = int(ck["step"]), list(ck["losses"]), float(ck["train_time"])
        print(f"[{desc}] resumed at step {start}", file=sys.stderr)
    mem = MemoryMeter(device)
    bar = tqdm(total=steps, initial=start, desc=desc, unit="step", leave=False, mininterval=0.5,
               disable=not live_bar())
    lines = ProgressLines.enabled()
    acc, cnt = torch.zeros((), device=device), 0
    t0 = time.perf_counter()
    for step in range(start, steps):
        with autocast(device, precision):
            loss = loss_at(step)
        if not torch.isfinite(loss):
            raise CellFailed(f"[{desc}] loss became {loss.item()} at step {step}; lower the learning rate")
        opt.zero_grad(set_to_none=True)
        loss.float().backward()
        opt.step()
        acc += loss.detach().float()
        cnt += 1
        bar.update(1)
        if lines and progress.due():
            now, done = time.perf_counter(), step + 1 - start
            recent = (acc / cnt).item() if cnt else (losses[-1] if losses else None)
            progress.emit(desc, f"step {step + 1}/{steps}", recent, None, (now - t0) / done * (steps - step - 1))
        if (step + 1) % log_every == 0 or step + 1 == steps:
            losses.append((acc / cnt).item())  # one host sync per logging interval
            acc.zero_()
            cnt = 0
            mem.sample()
            if on_log is not None:
                on_log(step + 1, {"loss/total": losses[-1]})
        if path is not None and (step + 1) % save_every == 0 and step + 1 < steps:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            resume.write({"params": [p.detach().cpu() for p in params], "opt": opt.state_dict(), "step": step + 1,
                          "losses": losses, "train_time": train_time + time.perf_counter() - t0}, path,
                         resume.FIT_KIND)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_time += time.perf_counter() - t0
    bar.close()
    if path is not None:
        path.unlink(missing_ok=True)
    done = max(1, steps)
    return FitResult(losses, {"steps": steps, "train_time_s": train_time, "step_time_ms": 1000 * train_time / done,
                              "optimised_params": sum(p.numel() for p in params), "device": str(device),
                              "precision": precision, **mem.report()})
