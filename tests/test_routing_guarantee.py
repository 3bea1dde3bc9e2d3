"""Thresholds with a guarantee: the bounds against scipy's own, Learn then Test on synthetic data whose
true risk is known, per-tenant online calibration from replayed outcomes, and the router applying it."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from serve_app.routing.calibration import Outcome, TenantCalibrator
from serve_app.routing.risk import (
    binomial_pvalue,
    binomial_ucb,
    calibrate,
    candidate_losses,
    fixed_sequence,
    hoeffding_bentkus_pvalue,
)
from serve_app.settings import RoutingPolicySettings
from tests.test_router_policy import SURE, UNSURE, Scripted, answer, ladder


def test_clopper_pearson_matches_scipy() -> None:
    for k, n in ((0, 50), (3, 50), (40, 527), (50, 50)):
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.8, method="exact")
        assert binomial_ucb(k, n, 0.1) == pytest.approx(ci.high, abs=1e-9)
    assert binomial_ucb(0, 50, 0.1) == pytest.approx(1 - 0.1 ** (1 / 50))  # closed form at k = 0
    # the p-value and the bound agree: ucb <= alpha exactly when p <= delta
    for k in range(0, 30):
        assert (binomial_ucb(k, 200, 0.1) <= 0.1) == (binomial_pvalue(k, 200, 0.1) <= 0.1)
    assert binomial_pvalue(7, 100, 0.1) == pytest.approx(stats.binomtest(7, 100, 0.1, "less").pvalue)


def test_hoeffding_bentkus_is_valid_and_looser_than_exact() -> None:
    # a mean at alpha or above is never evidence; HB is never tighter than the exact binomial p-value
    assert hoeffding_bentkus_pvalue(0.2, 100, 0.2) == 1.0
    for k in (0, 5, 10, 15):
        assert hoeffding_bentkus_pvalue(k / 200, 200, 0.1) >= binomial_pvalue(k, 200, 0.1) - 1e-12
    hoeffding = math.exp(-200 * (0.05 * math.log(0.5) + 0.95 * math.log(0.95 / 0.9)))
    assert hoeffding_bentkus_pvalue(0.05, 200, 0.1) <= hoeffding


def test_candidate_losses_count_every_distinct_threshold() -> None:
    scores = np.array([0.9, 0.1, 0.5, 0.5])
    accepted = np.array([0, 1, 1, 0])  # loss if accepted (weak wrong)
    escalated = np.array([0, 0, 1, 1])  # loss if escalated (strong wrong)
    thresholds, counts = candidate_losses(scores, accepted, escalated)
    assert list(thresholds) == [np.inf, 0.9, 0.5, 0.1]
    assert list(counts) == [2, 2, 1, 2]  # escalate all; accept 0.9; accept both 0.5s; accept all
    with pytest.raises(ValueError):
        fixed_sequence([0], 10, alpha=0.0, delta=0.1)


def test_fixed_sequence_stops_at_the_first_failure() -> None:
    # a non-monotone sequence: the third fails, so the fourth is never reached however good
    assert fixed_sequence([0, 1, 60, 0], n=200, alpha=0.1, delta=0.1) == 2
    assert fixed_sequence([30, 0], n=200, alpha=0.1, delta=0.1) == 0


def test_learn_then_test_holds_in_at_least_one_minus_delta_of_draws() -> None:
    """Scores uniform; the weak answer is wrong with probability 0.6 (1 - s): at threshold t the loss
    rate (accepted and wrong) is the integral of (1 - s) 0.6 over [t, 1] = 0.3 (1 - t)^2. The chosen
    threshold's true risk must be <= alpha in >= 1 - delta of the draws, and not far from it."""
    rng = np.random.default_rng(7)
    alpha, delta, n, draws = 0.05, 0.1, 400, 300
    t_star = 1 - math.sqrt(alpha / 0.3)  # the loosest threshold that meets alpha
    violations, chosen = 0, []
    for _ in range(draws):
        s = rng.random(n)
        wrong = rng.random(n) < 0.6 * (1 - s)
        result = calibrate(s, wrong, np.zeros(n, bool), alpha, delta)
        risk = 0.3 * (1 - min(result.threshold, 1.0)) ** 2
        violations += risk > alpha
        chosen.append(result.threshold)
    assert violations / draws <= delta
    assert t_star < np.median(chosen) < t_star + 0.15  # valid without escalating everything


def outcomes(tenant: str, n: int, wrong_rate_at_low: float, seed: int) -> list[Outcome]:
    """A tier whose answers are wrong with probability wrong_rate_at_low x (1 - confidence)."""
    rng = np.random.default_rng(seed)
    conf = rng.random(n)
    wrong = rng.random(n) < wrong_rate_at_low * (1 - conf)
    return [Outcome(tenant, "t0", float(c), not w) for c, w in zip(conf, wrong, strict=True)]


def test_replayed_outcomes_give_a_worse_tenant_a_stricter_threshold() -> None:
    calibrator = TenantCalibrator(max_accepted_wrong=0.05, delta=0.1, min_outcomes=100)
    calibrator.add(outcomes("good", 800, 0.3, 1))
    calibrator.add(outcomes("bad", 800, 0.9, 2))
    calibrator.add(outcomes("new", 60, 0.9, 3))  # too few: the global threshold
    thresholds = calibrator.thresholds()
    assert set(thresholds) == {"good", "bad"} and calibrator.calibrated("new", "t0") is None
    assert thresholds["bad"]["t0"] > thresholds["good"]["t0"] + 0.1
    # the bound holds on what was replayed: the accepted-wrong rate's upper bound is <= 5%
    for tenant in ("good", "bad"):
        chosen = calibrator.calibrated(tenant, "t0")
        assert chosen is not None and chosen.ucb <= 0.05
    pooled = calibrator.pooled("t0")
    assert pooled is not None and thresholds["good"]["t0"] < pooled.threshold < thresholds["bad"]["t0"]
    policy = calibrator.user_config({"threshold": 0.6})
    assert RoutingPolicySettings(**policy).tenant_thresholds == thresholds
    with pytest.raises(ValueError):
        calibrator.add([Outcome("good", "t0", 1.5, True)])


def test_the_router_applies_a_tenants_calibrated_threshold() -> None:
    lite, sonnet = Scripted("lite", UNSURE), Scripted("sonnet", SURE)
    router = ladder(lite, sonnet, threshold=0.99)
    assert answer(router, "acme").tier == "t1"
    router.configure(RoutingPolicySettings(threshold=0.99, tenant_thresholds={"acme": {"t0": 0.1}}))
    assert answer(router, "acme").tier == "t0"  # its calibrated threshold
    assert answer(router, "other").tier == "t1"  # too little data: the global one
    with pytest.raises(ValueError, match="tenant_thresholds"):
        RoutingPolicySettings(tenant_thresholds={"acme": {"t0": 1.5}})
