"""Mean average precision with every example left out in turn, in O(n log n) per label instead of n recomputations.

Average precision as scikit-learn computes it (``average_precision_score``): sort by score, group equal scores (a
threshold takes a whole tie group), and with ``pos_g`` positives in group g, ``TP_g`` and ``N_g`` the positives and
examples up to and including g, and P positives in all,

    AP = (1/P) Σ_g pos_g · TP_g / N_g.

Leaving out example i of group h changes only the counts from h on: a negative lowers every ``N_g`` with g ≥ h by
one; a positive lowers P, ``pos_h`` and every ``TP_g`` and ``N_g`` with g ≥ h by one. With prefix sums over the
groups before h and suffix sums over those after it, every leave-one-out AP of a label costs O(1) after one sort.
:mod:`bench.twolevel` uses it for the jackknife of ``mean_ap`` (:func:`bench.metrics.compute`'s multi-label mean
average precision: per label over its labelled examples, -1 = missing, averaged over labels with a positive).
:func:`mean_ap_replicates` scores bootstrap replicates the same way: a replicate only reweights the examples, so
the tie groups of one sort serve every replicate, with each example counted as often as it was drawn.
"""

from __future__ import annotations

import numpy as np

_CHUNK_ELEMENTS = 1 << 22  # replicates × examples of one chunk (as bench.stats.vectorised)


def _safe(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _label(y: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray, int, np.ndarray]:
    """One label's AP, each labelled example's leave-one-out AP, P, and how many positives are left without it."""
    order = np.argsort(-scores, kind="stable")
    s, pos = scores[order], (y[order] == 1).astype(float)
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    group = np.cumsum(np.r_[False, s[1:] != s[:-1]])  # each sorted example's tie group
    pos_g, cnt_g = np.add.reduceat(pos, starts), np.diff(np.r_[starts, len(s)]).astype(float)
    tp, n = np.cumsum(pos_g), np.cumsum(cnt_g)
    total = tp[-1]
    term = pos_g * tp / n
    before = np.r_[0.0, np.cumsum(term)[:-1]]  # Σ_{g<h}
    # without a negative of group h: N_g − 1 for g ≥ h
    neg_from = np.cumsum((pos_g * _safe(tp, n - 1))[::-1])[::-1]  # Σ_{g≥h}
    # without a positive of group h: its own group (pos_h − 1)(TP_h − 1)/(N_h − 1), the later ones (TP_g − 1)/(N_g − 1)
    later = pos_g * _safe(tp - 1, n - 1)
    pos_after = np.r_[np.cumsum(later[::-1])[::-1][1:], 0.0]  # Σ_{g>h}
    own = (pos_g - 1) * _safe(tp - 1, n - 1)
    h = group
    without_neg = (before[h] + neg_from[h]) / total if total > 0 else np.zeros(len(s))
    without_pos = _safe(before[h] + own[h] + pos_after[h], np.full(len(s), total - 1))
    loo_sorted = np.where(pos == 1, without_pos, without_neg)
    left_sorted = total - pos
    loo, left = np.empty(len(s)), np.empty(len(s))
    loo[order], left[order] = loo_sorted, left_sorted
    return (float(term.sum() / total) if total > 0 else 0.0), loo, int(total), left


def mean_ap_leave_one_out(y: np.ndarray, scores: np.ndarray) -> tuple[float, np.ndarray]:
    """``mean_ap`` of ``y`` [n, L] (1/0, -1 missing) against ``scores`` [n, L], and with each example left out.

    >>> y = np.array([[1], [0], [1], [0]])
    >>> theta, loo = mean_ap_leave_one_out(y, np.array([[0.9], [0.8], [0.7], [0.1]]))
    >>> round(theta, 4), [round(float(v), 4) for v in loo]  # AP = (1/1 + 2/3) / 2; without the first: 1/2
    (0.8333, [0.5, 1.0, 1.0, 0.8333])
    """
    y, scores = np.asarray(y), np.asarray(scores, dtype=float)
    n, n_labels = y.shape
    ap_sum, ap_count = np.zeros(n), np.zeros(n)
    full: list[float] = []
    for j in range(n_labels):
        keep = np.flatnonzero(y[:, j] >= 0)
        if keep.size == 0:
            continue
        ap, loo, total, left = _label(y[keep, j], scores[keep, j])
        if total == 0:
            continue  # AP is undefined without a positive: the label is not averaged, with or without any example
        full.append(ap)
        # examples without a label here leave its AP as it is; an example that is its last positive drops it
        contributes = np.full(n, ap)
        has = np.ones(n, dtype=bool)
        contributes[keep] = loo
        has[keep] = left > 0
        ap_sum += np.where(has, contributes, 0.0)
        ap_count += has
    theta = float(np.mean(full)) if full else 0.0
    return theta, np.where(ap_count > 0, ap_sum / np.maximum(ap_count, 1), 0.0)


def mean_ap_replicates(y: np.ndarray, scores: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``mean_ap`` on each bootstrap replicate ``idx[b]`` (int array [B, n]) of ``y``, ``scores`` [n, L]."""
    y, scores, idx = np.asarray(y), np.asarray(scores, dtype=float), np.asarray(idx)
    n = len(y)
    labels = []
    for j in range(y.shape[1]):  # one sort per label, shared by every replicate
        keep = np.flatnonzero(y[:, j] >= 0)
        order = keep[np.argsort(-scores[keep, j], kind="stable")]
        s = scores[order, j]
        labels.append((order, (y[order, j] == 1).astype(float), np.flatnonzero(np.r_[True, s[1:] != s[:-1]])))
    out = np.empty(idx.shape[0])
    step = max(1, _CHUNK_ELEMENTS // max(1, n))
    for start in range(0, idx.shape[0], step):
        rows = idx[start : start + step]
        codes = (np.arange(len(rows))[:, None] * n + rows).ravel()
        counts = np.bincount(codes, minlength=len(rows) * n).reshape(len(rows), n).astype(float)
        ap_sum, ap_count = np.zeros(len(rows)), np.zeros(len(rows))
        for order, positive, starts in labels:
            if order.size == 0:
                continue
            drawn = counts[:, order]
            pos_g = np.add.reduceat(drawn * positive, starts, axis=1)
            tp, seen = np.cumsum(pos_g, axis=1), np.cumsum(np.add.reduceat(drawn, starts, axis=1), axis=1)
            total = tp[:, -1]
            ap = _safe((pos_g * _safe(tp, seen)).sum(axis=1), total)
            ap_sum += np.where(total > 0, ap, 0.0)
            ap_count += total > 0
        out[start : start + step] = np.where(ap_count > 0, ap_sum / np.maximum(ap_count, 1), 0.0)
    return out
