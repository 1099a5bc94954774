"""Model checkpoints on disk: the shared backbone and the per-task heads as two safetensors files (and, for a
model with an architecture between them, its modules and its name as two more).

Keeping them apart is what lets fusion stream over backbones alone while each task keeps its own head.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from bench.store import atomic_write

BACKBONE_FILE = "backbone.safetensors"
HEADS_FILE = "heads.safetensors"
ARCH_FILE = "arch.safetensors"  # the architecture's modules, when the model has one (bench.architectures)
ARCH_SPEC = "arch.json"  # its name and parameters: what rebuilds it


def buffer_names(module: nn.Module) -> list[str]:
    return [n for n, _ in module.named_buffers()]


def save_state(state: dict[str, torch.Tensor], path: Path, buffers: list[str] | None = None) -> None:
    """Atomically write a safetensors file (write to a temp name, fsync, rename)."""
    meta = {"buffers": json.dumps(sorted(buffers or []))}
    with atomic_write(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp), metadata=meta)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())


def load_state(path: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    out = {}
    with safe_open(str(path), framework="pt", device=device) as f:
        for k in f.keys():
            out[k] = f.get_tensor(k)
    return out


def read_buffers(path: Path) -> list[str]:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return json.loads(meta.get("buffers", "[]"))


def state_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers: about the size of its checkpoint on disk (safetensors adds a small
    header), what :func:`bench.store.estimate_bytes` needs for each planned checkpoint.

    >>> state_bytes(nn.Linear(16, 4))  # (16 * 4 + 4) float32 numbers
    272
    """
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def save_model(model: nn.Module, folder: Path) -> None:
    """Write ``model.backbone`` and ``model.heads`` of a MultiTaskModel into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # tied or shared storages must be cloned for safetensors
    bb = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    save_state(bb, folder / BACKBONE_FILE, buffer_names(model.backbone))
    heads = {k: v.clone() for k, v in model.heads.state_dict().items()}
    save_state(heads, folder / HEADS_FILE)
    arch = getattr(model, "architecture", None)
    if arch is not None:
        save_state({k: v.clone() for k, v in arch.state_dict().items()}, folder / ARCH_FILE, buffer_names(arch))
        spec = {"name": arch.name, "params": arch.params.model_dump(mode="json")}
        with atomic_write(folder / ARCH_SPEC) as tmp:
            tmp.write_text(json.dumps(spec, sort_keys=True))


def arch_spec(folder: Path) -> dict | None:
    """``{"name", "params"}`` of the architecture a checkpoint was saved with; None for hard sharing."""
    path = Path(folder) / ARCH_SPEC
    return json.loads(path.read_text()) if path.exists() else None


def weights_hash(module: torch.nn.Module) -> str:
    """A content hash of a module's parameters and buffers (names, shapes, dtypes, bytes)."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        # flattened first: 0-dim buffers (BatchNorm's num_batches_tracked) cannot be viewed as bytes
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
