"""The experiment statistics against scipy, and by simulation: A/A read daily stays under alpha with the
sequential test, an injected 10-point difference is found, a skewed split is flagged."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from scipy import stats as sps

from serve_app.experiments.stats import (
    Moments,
    UnitSums,
    clustered_difference,
    clustered_mean,
    clustered_rate,
    clustered_sequential_p,
    mean_interval,
    msprt,
    sequential_p,
    srm,
    two_proportions,
    welch,
    wilson,
)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (45, 120), (999, 1000), (1, 1)])
def test_wilson_matches_scipy(k, n):
    ci = sps.binomtest(k, n).proportion_ci(0.95, method="wilson")
    got = wilson(k, n)
    assert got.estimate == pytest.approx(k / n)
    assert got.low == pytest.approx(ci.low, abs=1e-9)
    assert got.high == pytest.approx(ci.high, abs=1e-9)


def test_wilson_empty_and_bad():
    assert wilson(0, 0).estimate is None
    with pytest.raises(ValueError):
        wilson(3, 2)


@pytest.mark.parametrize(("xa", "na", "xb", "nb"), [(30, 100, 45, 100), (120, 400, 118, 390), (5, 20, 0, 25)])
def test_two_proportions_p_is_the_chi_square_of_the_2x2_table(xa, na, xb, nb):
    table = [[xa, na - xa], [xb, nb - xb]]
    chi = sps.chi2_contingency(table, correction=False)
    got = two_proportions(xa, na, xb, nb)
    assert got.p_value == pytest.approx(chi.pvalue, rel=1e-9)
    pa, pb = xa / na, xb / nb
    se = math.sqrt(pa * (1 - pa) / na + pb * (1 - pb) / nb)
    assert got.estimate == pytest.approx(pb - pa)
    assert got.high - got.estimate == pytest.approx(sps.norm.ppf(0.975) * se)
    assert two_proportions(0, 0, 1, 2).p_value is None


def test_mean_and_welch_match_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.integers(1, 6, 40).astype(float), rng.integers(2, 6, 35).astype(float)
    ma, mb = Moments.of(list(a)), Moments.of(list(b))
    lo, hi = sps.t.interval(0.95, len(a) - 1, loc=a.mean(), scale=sps.sem(a))
    got = mean_interval(ma)
    assert (got.estimate, got.low, got.high) == pytest.approx((a.mean(), lo, hi))
    ref = sps.ttest_ind(b, a, equal_var=False)
    diff = welch(ma, mb)
    assert diff.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    ci = ref.confidence_interval(0.95)
    assert (diff.low, diff.high) == pytest.approx((ci.low, ci.high))
    assert mean_interval(Moments.of([4.0])).low is None


def test_srm_matches_scipy_and_flags_a_skewed_split():
    got = srm({"a": 5210, "b": 4790}, {"a": 1, "b": 1})
    ref = sps.chisquare([5210, 4790], [5000, 5000])
    assert got.p_value == pytest.approx(ref.pvalue) and got.mismatch
    assert not srm({"a": 5030, "b": 4970}, {"a": 1, "b": 1}).mismatch
    three = srm({"a": 500, "b": 260, "c": 240}, {"a": 2, "b": 1, "c": 1, "off": 0})
    assert three.expected == {"a": 500, "b": 250, "c": 250} and not three.mismatch


def test_msprt_formula_and_interval():
    xa, na, xb, nb, tau = 300, 1000, 360, 1000, 0.05
    pa, pb = xa / na, xb / nb
    v = pa * (1 - pa) / na + pb * (1 - pb) / nb
    d = pb - pa
    lr = math.sqrt(v / (v + tau**2)) * math.exp(d * d * tau**2 / (2 * v * (v + tau**2)))
    got = msprt(xa, na, xb, nb, tau)
    assert got.likelihood_ratio == pytest.approx(lr)
    # the always-valid interval is where 1 / Lambda(d0) >= alpha, and wider than the fixed-n one
    for edge in (got.low, got.high):
        shifted = math.sqrt(v / (v + tau**2)) * math.exp((d - edge) ** 2 * tau**2 / (2 * v * (v + tau**2)))
        assert shifted == pytest.approx(20.0)
    fixed = two_proportions(xa, na, xb, nb)
    assert got.low < fixed.low and got.high > fixed.high
    assert msprt(0, 10, 0, 10).p_value == 1.0


def _daily_reads(rng, p_a, p_b, days, per_day, seeds):
    """Cumulative (x_a, n_a, x_b, n_b) per day, for every seed: arrays of shape (seeds, days)."""
    xa = rng.binomial(per_day, p_a, (seeds, days)).cumsum(1)
    xb = rng.binomial(per_day, p_b, (seeds, days)).cumsum(1)
    n = np.arange(1, days + 1) * per_day
    return xa, xb, n


def test_aa_read_every_day_is_not_flagged_more_often_than_alpha():
    rng = np.random.default_rng(16)
    seeds, days, alpha = 200, 28, 0.05
    xa, xb, n = _daily_reads(rng, 0.3, 0.3, days, 50, seeds)
    flagged_seq = flagged_naive = 0
    for s in range(seeds):
        reads = [(int(xa[s, d]), int(n[d]), int(xb[s, d]), int(n[d])) for d in range(days)]
        flagged_seq += sequential_p(reads) < alpha
        flagged_naive += any(two_proportions(*r).p_value < alpha for r in reads)
    assert flagged_seq / seeds <= alpha
    # peeking at the fixed-horizon test every day is what the sequential test protects against
    assert flagged_naive > flagged_seq


def test_an_injected_10_point_difference_is_detected():
    rng = np.random.default_rng(7)
    seeds, days = 50, 28
    xa, xb, n = _daily_reads(rng, 0.30, 0.40, days, 50, seeds)
    found = sum(
        sequential_p([(int(xa[s, d]), int(n[d]), int(xb[s, d]), int(n[d])) for d in range(days)]) < 0.05
        for s in range(seeds)
    )
    assert found / seeds >= 0.9
    last = two_proportions(int(xa[0, -1]), int(n[-1]), int(xb[0, -1]), int(n[-1]))
    assert last.low < 0.10 < last.high and last.p_value < 0.05


def _clustered_arm(rng, units: int, mean: float, icc: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Units of 2-59 requests whose resolution rates are Beta draws around `mean` (intra-unit correlation
    `icc`): per unit (requests, resolved). The true rate over units is `mean` exactly."""
    k = (1 - icc) / icc
    rate = rng.beta(mean * k, (1 - mean) * k, units)
    size = rng.integers(2, 60, units)
    return size, rng.binomial(size, rate)


