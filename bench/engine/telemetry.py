"""What a training stage measures about itself: peak memory, where a step's time goes, and the telemetry it reports.

:func:`stage_telemetry` turns a finished (or stopped) stage's :class:`~bench.engine.state.TrainState` into the
``telemetry`` of its record: throughput, step time and its breakdown by phase, peak memory, MFU on known GPUs, and
under ``train.compile`` the compile time set apart from the steady steps (:mod:`bench.engine.compiled`).
"""

from __future__ import annotations

import os
import time
from typing import Any

import psutil
import torch

from bench.config import TrainConfig
from bench.engine.state import TrainState
from bench.model import MultiTaskModel


class MemoryMeter:
    """Peak memory of a stage: CUDA max allocated/reserved on GPU, sampled process RSS on the host."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.proc = psutil.Process(os.getpid())
        self.peak_rss = self.proc.memory_info().rss
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(device)
        self.device = device

    def sample(self) -> None:
        self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)

    def report(self) -> dict[str, Any]:
        self.sample()
        out: dict[str, Any] = {"peak_rss_mb": self.peak_rss / 2**20}
        if self.cuda:
            out["peak_memory_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
            out["peak_reserved_mb"] = torch.cuda.max_memory_reserved(self.device) / 2**20
            out["memory_kind"] = "cuda_max_allocated"
        else:
            out["peak_memory_mb"] = out["peak_rss_mb"]
            out["memory_kind"] = "host_rss"
        return out


class PhaseTimer:
    """Where a step's time goes, without a host sync per step.

    On the CPU phases are timed with ``perf_counter``; on a GPU each phase boundary records a CUDA event, and the
    events are read (one synchronisation) only when :meth:`flush` runs at the end of an epoch.
    """

    def __init__(self, device: torch.device, totals: dict[str, float]):
        self.cuda = device.type == "cuda"
        self.totals = totals
        self.pending: list[tuple[str, Any, Any, dict[str, float]]] = []  # phase, start, end, the totals it adds to
        self.last: Any = None

    def _now(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def start(self) -> None:
        self.last = self._now()

    def mark(self, phase: str) -> None:
        now = self._now()
        if self.cuda:
            self.pending.append((phase, self.last, now, self.totals))
        else:
            self.totals[phase] += now - self.last
        self.last = now

    def checkpoint(self) -> Any:
        """Where the totals stand now, for :meth:`set_aside` (on a GPU: how many phases are pending)."""
        return len(self.pending) if self.cuda else dict(self.totals)

    def set_aside(self, point: Any, aside: dict[str, float]) -> None:
        """Move the phases timed since ``point`` from the totals to ``aside`` (a step that compiled)."""
        if self.cuda:
            self.pending[point:] = [(phase, a, b, aside) for phase, a, b, _ in self.pending[point:]]
        else:
            for phase, before in point.items():
                aside[phase] = aside.get(phase, 0.0) + self.totals[phase] - before
                self.totals[phase] = before

    def flush(self) -> None:
        if self.pending:
            self.pending[-1][2].synchronize()
            for phase, a, b, totals in self.pending:
                totals[phase] = totals.get(phase, 0.0) + a.elapsed_time(b) / 1000
            self.pending.clear()


# dense peak FLOP/s by device and precision, for model FLOP utilisation (MFU)
_PEAK = {("H200", "bf16"): 989e12, ("H100", "bf16"): 989e12, ("A100", "bf16"): 312e12,
         ("H200", "fp32"): 67e12, ("H100", "fp32"): 67e12, ("A100", "fp32"): 19.5e12}


def peak_flops(device: torch.device, precision: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    prec = "bf16" if precision in ("bf16", "fp16") else "fp32"
    for (gpu, p), v in _PEAK.items():
        if gpu in name and p == prec:
            return v
    return None


def stage_telemetry(state: TrainState, cfg: TrainConfig, model: MultiTaskModel, device: torch.device,
                    mem: MemoryMeter, steps_per_epoch: int) -> dict[str, Any]:
    """Throughput, step time and MFU over the steady steps: under ``train.compile`` the steps that compiled are
    left out (their time, samples and tokens) and reported as ``compile_*``; ``train_time_s`` is the whole
    training time. Without compile every step is steady and nothing is left out."""
    timers = state.timers
    excl = cfg.compile and state.step > state.compile_steps
    c_time, c_steps = (state.compile_time, state.compile_steps) if excl else (0.0, 0)
    c_samples, c_tokens = (state.compile_samples, state.compile_tokens) if excl else (0, 0)
    time_s, steps = state.train_time - c_time, state.step - c_steps
    if cfg.compile and not excl:  # no steady step: the phases of the compiling steps count too
        timers = {k: v + state.compile_timers.get(k, 0.0) for k, v in timers.items()}
    tel = {
        "train_time_s": state.train_time,
        "train_samples": state.samples,
        "train_samples_per_task": dict(state.task_samples),
        "train_samples_per_s": (state.samples - c_samples) / max(time_s, 1e-9),
        "steps": state.step,
        "epochs_run": state.epoch,
        # fractional when a matched budget cuts the last epoch short
        "epochs": state.step / steps_per_epoch,
        "step_time_ms": 1000 * time_s / max(1, steps),
        "step_breakdown_ms": {k: 1000 * v / max(1, steps) for k, v in timers.items()},
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": cfg.precision,
        **mem.report(),
    }
    if cfg.compile:
        tel.update(compile_time_s=state.compile_time, compile_steps=state.compile_steps,
                   compile_samples=state.compile_samples, throughput_excludes_compile=excl)
        if state.tokens:
            tel["compile_tokens"] = state.compile_tokens
    if state.degenerate:  # steps where the balancer took a fallback or hit a bound (Balancer.flag)
        tel["degenerate"] = dict(sorted(state.degenerate.items()))
    if state.tokens:
        tel["train_tokens_per_s"] = (state.tokens - c_tokens) / max(time_s, 1e-9)
        peak = peak_flops(device, cfg.precision)
        if peak:
            # training FLOPs ≈ 6 × parameters × tokens (Kaplan et al.); backbone parameters only
            n = sum(p.numel() for p in model.backbone.parameters())
            tel["mfu"] = 6 * n * tel["train_tokens_per_s"] / peak
    return tel
