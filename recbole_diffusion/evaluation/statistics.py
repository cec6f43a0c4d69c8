"""Paired tests for comparing evaluations of the same users or seeds: difference, equivalence, multiplicity.

Used by ``compare`` (paired t-test across seeds) and ``benchmarks/sampler_frontier.py`` (samplers of one
checkpoint against its default one: across seeds, across users, and equivalence within a margin).

* :func:`paired_t_test`: two-sided paired t-test (scipy).
* :func:`wilcoxon_signed_rank`: two-sided Wilcoxon signed-rank test of paired values (scipy); pairs with a
  zero difference are dropped (scipy's default ``zero_method="wilcox"``), as is usual for per-user metrics
  where most users score 0 either way.
* :func:`tost_paired`: two one-sided t-tests (TOST) of equivalence: is the mean paired difference inside
  ``(-margin, +margin)``? A small p-value is evidence of equivalence; a large p-value of a plain test is not.
* :func:`holm_adjust`: Holm's step-down adjustment of a family of p-values (valid under any dependence).
* :func:`direction`: whether every paired difference (e.g. one per seed) has the same sign.
"""

import numpy as np
from scipy import stats


def _differences(values, reference):
    values, reference = np.asarray(values, dtype=float), np.asarray(reference, dtype=float)
    if values.shape != reference.shape:
        raise ValueError(f"paired values must have one shape, got {values.shape} and {reference.shape}")
    return values - reference


def paired_t_test(values, reference):
    """Two-sided paired t-test p-value (scipy); ``None`` with fewer than two pairs. Differences without spread
    give the test's limit: 0 when they are one non-zero value (scipy's t = inf), 1 when all are 0 (no difference),
    so such a comparison stays in a Holm family instead of leaving it."""
    differences = _differences(values, reference)
    if len(differences) < 2:
        return None
    if np.all(differences == differences[0]):
        return 0.0 if differences[0] != 0 else 1.0
    return float(stats.ttest_rel(values, reference).pvalue)


def wilcoxon_signed_rank(values, reference):
    """Two-sided Wilcoxon signed-rank p-value of paired values (scipy); ``None`` when no pair differs.

    Zero differences are dropped before scipy sees them (``zero_method="wilcox"``), so that scipy chooses the
    exact distribution or the normal approximation (with its tie correction) by the number of pairs left: given
    the zeros, scipy would use the normal approximation whenever more than 50 pairs were passed, even if 5 differ.
    """
    differences = _differences(values, reference)
    differences = differences[differences != 0]
    if not differences.size:
        return None
    return float(stats.wilcoxon(differences).pvalue)


def tost_paired(values, reference, margin):
    """Two one-sided paired t-tests of equivalence within ``(-margin, +margin)`` (Schuirmann's TOST).

    H0: the mean difference ``d`` of ``values - reference`` is ``<= -margin`` or ``>= +margin``; H1: it lies
    strictly between. ``p_lower`` tests ``d > -margin``, ``p_upper`` tests ``d < +margin`` (each a one-sided
    t-test with n - 1 degrees of freedom); ``p = max(p_lower, p_upper)``, so equivalence at level alpha is
    ``p < alpha`` (equivalently: the ``1 - 2 alpha`` confidence interval of ``d`` lies inside the margin).
    With identical differences (no spread) ``p`` is 0 when they lie inside the margin and 1 otherwise.
    Returns ``{"mean", "se", "df", "p_lower", "p_upper", "p"}``.
    """
    if not margin > 0:
        raise ValueError(f"margin={margin!r}: an equivalence margin must be > 0")
    differences = _differences(values, reference)
    n = len(differences)
    if n < 2:
        raise ValueError("TOST needs at least two pairs")
    mean, se = float(differences.mean()), float(differences.std(ddof=1) / np.sqrt(n))
    if se == 0:
        p_lower, p_upper = float(mean <= -margin), float(mean >= margin)
    else:
        p_lower = float(stats.t.sf((mean + margin) / se, n - 1))
        p_upper = float(stats.t.cdf((mean - margin) / se, n - 1))
    return {"mean": mean, "se": se, "df": n - 1, "p_lower": p_lower, "p_upper": p_upper,
            "p": max(p_lower, p_upper)}


def holm_adjust(p_values):
    """Holm's step-down adjusted p-values, in the given order; ``None`` entries stay ``None`` and are not counted.

    With the m p-values sorted ascending, the i-th (1-based) becomes ``max_{j <= i} min(1, (m - j + 1) p_(j))``;
    rejecting where the adjusted value is below alpha controls the family-wise error rate at alpha.
    """
    present = [(index, p) for index, p in enumerate(p_values) if p is not None]
    adjusted = [None] * len(p_values)
    running = 0.0
    for rank, (index, p) in enumerate(sorted(present, key=lambda item: item[1])):
        running = max(running, min(1.0, (len(present) - rank) * p))
        adjusted[index] = running
    return adjusted


def direction(differences):
    """``"higher"`` / ``"lower"`` when every difference is positive / negative, ``"equal"`` when all are 0,
    otherwise ``"mixed"`` (e.g. per-seed differences: is the direction the same for every seed?)."""
    differences = np.asarray(differences, dtype=float)
    if differences.size == 0:
        raise ValueError("direction of no differences")
    if np.all(differences > 0):
        return "higher"
    if np.all(differences < 0):
        return "lower"
    if np.all(differences == 0):
        return "equal"
    return "mixed"