def test_unit_sums_are_the_delta_method_and_reduce_to_per_request_with_single_request_units():
    rng = np.random.default_rng(3)
    x, y = _clustered_arm(rng, 50, 0.4)
    s = UnitSums.of(list(x), list(y))
    r = y.sum() / x.sum()
    # the textbook delta method: Var(mean y / mean x) from the sample (co)variances over units
    mx, my = x.mean(), y.mean()
    cov = np.cov(np.vstack([x, y]))
    delta = (cov[1, 1] - 2 * r * cov[0, 1] + r * r * cov[0, 0]) / (len(x) * mx * mx)
    assert s.ratio == pytest.approx(my / mx) and s.variance == pytest.approx(delta)
    # units without data for the metric add nothing (but n / (n - 1)): they are left out of n
    assert UnitSums.of([*x, 0, 0], [*y, 0, 0]) == s
    # one request per unit: the delta variance is p (1 - p) / n up to n / (n - 1), so the figures are
    # the per-request ones
    ones = rng.random(400) < 0.3
    single = UnitSums.of([1] * 400, list(ones.astype(float)))
    p = ones.mean()
    assert single.variance == pytest.approx(p * (1 - p) / 400 * 400 / 399)
    got, ref = clustered_rate(single), wilson(int(ones.sum()), 400)
    assert (got.low, got.high) == pytest.approx((ref.low, ref.high), abs=2e-3)
    other = rng.random(380) < 0.4
    diff = clustered_difference(single, UnitSums.of([1] * 380, list(other.astype(float))))
    z = two_proportions(int(ones.sum()), 400, int(other.sum()), 380)
    assert (diff.estimate, diff.low, diff.high) == pytest.approx((z.estimate, z.low, z.high), abs=2e-3)
    assert diff.p_value == pytest.approx(z.p_value, abs=0.01)


