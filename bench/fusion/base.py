"""The fusion interface and the streaming driver :func:`fuse_files`.

A :class:`FusionMethod` fuses *one tensor name at a time*: it gets the pre-trained tensor θ0 (or None) and a lazy
sequence of the N task tensors θ_1..θ_N of that name, and returns the fused tensor. :func:`fuse_files` walks the
safetensors files name by name, so memory holds at most one name's tensors plus the growing output, never N
checkpoints. A method that needs a statistic over whole task vectors (global TIES trimming) computes it in
:meth:`FusionMethod.prepare`, a first pass that sees one task vector at a time.

Rules that do not depend on the method (``fuse_files`` applies them, methods never see these tensors):

* integer and bool tensors (``num_batches_tracked``, ``position_ids``, ...) are copied unchanged from θ0, or from
  the first checkpoint when no θ0 is given: they are counters and indices, not weights;
* float buffers (names in the file's ``buffers`` metadata: BatchNorm ``running_mean``/``running_var``) are the plain
  mean over the task models for *every* method. They are statistics of the features each fine-tune saw, not learned
  directions: task arithmetic θ0 + λΣτ_i on ``running_var`` can go negative (e.g. λ = 1, three tasks whose variance
  shrank), and TIES's trimming would mix statistics of different models entry by entry.

Example (a method in a few lines):
    >>> import torch
    >>> @register_fusion("first_doc")
    ... class First(FusionMethod):
    ...     '''Keeps the first task's weights (a toy).'''
    ...     def fuse(self, name, base, tensors, offset=0):
    ...         return tensors[0].clone()
    >>> build_fusion("first_doc", {}, n=2).fuse("w", None, [torch.ones(2), torch.zeros(2)])
    tensor([1., 1.])
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import safe_open

from bench.checkpoint import save_state
from bench.config import Frozen, NoParams
from bench.errors import BenchError
from bench.plugins.discovery import HINT
from bench.plugins.registry import Registry
from bench.specs import FusionSpec


class FusionMethod(ABC):
    """Fuses N task checkpoints (+ θ0) one tensor name at a time. Subclasses declare ``Params`` and :meth:`fuse`."""

    name: ClassVar[str] = ""  # the registered name (set by :func:`register_fusion`)
    Params: ClassVar[type[Frozen]] = NoParams
    #: True when the method works on task vectors τ_i = θ_i − θ0 and therefore needs the pre-trained file
    needs_base: ClassVar[bool] = False

    def __init__(self, params: Frozen | None = None, n: int = 1):
        self.params = params if params is not None else self.Params()
        self.n = n
        self.validate()

    def validate(self) -> None:  # noqa: B027 (an optional hook)
        """Check the params against n (e.g. one weight per checkpoint); raise BenchError naming the fix."""

    def prepare(self, names: list[str], base: TensorSource | None, tasks: list[TensorSource]) -> None:  # noqa: B027 (an optional hook)
        """Optional first pass over whole task vectors (one task at a time), e.g. TIES's global threshold."""

    def begin_tensor(self, name: str, base: TensorSource | None, tasks: list[TensorSource]) -> None:  # noqa: B027 (an optional hook)
        """Optional pass over one whole tensor before its chunks are fused, e.g. TIES's per-tensor threshold."""

    @abstractmethod
    def fuse(self, name: str, base: torch.Tensor | None, tensors: Sequence[torch.Tensor],
             offset: int = 0) -> torch.Tensor:
        """Fuse one chunk: flat elements ``offset:offset+len`` of tensor ``name`` (elementwise methods ignore
        ``offset``; it seeds DARE's mask). ``tensors`` is a lazy sequence: iterate it, don't copy it all."""

    def describe(self) -> dict[str, Any]:
        return {"method": _name_of(type(self)), **self.params.model_dump()}


#: every fusion method: the built-in modules of :mod:`bench.fusion` and the plug-ins register here
FUSIONS: Registry[type[FusionMethod]] = Registry("fusion method", FusionMethod, builtins=("bench.fusion",),
                                                 plugins=True, hint=HINT)


def register_fusion(name: str) -> Callable[[type[FusionMethod]], type[FusionMethod]]:
    """Class decorator: ``strategy.fusion=name`` builds this class (the registry sets ``cls.name``)."""
    return FUSIONS.register(name)


def _name_of(cls: type[FusionMethod]) -> str:
    """The registered name of ``cls`` (its class name when it is not registered itself, e.g. a subclass)."""
    return str(cls.__dict__.get("name") or cls.__name__)


def build_fusion(name: str, params: dict[str, Any] | None, n: int) -> FusionMethod:
    """Validate ``params`` for fusing ``n`` checkpoints and build the method (unknown names list the valid ones; a
    strategy names its method with a :class:`~bench.specs.FusionSpec`, which validates once)."""
    return FusionSpec.of(name, params).build(n)


