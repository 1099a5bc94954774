"""A synthetic single-input suite with a known shared low-rank structure and known per-task noise.

x ~ N(0, I_d); the shared representation is z = tanh(x A) with A of rank r (shared by every task). Each task reads
z through its own direction(s): a regression task y = z·b / std + ε with ε ~ N(0, σ²) and σ² given (so the
irreducible MSE is σ²: uncertainty weighting should learn σ_i² ≈ σ²); a K-way classification task y = argmax(z B + ε).
Everything is generated from ``options.seed``: the same seed gives the same data.

Options: ``n`` (examples), ``dim``, ``rank``, ``seed``, ``tasks``: {label: {kind, noise, classes, scale}}.
"""

from __future__ import annotations

import numpy as np

from bench.config import DataSpec, SplitConfig, TaskConfig
from bench.data.base import Split, register_source
from bench.errors import BenchError


@register_source("synthetic")
def load_synthetic(spec: DataSpec, tasks: list[TaskConfig], split_cfg: SplitConfig) -> dict[str, Split]:
    """Shared low-rank inputs with per-task noise (ground truth known; seconds to train)."""
    o = spec.options
    n, d, r, seed = int(o.get("n", 3000)), int(o.get("dim", 16)), int(o.get("rank", 4)), int(o.get("seed", 0))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    a = rng.standard_normal((d, r)) / np.sqrt(d)
    z = np.tanh(x @ a * 2.0)
    gens = o.get("tasks", {})
    targets: dict[str, np.ndarray] = {}
    for t in tasks:
        label = t.label or t.name
        g = gens.get(label)
        if g is None:
            raise BenchError(f"synthetic data has no generator for label {label!r}; add it under data.options.tasks")
        noise, scale = float(g.get("noise", 0.1)), float(g.get("scale", 1.0))
        trng = np.random.default_rng([seed, sum(map(ord, label))])
        if t.target == "regression":
            b = trng.standard_normal(r)
            signal = z @ b
            signal = signal / signal.std()
            targets[label] = (scale * (signal + noise * trng.standard_normal(n))).astype(np.float32)
        else:
            k = int(t.num_classes or 2)
            logits = z @ trng.standard_normal((r, k)) * 3.0 + noise * trng.standard_normal((n, k))
            targets[label] = logits.argmax(1).astype(np.int64)
    return {"train": Split(x, targets)}
