"""Where and in what precision the engine computes: the device, the seeds, the autocast context, batch transfer."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from bench.errors import BenchError


def resolve_device(name: str) -> torch.device:
    """``train.device``: ``auto`` is the GPU when one is visible, else the CPU; a CUDA name without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError(f"train.device={name!r} but no CUDA device is visible; use train.device=cpu or auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """A batch's tensors on ``device``; the copy overlaps compute when the host memory is pinned."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def autocast(device: torch.device, precision: str):
    """The forward's autocast context for ``train.precision`` (none under fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
