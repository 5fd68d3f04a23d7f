"""Statistics of repeated runs against textbook values, independent formulas and the paper's tables."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from loop.study.statistics import (
    StatisticsError, agresti_coull_interval, compare_to_reference, holm, mean_sd, paired_t_test, pairwise_tests,
    summarize, t_interval, wilcoxon_p,
)

# Student's (1908) sleep data, as in R's `sleep`: extra hours of sleep of 10 patients under two drugs.
DRUG1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
DRUG2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_mean_sd_is_the_sample_standard_deviation() -> None:
    mean, sd = mean_sd([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])
    assert mean == 5.0
    assert sd == pytest.approx(math.sqrt(32 / 7))  # sum of squared deviations 32, n - 1 = 7
    mean, sd = mean_sd([0.25])
    assert mean == 0.25 and math.isnan(sd)


def test_paired_t_test_reproduces_students_sleep_data() -> None:
    # R: t.test(extra ~ group, data = sleep, paired = TRUE) -> t = -4.0621, df = 9, p-value = 0.002833
    test = paired_t_test(DRUG1, DRUG2, ("drug1", "drug2"))
    assert test.t_statistic == pytest.approx(-4.0621, abs=5e-5)
    assert test.p_value == pytest.approx(0.002833, abs=5e-7)
    assert test.mean_difference == pytest.approx(-1.58)
    assert test.n == 10 and test.significant
    assert (test.a, test.b) == ("drug1", "drug2")
    # The same p from the textbook formula t = mean(d) / (sd(d) / sqrt(n)) with n - 1 degrees of freedom.
    d = np.subtract(DRUG1, DRUG2)
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    assert test.p_value == pytest.approx(2 * stats.t.sf(abs(t), len(d) - 1), rel=1e-12)


def test_t_interval_is_mean_plus_minus_t_quantile_times_standard_error() -> None:
    values = np.array(DRUG1)
    half = stats.t.ppf(0.995, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    low, high = t_interval(DRUG1)
    assert low == pytest.approx(values.mean() - half, rel=1e-12)
    assert high == pytest.approx(values.mean() + half, rel=1e-12)
    assert (round(low, 4), round(high, 4)) == (-1.0885, 2.5885)
    low95, high95 = t_interval(DRUG1, confidence=0.95)
    assert low < low95 < high95 < high
    assert t_interval([0.5, 0.5, 0.5]) == (0.5, 0.5)
    assert all(math.isnan(x) for x in t_interval([0.5]))


def test_agresti_coull_matches_the_formula() -> None:
    z = stats.norm.ppf(0.995)
    for count, n in ((7, 50), (0, 20), (20, 20), (3.5, 25)):
        n_tilde = n + z**2
        p_tilde = (count + z**2 / 2) / n_tilde
        half = z * math.sqrt(p_tilde * (1 - p_tilde) / n_tilde)
        low, high = agresti_coull_interval([count / n], nobs=n)
        assert low == pytest.approx(max(0.0, p_tilde - half), abs=1e-12)
        assert high == pytest.approx(min(1.0, p_tilde + half), abs=1e-12)
    # Default count: N² for N runs of the given mean rate.
    rates = [0.1, 0.2, 0.15, 0.05]
    assert agresti_coull_interval(rates) == pytest.approx(agresti_coull_interval([np.mean(rates)], nobs=16))


# (printed mean error or IoU, printed 99 % CI, number of runs N) of the paper's Table 1 and Table 2.
PAPER_ROWS = [
    (0.257, (0.251, 0.263), 200), (0.273, (0.267, 0.279), 200), (0.205, (0.200, 0.211), 200),
    (0.414, (0.408, 0.420), 200), (0.147, (0.143, 0.152), 200), (0.099, (0.095, 0.103), 200),
    (0.088, (0.073, 0.103), 50), (0.077, (0.064, 0.091), 50), (0.763, (0.741, 0.785), 50),
    (0.778, (0.756, 0.799), 50),
]


@pytest.mark.parametrize(("mean", "printed", "runs"), PAPER_ROWS)
def test_agresti_coull_with_n_squared_reproduces_the_papers_tables(mean, printed, runs) -> None:
    low, high = agresti_coull_interval([mean] * runs)
    # Within the rounding of the printed mean and bounds (the worst row is off by 0.0014).
    assert abs(low - printed[0]) <= 0.0015 and abs(high - printed[1]) <= 0.0015
    # A proportion of N runs would give an interval many times wider than printed.
    wide_low, wide_high = agresti_coull_interval([mean] * runs, nobs=runs)
    assert (wide_high - wide_low) > 4 * (printed[1] - printed[0])


def test_summarize_uses_agresti_coull_for_error_and_t_for_iou() -> None:
    values = [0.08, 0.09, 0.085, 0.095, 0.07]
    error = summarize("error", values)
    assert error.interval == "agresti-coull"
    assert (error.ci_low, error.ci_high) == pytest.approx(agresti_coull_interval(values))
    miou = summarize("miou", values)
    assert miou.interval == "t"
    assert (miou.ci_low, miou.ci_high) == pytest.approx(t_interval(values))
    assert miou.n == 5 and miou.mean == pytest.approx(0.084) and miou.confidence == 0.99
    assert miou.to_dict()["sd"] == pytest.approx(np.std(values, ddof=1))


def test_pairwise_tests_cover_every_pair_in_order() -> None:
    rng = np.random.default_rng(7)
    base = rng.normal(0.7, 0.02, size=8)
    values = {"random": base, "worst10": base + 0.01 + rng.normal(0, 0.002, 8), "sobol": base + rng.normal(0, 0.02, 8)}
    tests = pairwise_tests(values)
    assert [(t.a, t.b) for t in tests] == [("random", "worst10"), ("random", "sobol"), ("worst10", "sobol")]
    for t in tests:
        expected = stats.ttest_rel(values[t.a], values[t.b])
        assert t.p_value == pytest.approx(expected.pvalue) and t.significant == (expected.pvalue < 0.05)
    assert tests[0].significant and tests[0].mean_difference < 0


def test_undefined_tests_are_not_significant() -> None:
    one = paired_t_test([0.5], [0.4])
    assert math.isnan(one.p_value) and not one.significant and one.mean_difference == pytest.approx(0.1)
    shifted = paired_t_test([0.5, 0.6, 0.7], [0.4, 0.5, 0.6])  # every difference equal: no variance
    assert math.isnan(shifted.p_value) and not shifted.significant


@pytest.mark.parametrize(("call", "message"), [
    (lambda: mean_sd([]), "non-empty"),
    (lambda: t_interval([0.1, float("nan")]), "finite"),
    (lambda: agresti_coull_interval([0.1, 1.2]), r"in \[0.0, 1.0\]"),
    (lambda: agresti_coull_interval([0.1], nobs=0), "nobs"),
    (lambda: t_interval([0.1, 0.2], confidence=1.0), "confidence"),
    (lambda: paired_t_test([0.1, 0.2], [0.1], ("random", "worst10")), "random vs worst10: expected one value per seed"),
])
def test_bad_input_is_refused_with_a_clear_error(call, message) -> None:
    with pytest.raises(StatisticsError, match=message):
        call()


# --- the primary endpoint: Holm, Wilcoxon, paired differences against a reference -----------------

def test_holm_against_hand_computed_values() -> None:
    # Sorted p: 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> raised to 0.06 to stay monotone).
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # 0.02 x4 = 0.08; 0.03 x3 = 0.09; 0.2 x2 = 0.4; 0.5 x1 = 0.5; capped at 1 when k·p > 1.
    assert holm([0.5, 0.02, 0.2, 0.03]) == pytest.approx([0.5, 0.08, 0.4, 0.09])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
    # An undefined test (NaN) stays NaN and is not counted: the family is the other two.
    adjusted = holm([0.01, math.nan, 0.04])
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.04)
    assert holm([]) == [] and holm([0.2]) == [0.2]
    with pytest.raises(StatisticsError, match=r"in \[0, 1\]"):
        holm([0.5, 1.5])


def test_wilcoxon_against_the_exact_distribution_by_hand() -> None:
    # n = 5 distinct |differences| 1..5 (ranks 1..5), 2**5 equally likely sign patterns under H0.
    a = [11.0, 12.0, 7.0, 14.0, 15.0]
    b = [10.0, 10.0, 10.0, 10.0, 10.0]  # differences 1, 2, -3, 4, 5: W- = 3
    # Patterns with a negative rank sum <= 3: {}, {1}, {2}, {3}, {1, 2} -> 5 of 32; two-sided: 10 / 32.
    assert wilcoxon_p(a, b) == pytest.approx(10 / 32)
    assert wilcoxon_p([2, 3, 4, 5, 6], [1, 1, 1, 1, 1]) == pytest.approx(2 / 32)  # all positive: W- = 0
    assert wilcoxon_p([1, 2, 3], [2, 3, 4]) == pytest.approx(2 / 8)  # three seeds can never give p < 0.25
    assert math.isnan(wilcoxon_p([0.5, 0.6], [0.5, 0.6]))  # every difference zero: undefined


def test_compare_to_reference_matches_r_on_the_sleep_data() -> None:
    # R: t.test(DRUG2, DRUG1, paired = TRUE): mean difference 1.58, 95 % CI 0.7001142 2.4598858, p = 0.002833
    values = {"drug1": DRUG1, "drug2": DRUG2, "drug3": [x + 0.5 for x in DRUG1[:5]] + DRUG1[5:]}
    first, second = compare_to_reference(values, "drug1")
    assert (first.a, first.b, first.n) == ("drug2", "drug1", 10)
    assert first.mean_difference == pytest.approx(1.58)
    assert (first.ci_low, first.ci_high) == pytest.approx((0.7001142, 2.4598858), abs=5e-7)
    assert first.confidence == 0.95 and first.p_t == pytest.approx(0.002833, abs=5e-7)
    assert first.p_wilcoxon == pytest.approx(stats.wilcoxon(DRUG2, DRUG1).pvalue)
    # Holm over the two comparisons with the reference.
    assert [first.p_holm, second.p_holm] == pytest.approx(holm([first.p_t, second.p_t]))
    assert first.significant and first.p_holm == pytest.approx(min(1.0, 2 * first.p_t))
    # One pair of identical runs: every test undefined, nothing significant.
    (same,) = compare_to_reference({"r": [0.5, 0.6], "a": [0.5, 0.6]}, "r")
    assert math.isnan(same.p_t) and math.isnan(same.p_wilcoxon) and not same.significant
    with pytest.raises(StatisticsError, match="reference 'sobol': not among drug1, drug2"):
        compare_to_reference({"drug1": DRUG1, "drug2": DRUG2}, "sobol")