def test_a_mean_over_units_has_a_t_interval_on_units():
    x, y = np.array([3.0, 5, 2, 8, 4]), np.array([12.0, 21, 7, 30, 18])  # e.g. ratings and their sum
    s = UnitSums.of(list(x), list(y))
    half = sps.t.ppf(0.975, 4) * math.sqrt(s.variance)
    got = clustered_mean(s)
    assert (got.low, got.high) == pytest.approx((s.ratio - half, s.ratio + half))
    assert clustered_mean(UnitSums.of([1.0], [3.0])).low is None
    assert clustered_mean(UnitSums.of([2.0, 1.0], [0.0, 5.0]), floor=0.0).low == 0.0
    assert clustered_mean(UnitSums.of([2.0, 1.0], [2.0, 5.0]), floor=1.0, ceiling=5.0).high == 5.0
    assert clustered_rate(UnitSums.of([], [])).estimate is None


def test_with_clustered_units_per_request_intervals_under_cover_and_unit_level_ones_cover():
    """30 units an arm, 2-59 requests each, strongly clustered (intra-unit correlation 0.3), A/A at 50%:
    over 300 seeds the unit-level intervals of the rate and of the difference hold the truth about 95%
    of the time, the per-request (Wilson, z) ones well under half."""
    seeds = 300
    hits = Counter()
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        (xa, ya), (xb, yb) = _clustered_arm(rng, 30, 0.5), _clustered_arm(rng, 30, 0.5)
        a, b = UnitSums.of(list(xa), list(ya)), UnitSums.of(list(xb), list(yb))
        rate, diff = clustered_rate(a), clustered_difference(a, b)
        naive_rate = wilson(int(ya.sum()), int(xa.sum()))
        naive_diff = two_proportions(int(ya.sum()), int(xa.sum()), int(yb.sum()), int(xb.sum()))
        hits["rate"] += rate.low <= 0.5 <= rate.high
        hits["diff"] += diff.low <= 0 <= diff.high
        hits["naive rate"] += naive_rate.low <= 0.5 <= naive_rate.high
        hits["naive diff"] += naive_diff.low <= 0 <= naive_diff.high
    cover = {k: v / seeds for k, v in hits.items()}
    assert 0.92 <= cover["rate"] <= 0.98 and 0.92 <= cover["diff"] <= 0.98, cover
    assert cover["naive rate"] < 0.6 and cover["naive diff"] < 0.6, cover


def test_clustered_aa_read_every_day_is_not_flagged_more_often_than_alpha():
    """Sessions of 1-8 correlated requests arrive every day for 28 days (A/A); the unit-level sequential
    test read daily stays under alpha, the per-request one read daily does not."""
    seeds, days, alpha = 200, 28, 0.05
    flagged_units = flagged_requests = 0
    for seed in range(seeds):
        rng = np.random.default_rng(1000 + seed)
        per_arm = []
        for _ in range(2):
            size = rng.integers(1, 9, (days, 15))
            rate = rng.beta(0.5 * 2, 0.5 * 2, (days, 15))  # intra-unit correlation 1/3
            per_arm.append((size, rng.binomial(size, rate)))
        reads, counts = [], []
        for d in range(1, days + 1):
            (xa, ya), (xb, yb) = ((x[:d].ravel(), y[:d].ravel()) for x, y in per_arm)
            reads.append((UnitSums.of(list(xa), list(ya)), UnitSums.of(list(xb), list(yb))))
            counts.append((int(ya.sum()), int(xa.sum()), int(yb.sum()), int(xb.sum())))
        flagged_units += clustered_sequential_p(reads) < alpha
        flagged_requests += sequential_p(counts) < alpha
    assert flagged_units / seeds <= alpha
    assert flagged_requests / seeds > 2 * alpha
