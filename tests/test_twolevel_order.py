"""The two-level estimate is the same number in every process: it sums example spaces in a fixed order.

A set of space names iterates in the order of Python's per-process string hash (PYTHONHASHSEED); summing floats in
that order made the last bit of an interval, a p-value and the MDE differ between two renders of one store.
"""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # starts interpreters with chosen hash seeds

SCRIPT = """
import numpy as np
from bench.twolevel import Scores, estimate
rng = np.random.default_rng(0)
seeds_a, seeds_b = (0, 1, 2), (3, 4, 5)
terms = []
for i, space in enumerate(["bbc", "sentiment", "device", "topic", "news", "intent", "spam", "lang"]):
    target = rng.integers(0, 3, 97)
    for c, seeds in ((1.0 / 8, seeds_a), (-1.0 / 8, seeds_b)):
        preds = np.where(rng.random((3, 97)) < 0.7 + 0.02 * i, target, rng.integers(0, 3, (3, 97)))
        terms.append((c, Scores.of("accuracy", target, preds, seeds, space)))
e = estimate(terms)
print(repr((e.value, e.var, e.df)))
"""


def test_an_estimate_does_not_depend_on_the_string_hash_seed():
    outs = set()
    for hash_seed in ("1", "2", "3", "4"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
        outs.add(out.stdout.strip())
    assert len(outs) == 1, outs
