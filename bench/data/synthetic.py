"""Synthetic single-input suites with a known generative model: shared low-rank structure and known per-task noise
(``synthetic``), and tasks that conflict by construction (``synthetic_conflict``).

x ~ N(0, I_d); the shared representation is z = tanh(x A) with A of rank r (shared by every task). Each task reads
z through its own direction(s): a regression task y = z·b / std + ε with ε ~ N(0, σ²) and σ² given (so the
irreducible MSE is σ²: uncertainty weighting should learn σ_i² ≈ σ²); a K-way classification task y = argmax(z B + ε).
Everything is generated from ``options.seed``: the same seed gives the same data.

Conflicting tasks (opt-in options; without them the data is exactly as before):

- ``latent: identity`` reads tasks straight off the inputs (z = x, every direction of R^d available) instead of
  the low-rank tanh map, so that a task's direction is a direction the backbone's first layer must learn.
- ``link: relu`` (regression) makes the target a rectified signal, y = standardise(relu(z·b)) + ε. The sign of b
  now matters: a linear head cannot turn relu(s) into relu(-s), the backbone needs a unit aligned with +b for one
  and with -b for the other.
- ``opposes: LABEL`` with ``mix: m`` (0..1, default 1) sets this task's direction to
  b = |b_o| (-m b̂_o + sqrt(1 - m²) p̂), p̂ the task's own random direction made orthogonal to b̂_o: cos(b, b_o) = -m
  exactly (m = 1: the negation; m = 0.7: a rotation by 134°).

Why they conflict: with ``link: relu`` and ``opposes``, two tasks want the backbone's hidden units to point in
opposite directions of the same line, so in a narrow trunk (16 units) their gradients on the shared weights
pull against each other; ``scale`` (a target multiplier, so a loss scale of scale²) lets one task dominate an
equal-weight sum. ``tests/test_conflict_suite.py`` measures it: a clearly negative cosine between the two tasks'
backbone gradients after equal-weight training (and joint training far below separate fine-tunes).

Options: ``n`` (examples), ``dim``, ``rank``, ``seed``, ``latent`` (``tanh`` | ``identity``), ``tasks``:
{label: {noise, scale, classes, link, opposes, mix}}.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.config import DataSpec, SplitConfig, TaskConfig
from bench.data.base import Split, register_source
from bench.errors import BenchError

LATENTS = ("tanh", "identity")
LINKS = ("linear", "relu")
CONFLICT_OPTIONS = ("link", "opposes", "mix")  # regression only


def _task_rng(seed: int, label: str) -> np.random.Generator:
    return np.random.default_rng([seed, sum(map(ord, label))])


def task_directions(gens: dict[str, Any], seed: int, r: int) -> dict[str, np.ndarray]:
    """Each regression generator's direction b in the latent space (``opposes`` resolved): what the targets read.

    A task's own direction is the first draw of its generator (so plain tasks are unchanged by this option)."""
    out: dict[str, np.ndarray] = {}

    def direction(label: str, chain: tuple[str, ...]) -> np.ndarray:
        if label in out:
            return out[label]
        if label in chain:
            raise BenchError(f"synthetic data: 'opposes' forms a cycle: {' -> '.join((*chain, label))}")
        g = gens.get(label)
        if g is None:
            raise BenchError(f"synthetic data: {chain[-1]!r} opposes {label!r}, which has no generator under "
                             "data.options.tasks")
        b = _task_rng(seed, label).standard_normal(r)
        other = g.get("opposes")
        if other is not None:
            m = float(g.get("mix", 1.0))
            if not 0.0 <= m <= 1.0:
                raise BenchError(f"synthetic data: {label!r} has mix={m}; it must lie in [0, 1] (cos = -mix)")
            bo = direction(str(other), (*chain, label))
            o_hat = bo / np.linalg.norm(bo)
            perp = b - (b @ o_hat) * o_hat
            p_hat = perp / np.linalg.norm(perp)
            b = np.linalg.norm(bo) * (-m * o_hat + np.sqrt(1.0 - m * m) * p_hat)
        out[label] = b
        return b

    for label in gens:
        direction(label, ())
    return out


@register_source("synthetic")
def load_synthetic(spec: DataSpec, tasks: list[TaskConfig], split_cfg: SplitConfig) -> dict[str, Split]:
    """Shared low-rank inputs with per-task noise (ground truth known; seconds to train)."""
    o = spec.options
    n, d, r, seed = int(o.get("n", 3000)), int(o.get("dim", 16)), int(o.get("rank", 4)), int(o.get("seed", 0))
    latent = str(o.get("latent", "tanh"))
    if latent not in LATENTS:
        raise BenchError(f"synthetic data: latent={latent!r}; valid: {', '.join(LATENTS)}")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    if latent == "tanh":
        a = rng.standard_normal((d, r)) / np.sqrt(d)
        z = np.tanh(x @ a * 2.0)
    else:
        z, r = x.astype(np.float64), d
    gens = o.get("tasks", {})
    for t in tasks:
        label = t.label or t.name
        if label not in gens:
            raise BenchError(f"synthetic data has no generator for label {label!r}; add it under data.options.tasks")
        g = gens[label]
        extra = [k for k in CONFLICT_OPTIONS if k in g]
        if extra and t.target != "regression":
            raise BenchError(f"synthetic data: {', '.join(extra)} apply to regression tasks; {label!r} is "
                             f"{t.target}")
        if "mix" in g and "opposes" not in g:
            raise BenchError(f"synthetic data: {label!r} has mix but no opposes (mix is the cosine to the opposed "
                             "task's direction)")
        opposed = [u for u in tasks if (u.label or u.name) == g.get("opposes")]
        if opposed and opposed[0].target != "regression":
            raise BenchError(f"synthetic data: {label!r} opposes {g['opposes']!r}, a {opposed[0].target} task; "
                             "only regression directions can be opposed")
    directions: dict[str, np.ndarray] | None = None
    targets: dict[str, np.ndarray] = {}
    for t in tasks:
        label = t.label or t.name
        g = gens[label]
        noise, scale = float(g.get("noise", 0.1)), float(g.get("scale", 1.0))
        trng = _task_rng(seed, label)
        if t.target == "regression":
            b = trng.standard_normal(r)
            link = str(g.get("link", "linear"))
            if link not in LINKS:
                raise BenchError(f"synthetic data: {label!r} has link={link!r}; valid: {', '.join(LINKS)}")
            if "opposes" in g:
                directions = directions or task_directions(gens, seed, r)
                b = directions[label]
            signal = z @ b
            if link == "relu":
                signal = np.maximum(signal, 0.0)
                signal = (signal - signal.mean()) / signal.std()
            else:  # exactly the original formula: the synthetic suite's data (and baselines) depend on it
                signal = signal / signal.std()
            targets[label] = (scale * (signal + noise * trng.standard_normal(n))).astype(np.float32)
        else:
            k = int(t.num_classes or 2)
            logits = z @ trng.standard_normal((r, k)) * 3.0 + noise * trng.standard_normal((n, k))
            targets[label] = logits.argmax(1).astype(np.int64)
    return {"train": Split(x, targets)}
