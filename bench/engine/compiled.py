"""``train.compile``: the backbone compiled for the training steps, and the steps that compiled counted apart.

A step during which torch.compile compiled something (the first steps, a recompilation) is timed on the host
(compiling blocks it) and counted apart, with its samples and tokens, in the ``compile_*`` fields of the
:class:`~bench.engine.state.TrainState`: telemetry reports throughput over the other, steady steps and the compile
time separately.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import torch

from bench.engine.state import TrainState
from bench.engine.telemetry import PhaseTimer
from bench.model import MultiTaskModel


class CompiledForward:
    """``model``'s own forward with its backbone compiled (``train.compile``), for the training steps.

    Only the backbone: a whole compiled :class:`MultiTaskModel` guards on the task names its heads are looked up by,
    so a multi-input suite compiled one graph per task (and per ``features=`` / grad mode variant, soon past Dynamo's
    recompile limit of 8, where it silently runs eagerly); the backbone does not see them, and the heads are small.
    ``dynamic=True``: text batches are padded to their longest row, so every new length would recompile. Duck sizing
    is off (see :meth:`settings`). Evaluation keeps the uncompiled model (``evaluate`` calls ``model``)."""

    def __init__(self, model: MultiTaskModel):
        self.model = model
        self.backbone = torch.compile(model.backbone, dynamic=True)

    def __call__(self, *args, **kwargs):
        modules = self.model._modules
        plain = modules["backbone"]
        modules["backbone"] = self.backbone  # for this call only: state_dict keys and evaluation stay as they are
        try:
            return self.model(*args, **kwargs)
        finally:
            modules["backbone"] = plain

    @staticmethod
    @contextlib.contextmanager
    def settings():
        """torch.compile settings for a whole training step (forward, the balancer's backward(s), FAMO's recompute),
        restored after it. No duck sizing: with it a first batch whose length equals the batch size (16 × 16) ties
        the two sizes into one symbol, and the next batch recompiles. No donated buffers: a compiled backward that
        frees its saved tensors fails the balancers that backpropagate through the graph more than once (GradNorm,
        ``retain_graph=True``); the flag is read when the graph compiles and again at every backward."""
        from torch._functorch import config as functorch_config
        from torch.fx.experimental import _config as fx_config

        with fx_config.patch(use_duck_shape=False), functorch_config.patch(donated_buffer=False):
            yield


def compile_events() -> int:
    """A count of torch.compile's work in this process so far: the frames Dynamo converted (a first call, and every
    recompilation after a guard failed: a new shape, grad mode, argument) plus the FX graphs it compiled. A Python
    counter (``torch._dynamo.utils.counters``): reading it costs a dict lookup and no device sync, so the training
    loop reads it around every step to tell the steps that compiled from the steady ones."""
    from torch._dynamo.utils import counters

    return counters["frames"]["total"] + counters["stats"]["unique_graphs"]


def run_counting_compiles(run: Callable[[], None], state: TrainState, timer: PhaseTimer,
                          device: torch.device) -> None:
    """``run()`` one training step under :meth:`CompiledForward.settings`; when torch.compile compiled during it,
    count its time, samples and tokens (which ``run`` added to ``state``) and its phases apart."""
    before, point = compile_events(), timer.checkpoint()
    samples, tokens = state.samples, state.tokens
    t0 = time.perf_counter()
    with CompiledForward.settings():
        run()
    if compile_events() != before:
        if device.type == "cuda":  # rare: the compiled step's own kernels belong to its window too
            torch.cuda.synchronize(device)
        state.compile_time += time.perf_counter() - t0
        state.compile_steps += 1
        state.compile_samples += state.samples - samples
        state.compile_tokens += state.tokens - tokens
        timer.set_aside(point, state.compile_timers)
