"""The paired tests of recbole_diffusion.statistics against scipy and values computed by hand."""

import math

import numpy as np
import pytest
from scipy import stats

from recbole_diffusion import compare
from recbole_diffusion.evaluation.statistics import direction, holm_adjust, paired_t_test, tost_paired, wilcoxon_signed_rank


def test_paired_t_test_is_scipys_and_compare_uses_it():
    values, reference = [0.041, 0.043, 0.040, 0.045], [0.038, 0.039, 0.039, 0.040]
    assert paired_t_test(values, reference) == pytest.approx(stats.ttest_rel(values, reference).pvalue, rel=1e-12)
    # by hand: differences 0.003, 0.004, 0.001, 0.005: mean 0.00325, sd 0.0017078, t = 3.8060 on 3 df
    differences = np.array([0.003, 0.004, 0.001, 0.005])
    t = differences.mean() / (differences.std(ddof=1) / 2)
    assert t == pytest.approx(3.8060, abs=1e-3)
    assert paired_t_test(values, reference) == pytest.approx(2 * stats.t.sf(t, 3), rel=1e-9)
    assert paired_t_test([1.0], [0.5]) is None
    assert paired_t_test([1.0, 2.0], [0.5, 1.5]) == 0.0 and paired_t_test([1.0, 2.0], [1.0, 2.0]) == 1.0
    assert compare.paired_t_test is paired_t_test


def test_wilcoxon_drops_zero_differences_and_matches_the_exact_distribution():
    # five positive differences of distinct sizes: W- = 0, exact two-sided p = 2 / 2**5
    assert wilcoxon_signed_rank([1, 2, 3, 4, 5], [0, 0, 0, 0, 0]) == pytest.approx(0.0625)
    assert wilcoxon_signed_rank([0, 0, 1, 2, 3, 4, 5], [0, 0, 0, 0, 0, 0, 0]) == pytest.approx(0.0625)
    many_users = np.r_[np.zeros(95), 1.0 + np.arange(5)]  # per-user metrics: most users score the same
    assert wilcoxon_signed_rank(many_users, np.zeros(100)) == pytest.approx(0.0625)  # exact, as for the 5 alone
    rng = np.random.default_rng(0)
    values, reference = rng.normal(size=200), rng.normal(size=200)
    values[:50] = reference[:50]  # ties at zero, as for users who score 0 with both samplers
    assert wilcoxon_signed_rank(values, reference) == pytest.approx(stats.wilcoxon(values, reference).pvalue)
    assert wilcoxon_signed_rank([0.5, 0.2], [0.5, 0.2]) is None


def test_tost_by_hand_against_scipys_one_sided_tests_and_the_confidence_interval():
    values, reference, margin = np.array([0.1, -0.1, 0.2, 0.0]), np.zeros(4), 0.3
    result = tost_paired(values, reference, margin)
    # by hand: mean 0.05, sd sqrt(0.05 / 3), se = sd / 2, 3 degrees of freedom
    assert result["mean"] == pytest.approx(0.05) and result["df"] == 3
    assert result["se"] == pytest.approx(math.sqrt(0.05 / 3) / 2)
    assert result["p_lower"] == pytest.approx(stats.ttest_1samp(values, -margin, alternative="greater").pvalue)
    assert result["p_upper"] == pytest.approx(stats.ttest_1samp(values, margin, alternative="less").pvalue)
    assert result["p"] == max(result["p_lower"], result["p_upper"]) == result["p_upper"]
    # p < alpha exactly when the 1 - 2 alpha confidence interval lies inside (-margin, margin)
    for alpha in (0.01, 0.05, 0.1):
        half = stats.t.ppf(1 - alpha, 3) * result["se"]
        inside = -margin < result["mean"] - half and result["mean"] + half < margin
        assert (result["p"] < alpha) == inside


def test_tost_tells_equivalence_from_a_mere_lack_of_difference():
    rng = np.random.default_rng(1)
    reference = rng.normal(size=5000)
    close = reference + rng.normal(scale=0.01, size=5000)      # tiny differences, many pairs
    noisy = reference[:10] + rng.normal(scale=1.0, size=10)    # no detectable difference, but few noisy pairs
    assert tost_paired(close, reference, 0.02)["p"] < 1e-6
    assert paired_t_test(noisy, reference[:10]) > 0.05 and tost_paired(noisy, reference[:10], 0.02)["p"] > 0.4
    shifted = reference + 0.05 + rng.normal(scale=0.01, size=5000)  # a real shift beyond the margin
    assert tost_paired(shifted, reference, 0.02)["p"] > 0.99


def test_tost_without_spread_and_bad_arguments():
    assert tost_paired([1.0, 2.0], [1.0, 2.0], 0.1)["p"] == 0.0
    assert tost_paired([1.5, 2.5], [1.0, 2.0], 0.1)["p"] == 1.0
    with pytest.raises(ValueError, match="margin"):
        tost_paired([1.0, 2.0], [1.0, 2.0], 0.0)
    with pytest.raises(ValueError, match="two pairs"):
        tost_paired([1.0], [1.0], 0.1)
    with pytest.raises(ValueError, match="one shape"):
        tost_paired([1.0, 2.0], [1.0], 0.1)


def test_holm_adjustment_by_hand():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> running max 0.06
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjust([None, 0.5, 0.2]) == [None, pytest.approx(0.5), pytest.approx(0.4)]
    assert holm_adjust([0.6, 0.7]) == [1.0, 1.0] and holm_adjust([]) == []
    # never below Bonferroni's smallest, never above Bonferroni
    p = [0.001, 0.02, 0.013, 0.2, 0.04]
    assert all(p_i * 1 <= h <= min(1, 5 * p_i) for p_i, h in zip(p, holm_adjust(p)))


def test_direction_of_per_seed_differences():
    assert direction([0.001, 0.002, 0.0005]) == "higher"
    assert direction([-0.001, -0.002]) == "lower"
    assert direction([0.001, -0.002, 0.003]) == "mixed"
    assert direction([0.0, 0.0]) == "equal" and direction([0.0, 0.1]) == "mixed"
    with pytest.raises(ValueError):
        direction([])
