"""Nested Python state in one safetensors file, written and read without pickle.

What the store keeps between processes besides model checkpoints (a training stage's resume state, the encoded-data
cache) is a tree of dicts, lists and tuples whose leaves are tensors, numpy arrays, numbers, strings, booleans and
``None``. :func:`save` puts every tensor and array into a safetensors file and the tree itself, with each tensor
replaced by a reference, into the file's JSON metadata; :func:`load` reads it back as it was (dtypes, shapes, devices,
tuples, integer dict keys, numpy scalars, NaN and ±inf included). Nothing in such a file can run code when read, so a
results folder from anywhere is safe to open. Anything else in the tree (an arbitrary object) is refused when
saving (:class:`TypeError`), never silently dropped. One file, written atomically: a reader sees the old state or
the whole new one.

Example:
    >>> import tempfile, numpy as np
    >>> path = Path(tempfile.mkdtemp()) / "s.safetensors"
    >>> save({"w": torch.arange(3), "order": np.array([2, 0, 1]), "best": -math.inf, 3: (1, None)}, path, "demo")
    >>> state = load(path, "demo")
    >>> state["w"], state["order"], state["best"], state[3]
    (tensor([0, 1, 2]), array([2, 0, 1]), -inf, (1, None))
"""

from __future__ import annotations

import json
import math
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.store import atomic_write

FORMAT = "bench-state/1"


class StateError(Exception):
    """The file is not a state file of this kind (absent, torn, another format such as an old pickle)."""


def save(obj: Any, path: Path, kind: str) -> None:
    """Write ``obj`` to ``path`` (atomic, fsynced). ``kind`` names what it is; :func:`load` checks it."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()

    def put(t: torch.Tensor) -> str:
        t = t.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr() if t.numel() else 0
        if ptr and ptr in storages:  # views of one storage (tied weights): safetensors wants each stored once
            t = t.clone()
            ptr = t.untyped_storage().data_ptr()
        storages.add(ptr)
        name = str(len(tensors))
        tensors[name] = t
        return name

    def enc(v: Any) -> Any:
        if v is None or isinstance(v, bool):
            return v
        if isinstance(v, np.generic):  # before int and float: np.float64 is a float
            return {"$npscalar": v.dtype.str, "value": enc(v.item())}
        if isinstance(v, int):
            return int(v)
        if isinstance(v, float):
            return float(v) if math.isfinite(v) else {"$float": repr(float(v))}
        if isinstance(v, str):
            return str(v)
        if isinstance(v, torch.Tensor):
            out = {"$tensor": put(v)}
            if v.device.type != "cpu":
                out["device"] = str(v.device)
            if v.requires_grad:
                out["grad"] = True
            return out
        if isinstance(v, np.ndarray):
            if v.dtype.hasobject:
                raise TypeError(f"cannot store a numpy array of Python objects ({v.dtype}) in a state file")
            raw = np.ascontiguousarray(v)
            return {"$ndarray": put(torch.from_numpy(raw.reshape(-1).view(np.uint8).copy())), "dtype": raw.dtype.str,
                    "shape": list(raw.shape)}
        if isinstance(v, list):
            return [enc(x) for x in v]
        if isinstance(v, tuple):
            return {"$tuple": [enc(x) for x in v]}
        if isinstance(v, dict):
            if all(isinstance(k, str) and not k.startswith("$") for k in v):
                out = {k: enc(x) for k, x in v.items()}
            else:
                out = {"$items": [[enc(k), enc(x)] for k, x in v.items()]}
            meta = getattr(v, "_metadata", None)  # a module's state_dict: the versions load_state_dict reads
            return {"$statedict": out, "metadata": enc(dict(meta))} if isinstance(meta, dict) else out
        raise TypeError(f"cannot store a {type(v).__module__}.{type(v).__qualname__} in a state file")

    meta = {"format": FORMAT, "kind": kind, "state": json.dumps(enc(obj), allow_nan=False, separators=(",", ":"))}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())


def load(path: Path, kind: str, device: str | torch.device | None = None) -> Any:
    """Read what :func:`save` wrote. Tensors return to the device they were saved from when it exists here (else
    the CPU), unless ``device`` says where. Raises :class:`StateError` for anything that is not such a file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT or meta.get("kind") != kind:
                raise StateError(f"{path} is not a {kind!r} state file ({meta.get('format')}, {meta.get('kind')})")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        tree = json.loads(meta["state"])
    except StateError:
        raise
    except Exception as e:  # torn, truncated, not safetensors at all (an old pickle), bad JSON
        raise StateError(f"{path} cannot be read as a state file: {str(e).strip().splitlines()[0] if str(e) else e!r}"
                         ) from None

    def where(saved: str | None) -> torch.device:
        if device is not None:
            return torch.device(device)
        if saved is None:
            return torch.device("cpu")
        d = torch.device(saved)
        if d.type == "cuda" and not (torch.cuda.is_available() and (d.index or 0) < torch.cuda.device_count()):
            return torch.device("cpu")
        return d

    def dec(v: Any) -> Any:
        if isinstance(v, list):
            return [dec(x) for x in v]
        if not isinstance(v, dict):
            return v
        if "$tensor" in v:
            t = tensors[v["$tensor"]]
            d = where(v.get("device"))
            t = t.to(d) if d.type != "cpu" else t
            return t.requires_grad_() if v.get("grad") else t
        if "$ndarray" in v:
            raw = tensors[v["$ndarray"]].numpy()
            return raw.view(np.dtype(v["dtype"])).reshape(v["shape"])
        if "$float" in v:
            return float(v["$float"])
        if "$npscalar" in v:
            return np.dtype(v["$npscalar"]).type(dec(v["value"]))
        if "$statedict" in v:
            out = OrderedDict(dec(v["$statedict"]))
            out._metadata = OrderedDict(dec(v["metadata"]))  # type: ignore[attr-defined]
            return out
        if "$tuple" in v:
            return tuple(dec(x) for x in v["$tuple"])
        if "$items" in v:
            return {dec(k): dec(x) for k, x in v["$items"]}
        return {k: dec(x) for k, x in v.items()}

    try:
        return dec(tree)
    except Exception as e:
        raise StateError(f"{path} holds a malformed state tree: {e!r}") from None
