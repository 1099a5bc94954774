"""Which rows a training step reads: the task sampler of multi-input suites and the shuffled index streams.

Both draw from the trainer's one seeded generator, in the main process, so a run replays exactly, and their state
(a stream's permutation and position, the round-robin counter) is what a resume file keeps of them.
"""

from __future__ import annotations

import numpy as np


class TaskSampler:
    """Which tasks a multi-input step trains on: proportional (∝|D_i|), temperature (∝|D_i|^{1/τ}),
    round_robin, or all (one batch from every task per step; forced when the weighting needs every loss)."""

    def __init__(self, sizes: dict[str, int], mode: str, temperature: float, rng: np.random.Generator):
        self.names = list(sizes)
        self.mode = mode
        self.rng = rng
        n = np.array([sizes[t] for t in self.names], dtype=float)
        p = n ** (1.0 / temperature) if mode == "temperature" else n
        self.p = p / p.sum()
        self.i = 0

    def next(self) -> list[str]:
        if self.mode == "all" or len(self.names) == 1:
            return self.names
        if self.mode == "round_robin":
            t = self.names[self.i % len(self.names)]
            self.i += 1
            return [t]
        return [self.names[int(self.rng.choice(len(self.names), p=self.p))]]


class IndexStream:
    """An endless stream of shuffled indices over one training split (reshuffled every pass)."""

    def __init__(self, n: int, rng: np.random.Generator):
        self.n, self.rng = n, rng
        self.perm = rng.permutation(n)
        self.pos = 0

    def next(self, b: int) -> np.ndarray:
        if self.pos + b > self.n:
            self.perm, self.pos = self.rng.permutation(self.n), 0
        idx = self.perm[self.pos:self.pos + b]
        self.pos += b
        return idx
