"""Does a leaderboard's mark hold? A seed-disjoint A/A simulation with known variance components.

Two rows of the *same* configuration trained with disjoint seeds differ only by chance, so a test that marks them
different in more than α of the cases claims what is not true, and an interval that covers the expected score (over
seeds and test sets) less often than its level is too narrow. This module simulates exactly that, with per-example
predictions fed through the same functions the leaderboard uses (:mod:`bench.twolevel`), and, for comparison,
through the percentile bootstrap the leaderboard used before (:mod:`bench.stats`: resample seeds, then examples).

The simulated suite has two tasks scored on one set of ``n`` test inputs (a single-input suite):

* ``cls`` — accuracy, dominated by the test set: example i is answered correctly when
  ``mu + a_s − d_i + e_si > 0`` (seed effect ``a_s ~ N(0, seed_sd²)``, difficulty ``d_i ~ N(0, difficulty²)`` shared by
  every model, noise ``e ~ N(0, 1)``); the expected accuracy is ``Φ(mu / √(1 + seed_sd² + difficulty²))``;
* ``reg`` — Pearson r, dominated by the seeds: the prediction is ``y_i + exp(q_s) · ε_si`` with a seed quality
  ``q_s ~ N(q, q_sd²)``; its expected value is computed once by simulation;
* ``Avg`` of the two, and ``Δm%`` of one row against the other.

``python -m bench.calibration`` prints the false-mark rates and interval coverage for k = 1, 2, 3, 5, both methods
(docs/statistics.md has the table); ``tests/test_calibration.py`` asserts the new method's size and coverage and
that the check fails the old one.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sst

from bench import stats, twolevel
from bench.metrics import delta_m

COLUMNS = ("cls", "reg", "avg", "delta_m")
SPACE = "examples"


@dataclass(frozen=True)
class World:
    """The variance components of the simulated suite."""

    n: int = 300
    mu: float = 0.8
    seed_sd: float = 0.15
    difficulty: float = 1.0
    q: float = -0.9
    q_sd: float = 0.25

    def expected_cls(self) -> float:
        return float(sst.norm.cdf(self.mu / math.sqrt(1 + self.seed_sd**2 + self.difficulty**2)))

    def expected_reg(self, draws: int = 20000, seed: int = 12345) -> float:
        """E[r] over seeds and test sets of size n (Monte Carlo with a fixed seed, cached per world)."""
        key = (self, draws, seed)
        if key not in _EXPECTED:
            rng = np.random.default_rng(seed)
            total, done = 0.0, 0
            while done < draws:
                m = min(2000, draws - done)
                y = rng.standard_normal((m, self.n))
                scale = np.exp(rng.normal(self.q, self.q_sd, size=(m, 1)))
                p = y + scale * rng.standard_normal((m, self.n))
                yc, pc = y - y.mean(1, keepdims=True), p - p.mean(1, keepdims=True)
                r = (yc * pc).sum(1) / np.sqrt((yc**2).sum(1) * (pc**2).sum(1))
                total += r.sum()
                done += m
            _EXPECTED[key] = total / draws
        return _EXPECTED[key]


_EXPECTED: dict = {}


def simulate_models(world: World, models: int, rng: np.random.Generator):
    """One test set and ``models`` independently trained models: targets and predictions [models, n] per task."""
    d = rng.normal(0.0, world.difficulty, world.n)
    cls_target = rng.integers(0, 2, world.n)
    a = rng.normal(0.0, world.seed_sd, (models, 1))
    correct = world.mu + a - d[None, :] + rng.standard_normal((models, world.n)) > 0
    cls_pred = np.where(correct, cls_target[None, :], 1 - cls_target[None, :])
    y = rng.standard_normal(world.n)
    scale = np.exp(rng.normal(world.q, world.q_sd, (models, 1)))
    reg_pred = y[None, :] + scale * rng.standard_normal((models, world.n))
    return {"cls": (cls_target, cls_pred), "reg": (y, reg_pred)}


def _twolevel_columns(data, rows: dict[str, slice], seeds: dict[str, tuple[int, ...]]):
    """The leaderboard's estimates: per row and column the Scores, then the row estimates and A − B tests."""
    scores = {}
    for row, sl in rows.items():
        cls = twolevel.Scores.of("accuracy", data["cls"][0], data["cls"][1][sl], seeds[row], SPACE, 100.0)
        reg = twolevel.Scores.of("pearson", data["reg"][0], data["reg"][1][sl], seeds[row], SPACE, 100.0)
        scores[row] = {"cls": cls, "reg": reg, "avg": twolevel.Scores.weighted([(0.5, cls), (0.5, reg)])}
    # Δm% of A against B, through the leaderboard's own linearisation
    keys = [("cls", "accuracy"), ("reg", "pearson")]
    dm = twolevel.delta_m_terms({k: scores["A"][k[0]] for k in keys}, {k: scores["B"][k[0]] for k in keys},
                                {k: "max" for k in keys})
    row_est = {c: twolevel.estimate([(1.0, scores["A"][c])]) for c in ("cls", "reg", "avg")}
    tests = {c: twolevel.estimate([(1.0, scores["A"][c]), (-1.0, scores["B"][c])]) for c in ("cls", "reg", "avg")}
    tests["delta_m"] = twolevel.estimate(dm)
    return row_est, tests


