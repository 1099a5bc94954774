"""The report's statistics options (``bench report level=… interval=… delta_m=… correction=… min_seeds=…
budget_tolerance=… components=… columns=…``), validated once into a frozen :class:`ReportOptions`."""

from __future__ import annotations

from dataclasses import dataclass

from bench import stats
from bench.errors import BenchError, unknown
from bench.report.marks import BUDGET_TOLERANCE, MIN_SEEDS

COLUMN_SETS = ("all", "scores")  # report option `columns`: md/tex/terminal show every column, or the scores only


INTERVAL_STYLES = ("brackets", "pm")
DELTA_M_MODES = ("primary", "all")


@dataclass(frozen=True)
class ReportOptions:
    """How a report computes and shows its statistics (``bench report level=… interval=… …``)."""

    level: float = stats.LEVEL
    interval: str = "brackets"  # brackets: 95.3 [92.0, 97.9]; pm: 95.3 ± 3.0 (half the interval's width)
    delta_m: str = "primary"  # primary | all: the metrics entering Δm% (all of them are shown with "all")
    correction: str = "holm"  # holm | bh | none, over every markable test of a table
    min_seeds: int = MIN_SEEDS  # rows (and baselines) with fewer seeds get no *, bold or ≈
    budget_tolerance: float = BUDGET_TOLERANCE  # a row whose budget differs more from its baseline's: no mark
    components: bool = False  # md/tex show the seed SD and test-set SE of the score column
    columns: str = "all"  # all | scores: md/tex/terminal without the cost columns (CSV/JSON keep them)

    @property
    def alpha(self) -> float:
        return round(1.0 - self.level, 12)  # 1 - 0.95 = 0.050000000000000044 would let p = 0.05 pass


def report_options(level=None, interval=None, delta_m=None, correction=None, bootstrap=None, min_seeds=None,
                   budget_tolerance=None, components=None, columns=None) -> ReportOptions:
    """Validated :class:`ReportOptions` (None keeps a default); bad values raise a one-line BenchError.

    ``bootstrap`` is refused: intervals and tests are analytic since the two-level t replaced the bootstrap."""
    defaults = ReportOptions()
    level = defaults.level if level is None else stats.check_level(level)
    interval = defaults.interval if interval is None else str(interval)
    if interval not in INTERVAL_STYLES:
        raise unknown("interval display", interval, INTERVAL_STYLES)
    delta_m = defaults.delta_m if delta_m is None else str(delta_m)
    if delta_m not in DELTA_M_MODES:
        raise unknown("delta_m mode", delta_m, DELTA_M_MODES)
    correction = defaults.correction if correction is None else str(correction)
    if correction not in stats.CORRECTIONS:
        raise unknown("p-value correction", correction, stats.CORRECTIONS)
    if bootstrap is not None:
        raise BenchError(f"bootstrap={bootstrap!r}: intervals and tests no longer resample (two-level t over seeds "
                         f"and test examples, docs/statistics.md); drop bootstrap=")
    if min_seeds is None:
        min_seeds = defaults.min_seeds
    elif isinstance(min_seeds, bool) or not isinstance(min_seeds, int) or min_seeds < 2:
        raise BenchError(f"min_seeds={min_seeds!r} must be a whole number >= 2 (a mark needs a seed variance), "
                         f"e.g. min_seeds=3")
    if budget_tolerance is None:
        budget_tolerance = defaults.budget_tolerance
    elif (isinstance(budget_tolerance, bool) or not isinstance(budget_tolerance, (int, float))
          or not 0 <= budget_tolerance < 1):
        raise BenchError(f"budget_tolerance={budget_tolerance!r} must be a fraction in [0, 1), "
                         f"e.g. budget_tolerance=0.05")
    if components is None:
        components = defaults.components
    elif not isinstance(components, bool):
        raise BenchError(f"components={components!r} must be true or false")
    columns = defaults.columns if columns is None else str(columns)
    if columns not in COLUMN_SETS:
        raise BenchError(f"columns={columns!r}: valid are all (scores and costs) and scores (no cost columns), "
                         f"e.g. columns=scores")
    return ReportOptions(level=level, interval=interval, delta_m=delta_m, correction=correction,
                         min_seeds=min_seeds, budget_tolerance=float(budget_tolerance), components=components,
                         columns=columns)
