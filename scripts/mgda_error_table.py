"""MGDA's error against the exact min-norm point, per solver, on the generated Jacobians of tests/test_mgda_exact.py.

For every case (T = 2…8 of each kind) it runs three solvers in float64: torchjd's Frank-Wolfe at its default
(ε = 1e-3, 100 iterations: ``mgda`` before issue 29), Frank-Wolfe pushed (ε = 1e-9, 10⁴ iterations) and the exact
solver (``solver=exact``, the default now), and compares the direction d with the reference d_ref of the support
enumeration:

* where d_ref ≠ 0: the relative direction error ‖d − d_ref‖/‖d_ref‖, and the norm excess ‖d‖/‖d_ref‖ − 1 (what a
  check of the norm alone sees; it is about the square of the direction error, since the norm is flat at the optimum);
* where d_ref = 0 (a Pareto-stationary case: ‖d_ref‖ ≤ 1e-12·max_i ‖g_i‖): ‖d‖/max_i ‖g_i‖.

Each cell is the largest over the kind's cases: "direction error / norm excess" over its non-stationary cases,
"‖d‖ x" over its stationary ones; the last row is over all cases, with how many are off by more than 1 % in
direction. ``--all`` prints one row per case.

    python scripts/mgda_error_table.py [--all]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_mgda_exact import KINDS, cases, reference  # noqa: E402

from bench.weighting.jd.min_norm import ExactMinNorm, FrankWolfe  # noqa: E402

SOLVERS = {"frank_wolfe ε=1e-3, 100 it": lambda: FrankWolfe(epsilon=1e-3, max_iters=100),
           "frank_wolfe ε=1e-9, 10⁴ it": lambda: FrankWolfe(epsilon=1e-9, max_iters=10_000),
           "exact": ExactMinNorm}
STATIONARY = 1e-12  # ‖d_ref‖ below this × max_i ‖g_i‖: the case is Pareto-stationary


def errors(J: np.ndarray, ref: np.ndarray) -> dict[str, tuple[float, float | None]]:
    """Per solver: (direction error, norm excess), or (‖d‖/max_i ‖g_i‖, None) at a stationary case."""
    Jt, G = torch.tensor(J), torch.tensor(J @ J.T)
    scale, rn = float(np.linalg.norm(J, axis=1).max()), float(np.linalg.norm(ref))
    out = {}
    for name, make in SOLVERS.items():
        d = (make()(G) @ Jt).numpy()
        if rn <= STATIONARY * scale:
            out[name] = (float(np.linalg.norm(d)) / scale, None)
        else:
            out[name] = (float(np.linalg.norm(d - ref)) / rn, float(np.linalg.norm(d)) / rn - 1)
    return out


def cell(values: list[tuple[float, float | None]]) -> str:
    """The largest direction error / norm excess of the non-stationary cases; ‖d‖/max‖g‖ of the stationary ones."""
    moving = [v for v in values if v[1] is not None]
    still = [v[0] for v in values if v[1] is None]
    parts = [f"{max(v[0] for v in moving):.1e} / {max(v[1] for v in moving):.1e}"] if moving else []
    return "; ".join(parts + ([f"‖d‖ {max(still):.1e}"] if still else []))


def main(argv: list[str]) -> int:
    rows = []  # (label, {solver: errors}, stationary)
    for kind, T, J in cases():
        ref = reference(J)
        rows.append((kind, T, errors(J, ref)))
    print("| cases | " + " | ".join(SOLVERS) + " |")
    print("|---" * (len(SOLVERS) + 1) + "|")
    if "--all" in argv:
        groups = [(f"{kind} T={T}", [e]) for kind, T, e in rows]
    else:
        groups = [(f"{kind} (T = 2…8)", [e for k, _, e in rows if k == kind]) for kind in KINDS]
    for label, group in groups:
        print(f"| {label} | " + " | ".join(cell([e[s] for e in group]) for s in SOLVERS) + " |")
    errs = [e for _, _, e in rows]
    moving = sum(e["exact"][1] is not None for e in errs)
    off = {s: sum(e[s][1] is not None and e[s][0] > 1e-2 for e in errs) for s in SOLVERS}
    print(f"| all {len(errs)} ({moving} non-stationary, {len(errs) - moving} stationary) | "
          + " | ".join(f"{cell([e[s] for e in errs])}; {off[s]} off by > 1 %" for s in SOLVERS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