def _bootstrap_columns(data, rows: dict[str, slice], B: int, rng_seed: int):
    """The percentile bootstrap the leaderboard used before (resample seeds, then examples; one draw per table)."""
    k = rows["A"].stop - rows["A"].start
    n = len(data["cls"][0])
    draws = stats.draw({"examples": n}, k, B=B, seed=rng_seed)
    reps = {}
    for row, sl in rows.items():
        cls = stats.replicate_scores("accuracy", data["cls"][0], data["cls"][1][sl], draws, "examples") * 100
        reg = stats.replicate_scores("pearson", data["reg"][0], data["reg"][1][sl], draws, "examples") * 100
        reps[row] = {"cls": cls, "reg": reg, "avg": (cls + reg) / 2}
    metrics = [("t", "cls"), ("t", "reg")]
    directions = {m: "max" for m in metrics}
    reps["A"]["delta_m"] = delta_m({("t", c): reps["A"][c] for c in ("cls", "reg")},
                                   {("t", c): reps["B"][c] for c in ("cls", "reg")}, metrics, directions)
    return reps


def run(k: int, groups: int, world: World = World(), method: str = "twolevel", alpha: float = 0.05,
        B: int = 1000, seed: int = 0) -> dict[str, dict[str, float]]:
    """Seed-disjoint A/A over ``groups`` simulated tables with ``k`` seeds per row.

    Returns per column the false-mark rate (raw p < alpha for A − B: what ``*`` against the baseline would say
    before the correction) and the coverage of row A's ``1 − alpha`` interval of the expected score (Δm%: of 0),
    plus ``any``: the rate of tables with at least one column marked after Holm over the four tests.
    """
    if method not in ("twolevel", "bootstrap"):
        raise ValueError(f"method must be twolevel or bootstrap, got {method!r}")
    rng = np.random.default_rng([seed, k, groups])
    truth = {"cls": 100 * world.expected_cls(), "reg": 100 * world.expected_reg()}
    truth["avg"] = (truth["cls"] + truth["reg"]) / 2
    truth["delta_m"] = 0.0
    marks = {c: 0 for c in COLUMNS}
    covered = {c: 0 for c in COLUMNS}
    any_mark = 0
    rows = {"A": slice(0, k), "B": slice(k, 2 * k)}
    seeds = {"A": tuple(range(k)), "B": tuple(range(k, 2 * k))}
    for g in range(groups):
        data = simulate_models(world, 2 * k, rng)
        ps = {}
        if method == "twolevel":
            row_est, tests = _twolevel_columns(data, rows, seeds)
            for c in COLUMNS:
                lo, hi = (tests[c] if c == "delta_m" else row_est[c]).interval(1 - alpha)
                covered[c] += lo <= truth[c] <= hi
                ps[c] = tests[c].p
        else:
            reps = _bootstrap_columns(data, rows, B, seed * 100003 + g)
            for c in COLUMNS:
                lo, hi = stats.interval(reps["A"][c], 1 - alpha)
                covered[c] += lo <= truth[c] <= hi
                diff = reps["A"][c] if c == "delta_m" else reps["A"][c] - reps["B"][c]
                ps[c] = stats.paired_bootstrap_p(diff)
        for c in COLUMNS:
            marks[c] += ps[c] < alpha
        any_mark += bool(np.any(stats.holm([ps[c] for c in COLUMNS]) < alpha))
    return {"false_mark": {c: marks[c] / groups for c in COLUMNS},
            "coverage": {c: covered[c] / groups for c in COLUMNS},
            "any": {"false_mark": any_mark / groups}}


def table(ks=(1, 2, 3, 5), groups: int = 1000, boot_groups: int = 300, world: World = World()) -> str:
    """The Markdown table of false-mark rates and coverage, old and new, for each k."""
    lines = ["| k | method | false marks cls / reg / Avg / Δm% | any (Holm) | coverage cls / reg / Avg / Δm% |",
             "|---:|---|---|---:|---|"]
    for k in ks:
        for method, g in (("bootstrap", boot_groups), ("twolevel", groups)):
            r = run(k, g, world, method)
            fm = " / ".join(f"{r['false_mark'][c]:.3f}" for c in COLUMNS)
            cov = " / ".join(f"{r['coverage'][c]:.3f}" for c in COLUMNS)
            name = "percentile bootstrap (before)" if method == "bootstrap" else "two-level t (now)"
            lines.append(f"| {k} | {name} ({g} tables) | {fm} | {r['any']['false_mark']:.3f} | {cov} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.calibration", description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=1000, help="simulated tables per k (two-level t)")
    parser.add_argument("--boot-groups", type=int, default=300, help="simulated tables per k (bootstrap: slower)")
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 3, 5], help="seeds per row")
    args = parser.parse_args(argv)
    print(table(tuple(args.k), args.groups, args.boot_groups))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
