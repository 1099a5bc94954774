"""Paired bootstrap statistics for leaderboards: intervals, tests, multiple-comparison corrections and power.

Protocol
--------
Every row of a table (a strategy variant) is evaluated on the same fixed test examples of each task, with the same
training seeds, so rows are compared *paired*:

1. :func:`draw` makes **one** set of ``B`` bootstrap replicates per table: for each replicate it resamples the seed
   positions with replacement (when there is more than one seed) and, independently per task, the test examples with
   replacement. Every row is scored on these same replicates; that sharing is what makes differences paired.
2. :func:`replicate_scores` scores one row on one task for every replicate, "resample seeds, then examples": replicate
   ``b`` is the mean over the resampled seeds of the metric on the resampled examples. The spread of these replicates
   therefore contains both seed-to-seed and test-set variance.
3. A row's interval is the percentile interval of its replicates (:func:`interval`). A difference between two rows is
   the element-wise difference of their replicate arrays; its interval and its p-value (:func:`paired_bootstrap_p`)
   come from that difference, so noise shared by both rows (hard examples, a lucky seed) cancels.
4. p-values of a table are corrected for multiple comparisons with :func:`adjust` (Holm by default in reports), and
   :func:`mde` says how large a true difference the table could reliably detect at all.

For a single seed, :func:`wilson` (accuracy as a binomial proportion), :func:`mcnemar` (paired correctness) and
:func:`permutation_p` (paired per-example scores) are closed-form or exact cross-checks of the bootstrap.

Metrics are computed vectorised over the replicate axis (:func:`metric_matrix`) and agree with
:func:`bench.metrics.compute` on every replicate. Ratio-of-sums metrics (entity F1, micro/macro F1 of multi-label
tasks, token accuracy) are computed from per-example sufficient statistics by :mod:`bench.stats.ratios`.
"""

from bench.stats.bootstrap import LEVEL, Draws, check_level, draw, interval, replicate_scores
from bench.stats.corrections import CORRECTIONS, adjust, bh, holm
from bench.stats.ratios import Ratios, recipes_of
from bench.stats.significance import _PERM_RNG, mcnemar, mde, paired_bootstrap_p, permutation_p, wilson
from bench.stats.vectorised import VECTORISED, _macro_f1, _mcc, metric_matrix

__all__ = ["CORRECTIONS", "LEVEL", "VECTORISED", "Draws", "Ratios", "_PERM_RNG", "_macro_f1", "_mcc", "adjust", "bh",
           "check_level", "draw", "holm", "interval", "mcnemar", "mde", "metric_matrix", "paired_bootstrap_p",
           "permutation_p", "recipes_of", "replicate_scores", "wilson"]