# ---------------------------------------------------------------------------------------------- streaming

#: elements per chunk: every tensor is fused in flat chunks of at most this many entries, so a method's double
#: temporaries stay < 1 MiB each even for a 30k × 384 embedding matrix that is half of a small model. Small chunks
#: also keep glibc's heap from retaining freed temporaries: peak extra memory fusing 8 × 19 MiB checkpoints
#: measured ≈ 1.3× one checkpoint at 2^16 (output included) against ≈ 2.8× at 2^18.
CHUNK = 1 << 16


def chunk_ranges(numel: int, size: int = CHUNK) -> list[tuple[int, int]]:
    """[(start, stop)] covering ``range(numel)`` in steps of ``size`` (the same split in every pass)."""
    return [(s, min(s + size, numel)) for s in range(0, numel, size)] or [(0, 0)]


class TensorSource:
    """One open safetensors file: reads a tensor on demand (a zero-copy memory map, not a resident copy)."""

    def __init__(self, handle: Any, path: Path):
        self._f = handle
        self.path = path
        self.keys = list(handle.keys())

    def get(self, name: str) -> torch.Tensor:
        return self._f.get_tensor(name)

    def flat(self, name: str, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Flat elements ``start:stop`` of ``name`` (a view of the map: nothing is copied)."""
        return self.get(name).reshape(-1)[start:stop]

    def numel(self, name: str) -> int:
        return math.prod(self._f.get_slice(name).get_shape())


class LazyTensors(Sequence[torch.Tensor]):
    """Chunk ``start:stop`` of tensor ``name`` in each of the N task files, read on each access."""

    def __init__(self, sources: list[TensorSource], name: str, start: int = 0, stop: int | None = None):
        self._sources, self._name, self._range = sources, name, (start, stop)

    def __len__(self) -> int:
        return len(self._sources)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(len(self._sources))[i]]
        return self._sources[i].flat(self._name, *self._range)

    def __iter__(self) -> Iterator[torch.Tensor]:
        for s in self._sources:
            yield s.flat(self._name, *self._range)


class PeakMemory:
    """Peak growth of the process's *anonymous* resident memory (Linux ``RssAnon``), sampled every ``interval`` s.

    safetensors maps files instead of reading them, so the tensors it returns are file-backed page cache (``RssFile``),
    reclaimable and not counted here; what fusion really allocates (results, temporaries, the output) is anonymous.
    Where /proc is unavailable the peak reads 0.
    """

    def __init__(self, interval: float = 0.001):
        self.interval = interval
        self.base = self.peak = _rss_anon()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        self.peak = max(self.peak, _rss_anon())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    @property
    def extra(self) -> int:
        return max(0, self.peak - self.base)


def _rss_anon() -> int:
    try:
        with open("/proc/self/status") as f:
            m = re.search(r"RssAnon:\s+(\d+)\s*kB", f.read())
        return int(m.group(1)) * 1024 if m else 0
    except OSError:  # pragma: no cover - not Linux
        return 0


def _is_float(t: torch.Tensor) -> bool:
    return t.is_floating_point() or t.is_complex()


def fuse_files(base: Path | None, checkpoints: list[Path], method: FusionMethod, out: Path) -> dict[str, Any]:
    """Fuse ``checkpoints`` (safetensors, same names and shapes) with ``method`` into ``out``, streaming by name.

    Each float tensor is fused in flat chunks (:data:`CHUNK` entries): the working set is one chunk of θ0 and of
    each task, a few double temporaries, and the output being built.

    Returns stats: ``seconds``, ``tensors``, ``out_bytes``, ``checkpoint_bytes`` (the size of one input),
    ``peak_extra_bytes`` (peak anonymous-memory growth while fusing, output included) and the method's params.
    """
    t_start = time.perf_counter()
    state, buffers, stats = fuse_state(base, checkpoints, method)
    save_state(state, Path(out), buffers)
    del state
    stats["seconds"] = time.perf_counter() - t_start
    return stats


def fuse_state(base: Path | None, checkpoints: list[Path], method: FusionMethod,
               into: dict[str, torch.Tensor] | None = None,
               ) -> tuple[dict[str, torch.Tensor], list[str], dict[str, Any]]:
    """:func:`fuse_files` without the file: ``(fused state dict, buffer names, stats)`` in memory, for a search
    trial that evaluates the fused model and throws it away (writing and deleting a checkpoint per trial costs
    more than the fusion itself). ``into``: tensors to write the result into (a model's own ``state_dict()``, so
    the fused weights land in the model without a copy); same names, shapes and dtypes as the checkpoints."""
    t_start = time.perf_counter()
    checkpoints = [Path(c) for c in checkpoints]
    if not checkpoints:
        raise BenchError("fusion needs at least one checkpoint; got none")
    if len(checkpoints) != method.n:
        raise BenchError(f"fusion method was built for {method.n} checkpoints but got {len(checkpoints)}: "
                         f"{[str(c) for c in checkpoints]}")
    if method.needs_base and base is None:
        raise BenchError(f"fusion {_name_of(type(method))!r} works on task vectors and needs the pre-trained "
                         "checkpoint θ0; pass base=")
    for p in [base, *checkpoints] if base is not None else checkpoints:
        if not Path(p).is_file():
            raise BenchError(f"fusion input {str(p)!r} does not exist; fine-tune that task first")

    mem = PeakMemory()
    mem.start()
    with ExitStack() as stack:
        stack.callback(mem.stop)
        tasks = [TensorSource(stack.enter_context(safe_open(str(c), framework="pt")), c) for c in checkpoints]
        src0 = TensorSource(stack.enter_context(safe_open(str(base), framework="pt")), Path(base)) if base else None
        names = tasks[0].keys
        _check_same(names, tasks, src0)
        meta = (src0 or tasks[0])._f.metadata() or {}
        buffers = set(json.loads(meta.get("buffers", "[]")))
        fused_names = [k for k in names if k not in buffers and _is_float(tasks[0].get(k))]
        # allocate the whole output (lazily paged in as it is written) before any temporary, so the temporaries are
        # recycled above it rather than interleaved with it
        result = {k: _output(tasks[0], k, into) for k in names}
        method.prepare(fused_names, src0, tasks)

        ckpt_bytes = 0
        for name in names:
            first = tasks[0].get(name)
            ckpt_bytes += first.numel() * first.element_size()
            if not _is_float(first):  # counters and indices: copied, never averaged
                result[name].copy_(src0.get(name) if src0 is not None else first)
                continue
            flat = result[name].view(-1)
            if name not in buffers:
                method.begin_tensor(name, src0, tasks)
            for s, e in chunk_ranges(first.numel()):
                chunk = LazyTensors(tasks, name, s, e)
                if name in buffers:  # running statistics: the plain mean for every method
                    flat[s:e] = stream_mean(chunk)
                else:
                    flat[s:e] = method.fuse(name, src0.flat(name, s, e) if src0 is not None else None, chunk, s)
            del first
        out_bytes = sum(t.numel() * t.element_size() for t in result.values())
    return result, sorted(buffers), {
        "seconds": time.perf_counter() - t_start,
        "tensors": len(names),
        "fused_tensors": len(fused_names),
        "checkpoints": len(checkpoints),
        "checkpoint_bytes": ckpt_bytes,
        "out_bytes": out_bytes,
        "peak_extra_bytes": mem.extra,
        **method.describe(),
    }


def _output(src: TensorSource, name: str, into: dict[str, torch.Tensor] | None) -> torch.Tensor:
    shape, dtype = src._f.get_slice(name).get_shape(), src.get(name).dtype
    if into is None:
        return torch.empty(shape, dtype=dtype)
    t = into.get(name)
    if t is None or list(t.shape) != list(shape) or t.dtype != dtype or not t.is_contiguous():
        raise BenchError(f"fusion: cannot write tensor {name!r} {list(shape)} {dtype} into the given model "
                         f"({'missing' if t is None else f'{list(t.shape)} {t.dtype}'}); fuse into a fresh state")
    return t


def work_dtype(t: torch.Tensor) -> torch.dtype:
    """Arithmetic precision for fusing ``t``: float64 for real tensors (complex128 for complex ones).

    Accumulating in double makes the identities exact for fp32/fp16/bf16 inputs (the mean of N identical models
    *is* that model, bit for bit) at the cost of a few double temporaries of one tensor, never of a checkpoint.
    """
    return torch.complex128 if t.is_complex() else torch.float64


def stream_mean(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    acc: torch.Tensor | None = None
    for t in tensors:
        acc = t.to(work_dtype(t), copy=True) if acc is None else acc.add_(t)
    assert acc is not None
    return acc.div_(len(tensors))


def _check_same(names: list[str], tasks: list[TensorSource], base: TensorSource | None) -> None:
    """Every file must hold the same names with the same shapes (backbones of one architecture)."""
    want = set(names)
    for src in [*tasks, *([base] if base is not None else [])]:
        got = set(src.keys)
        if got != want:
            diff = sorted(want ^ got)[:5]
            raise BenchError(f"fusion: {str(src.path)!r} holds different tensors from {str(tasks[0].path)!r} "
                             f"(e.g. {diff}); fuse only backbones of the same architecture")
        with_shapes = src._f
        for k in names:
            if with_shapes.get_slice(k).get_shape() != tasks[0]._f.get_slice(k).get_shape():
                raise BenchError(f"fusion: tensor {k!r} has shape {with_shapes.get_slice(k).get_shape()} in "
                                 f"{str(src.path)!r} but {tasks[0]._f.get_slice(k).get_shape()} in "
                                 f"{str(tasks[0].path)!r}; fuse only backbones of the same architecture")
