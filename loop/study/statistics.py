"""Statistics of repeated runs (paper §2.2): mean ± sd, 99 % intervals, paired t-tests.

Pure functions over per-seed values (one value per run, e.g. the final cycle's mean IoU on
the synthetic validation set); the library calls do the work:

* mean and sample standard deviation (``ddof=1``) with numpy;
* a t-interval for means such as IoU or boundary F1 (``scipy.stats.t.interval``);
* an Agresti–Coull interval for error rates
  (``statsmodels.stats.proportion.proportion_confint(method="agresti_coull")``);
* a paired two-tailed t-test between two policies over the same seeds
  (``scipy.stats.ttest_rel``), significant when p < 0.05;
* for the one primary endpoint, each policy's paired difference to a reference policy with a
  95 % t-interval, the paired t-test and the Wilcoxon signed-rank test
  (``scipy.stats.wilcoxon``): :func:`compare_to_reference`;
* Holm's step-down adjustment of a family of p-values
  (``statsmodels.stats.multitest.multipletests(method="holm")``): :func:`holm`, for the
  secondary endpoints (every other metric and source) and the primary comparisons.

**The count n of the Agresti–Coull interval.** The paper gives a 99 % Agresti–Coull
interval for a mean error rate over N runs but not the count it used. Treating the mean
rate as a proportion out of **N² trials** (N = number of runs) reproduces every interval of
its Table 1 (N = 200) and Table 2 (N = 50) to the printed three decimals, given the
rounding of the printed means (the Table 2 random-error row to within 0.001); n = N (a
proportion of runs) or n = N × test images give intervals several times too wide or
narrow (``tests/loop/study/test_statistics.py`` checks this against the paper's numbers). So
:func:`agresti_coull_interval` uses ``nobs = N²`` by default, and the report says so. It is
the paper's convention, not a textbook binomial count: its width shrinks like 1/N and
does not depend on the spread between runs. Pass ``nobs`` to use another count (e.g. the
pixels or images scored).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats
from loop.errors import InputError

CONFIDENCE = 0.99
PRIMARY_CONFIDENCE = 0.95
SIGNIFICANCE = 0.05
# Metrics that are proportions of wrong pixels or images: Agresti–Coull; every other metric: t-interval.
RATE_METRICS = frozenset({"error"})


class StatisticsError(InputError):
    """Values handed to a statistics function are not what it needs."""


def _values(name: str, values: Sequence[float], *, low: float | None = None, high: float | None = None) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise StatisticsError(f"{name}: expected a non-empty 1-D sequence of numbers, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise StatisticsError(f"{name}: expected finite numbers, got {array.tolist()}")
    if (low is not None and array.min() < low) or (high is not None and array.max() > high):
        raise StatisticsError(f"{name}: expected numbers in [{low}, {high}], got {array.tolist()}")
    return array


def _confidence(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise StatisticsError(f"confidence: expected a number in (0, 1), got {confidence!r}")
    return float(confidence)


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; NaN for a single value)."""
    array = _values("values", values)
    sd = float(np.std(array, ddof=1)) if array.size > 1 else math.nan
    return float(np.mean(array)), sd


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Two-sided Student-t confidence interval of the mean of ``values`` (NaN for one value).

    >>> lo, hi = t_interval([0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0])
    >>> round(lo, 4), round(hi, 4)
    (-1.0885, 2.5885)
    """
    array = _values("values", values)
    confidence = _confidence(confidence)
    if array.size < 2:
        return math.nan, math.nan
    mean, sem = float(np.mean(array)), float(stats.sem(array))
    if sem == 0.0:  # all values equal: scipy's interval would be (nan, nan)
        return mean, mean
    low, high = stats.t.interval(confidence, df=array.size - 1, loc=mean, scale=sem)
    return float(low), float(high)


def agresti_coull_interval(rates: Sequence[float], confidence: float = CONFIDENCE,
                           nobs: float | None = None) -> tuple[float, float]:
    """Agresti–Coull interval of the mean error rate of ``rates`` (one rate in [0, 1] per run).

    The mean rate is taken as a proportion of ``nobs`` trials; by default ``nobs = N²`` for
    N runs, the convention that reproduces the paper's Tables 1 and 2 (module docstring).
    """
    array = _values("rates", rates, low=0.0, high=1.0)
    confidence = _confidence(confidence)
    n = float(array.size) ** 2 if nobs is None else float(nobs)
    if not math.isfinite(n) or n <= 0:
        raise StatisticsError(f"nobs: expected a positive number of trials, got {nobs!r}")
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(float(np.mean(array)) * n, n, alpha=1.0 - confidence, method="agresti_coull")
    return float(low), float(high)


@dataclass(frozen=True)
class Summary:
    """One metric of one policy over its runs: ``n`` runs, mean ± sd and a confidence interval.

    ``interval`` names the method: ``"t"`` or ``"agresti-coull"``.
    """

    n: int
    mean: float
    sd: float
    ci_low: float
    ci_high: float
    interval: str
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-ready; NaN stays NaN)."""
        return asdict(self)


