"""`python -m bench report suite=a,b,c` (or ``suite=all``): the cross-suite summary (docs/across_suites.md).

Scores. Per suite, task and seed, a method's primary *test* metric N is divided by the mean B over seeds of the
suite's ``separate`` row on that task (N/B for a higher-is-better metric, B/N for a lower-is-better one), so every
task's separate mean is 1 and a score of 1.05 means "5 % better than separate fine-tunes" whatever the metric.
A run is one seed; a stratum is one (suite, task); a method is a leaderboard row name, the same in every suite (a
``suite=<name>`` part that a ``bench run suite=a,b`` sweep adds to labels is dropped). Only methods present in
every selected suite are compared (the others are named in a note), and only strata where each of them has a score.

Statistics, after Agarwal et al. (2021, "Deep RL at the edge of the statistical precipice") and Demšar (2006):

* interquartile mean (IQM: :func:`scipy.stats.trim_mean` with 0.25 of all runs of all strata, as rliable's
  ``aggregate_iqm``), the mean, and the fraction of runs above the separate mean (score > 1), each with a
  stratified percentile bootstrap interval (seeds resampled with replacement within each stratum, the strata kept:
  :func:`scipy.stats.bootstrap` with one independent sample per stratum);
* performance profiles: the fraction of runs with score > τ on a grid of τ, with pointwise stratified bands;
* probability of improvement P(X > Y): per stratum the Mann–Whitney U / (m·n) of X's runs against Y's (ties
  count one half), averaged over strata, with a stratified bootstrap that resamples X and Y independently;
* average ranks of the methods over the strata (seed means; rank 1 = best), the Friedman test
  (:func:`scipy.stats.friedmanchisquare`, three methods or more), the Nemenyi post-hoc
  (:func:`scikit_posthocs.posthoc_nemenyi_friedman`) and Demšar's critical difference, drawn by
  :func:`scikit_posthocs.critical_difference_diagram` (:mod:`bench.report.across.plots`).

rliable itself is not a dependency: its only release pins ``arch<8``, whose releases fail to import under pandas 3
(and arch 8 refuses the ``random_state`` argument rliable passes), so its bootstrap cannot run beside this
project's pandas; the definitions above are rliable's, computed with scipy (docs/across_suites.md, "Libraries").
"""

from bench.report.across.build import AcrossReport, build_across
from bench.report.across.command import across_command
from bench.report.across.scores import method_name, resolve_suites
from bench.report.across.statistics import iqm, probability_of_improvement, stratified_interval
from bench.report.across.write import write_across

__all__ = ["AcrossReport", "across_command", "build_across", "iqm", "method_name", "probability_of_improvement",
           "resolve_suites", "stratified_interval", "write_across"]