def summarize(metric: str, values: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
    """Mean ± sd of ``values`` and their interval: Agresti–Coull for rate metrics
    (:data:`RATE_METRICS`), a t-interval for every other metric."""
    mean, sd = mean_sd(values)
    if metric in RATE_METRICS:
        low, high = agresti_coull_interval(values, confidence)
        method = "agresti-coull"
    else:
        low, high = t_interval(values, confidence)
        method = "t"
    return Summary(n=len(values), mean=mean, sd=sd, ci_low=low, ci_high=high, interval=method,
                   confidence=confidence)


@dataclass(frozen=True)
class PairedTest:
    """A paired two-tailed t-test of ``a`` against ``b`` over the same seeds.

    ``mean_difference`` is mean(a − b); ``p_value`` is NaN when the test is undefined (one
    pair, or every difference equal), and then ``significant`` is False.
    """

    a: str
    b: str
    n: int
    mean_difference: float
    t_statistic: float
    p_value: float
    significant: bool
    p_holm: float = math.nan
    """The Holm-adjusted p-value within the family the test was reported in (:func:`holm`), if any."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-ready; NaN stays NaN)."""
        return asdict(self)


def paired_t_test(a: Sequence[float], b: Sequence[float], names: tuple[str, str] = ("a", "b"),
                  significance: float = SIGNIFICANCE) -> PairedTest:
    """Paired two-tailed t-test (``scipy.stats.ttest_rel``) of ``a`` against ``b``; pairs in order.

    >>> round(paired_t_test([0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0],
    ...                     [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]).p_value, 6)
    0.002833
    """
    x, y = _values(f"{names[0]} values", a), _values(f"{names[1]} values", b)
    if x.size != y.size:
        raise StatisticsError(f"paired t-test {names[0]} vs {names[1]}: expected one value per seed on both sides, "
                              f"got {x.size} and {y.size}")
    diff = x - y
    if x.size < 2 or np.all(diff == diff[0]):
        t, p = math.nan, math.nan
    else:
        result = stats.ttest_rel(x, y)
        t, p = float(result.statistic), float(result.pvalue)
    return PairedTest(a=names[0], b=names[1], n=int(x.size), mean_difference=float(np.mean(diff)),
                      t_statistic=t, p_value=p, significant=bool(p < significance) if math.isfinite(p) else False)


def pairwise_tests(values: Mapping[str, Sequence[float]], significance: float = SIGNIFICANCE) -> list[PairedTest]:
    """A paired t-test for every pair of entries of ``values`` (name -> one value per seed), in order."""
    return [paired_t_test(values[a], values[b], (a, b), significance) for a, b in itertools.combinations(values, 2)]


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values of a family, in the given order
    (``statsmodels.stats.multitest.multipletests(method="holm")``).

    NaN p-values (undefined tests) stay NaN and are not counted in the family.

    >>> [round(p, 4) for p in holm([0.01, 0.04, 0.03])]
    [0.03, 0.06, 0.06]
    """
    array = np.asarray(list(p_values), dtype=np.float64)
    if array.ndim != 1:
        raise StatisticsError(f"p_values: expected a 1-D sequence of numbers, got shape {array.shape}")
    finite = np.isfinite(array)
    if np.any(finite & ((array < 0) | (array > 1))):
        raise StatisticsError(f"p_values: expected numbers in [0, 1] (or NaN), got {array.tolist()}")
    out = np.full(array.shape, math.nan)
    if finite.any():
        from statsmodels.stats.multitest import multipletests

        out[finite] = multipletests(array[finite], method="holm")[1]
    return [float(v) for v in out]


def wilcoxon_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of the pairs ``a − b`` (``scipy.stats.wilcoxon``: zero
    differences dropped, the exact distribution for small samples without ties); NaN when every
    difference is zero.

    >>> wilcoxon_p([2, 3, 4, 5, 6], [1, 1, 1, 1, 1])  # all five differences positive: 2 / 2**5
    0.0625
    """
    x, y = _values("a values", a), _values("b values", b)
    if x.size != y.size:
        raise StatisticsError(f"Wilcoxon test: expected one value per seed on both sides, got {x.size} and {y.size}")
    if not np.any(x - y != 0):
        return math.nan
    return float(stats.wilcoxon(x, y).pvalue)


@dataclass(frozen=True)
class PairedComparison:
    """Policy ``a`` against the reference ``b`` on one endpoint, over the same seeds.

    ``mean_difference`` = mean(a − b) with its ``confidence`` t-interval (``ci_low``,
    ``ci_high``); ``p_t`` of the paired t-test, ``p_wilcoxon`` of the Wilcoxon signed-rank test,
    ``p_holm`` the paired t's p Holm-adjusted over the comparisons with the reference
    (:func:`compare_to_reference`); NaN where a test is undefined. ``significant``: ``p_holm`` <
    the significance level.
    """

    a: str
    b: str
    n: int
    mean_difference: float
    ci_low: float
    ci_high: float
    confidence: float
    t_statistic: float
    p_t: float
    p_wilcoxon: float
    p_holm: float
    significant: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-ready; NaN stays NaN)."""
        return asdict(self)


def compare_to_reference(values: Mapping[str, Sequence[float]], reference: str,
                         confidence: float = PRIMARY_CONFIDENCE,
                         significance: float = SIGNIFICANCE) -> list[PairedComparison]:
    """Every other entry of ``values`` (name -> one value per seed) against ``values[reference]``:
    paired difference with a t-interval, paired t-test, Wilcoxon signed-rank test, and the t-tests'
    p-values Holm-adjusted over these comparisons. In the order of ``values``.

    >>> (only,) = compare_to_reference({"r": [1, 2, 3, 4], "a": [2, 3, 5, 6]}, "r")
    >>> only.mean_difference, only.p_holm == only.p_t, only.p_wilcoxon
    (1.5, True, 0.125)
    """
    if reference not in values:
        raise StatisticsError(f"reference {reference!r}: not among {', '.join(values)}")
    confidence = _confidence(confidence)
    rows = []
    for name, sample in values.items():
        if name == reference:
            continue
        test = paired_t_test(sample, values[reference], (name, reference), significance)
        diff = _values(f"{name} values", sample) - _values(f"{reference} values", values[reference])
        low, high = t_interval(diff, confidence)
        rows.append((test, low, high, wilcoxon_p(sample, values[reference])))
    adjusted = holm([test.p_value for test, *_ in rows])
    return [PairedComparison(a=test.a, b=test.b, n=test.n, mean_difference=test.mean_difference, ci_low=low,
                             ci_high=high, confidence=confidence, t_statistic=test.t_statistic, p_t=test.p_value,
                             p_wilcoxon=p_w, p_holm=p_h, significant=bool(p_h < significance) if math.isfinite(p_h)
                             else False)
            for (test, low, high, p_w), p_h in zip(rows, adjusted)]
