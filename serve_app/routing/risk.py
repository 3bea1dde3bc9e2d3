"""Thresholds with a statistical guarantee (Learn then Test with fixed-sequence testing).

A threshold `t` accepts the cheap tier's answer when its confidence is >= t. For each candidate the
calibration data give a loss count `k` of `n` (Bernoulli losses: a wrong final answer, or a wrong answer
accepted); the null hypothesis "the loss rate at t exceeds alpha" is tested with a valid p-value:
the exact binomial one (Clopper-Pearson: p = P[Binom(n, alpha) <= k], i.e. the upper confidence bound
of the rate is <= alpha exactly when p <= delta) or Hoeffding-Bentkus. Candidates are tested in a fixed
sequence from the most conservative (highest threshold: escalate everything) downward and the test
stops at the first one not rejected; every rejected threshold then has a loss rate <= alpha, all at
once, with probability >= 1 - delta over the calibration draw, and the cheapest of them is chosen.
No multiplicity penalty is paid for the number of candidates (Angelopoulos et al., "Learn then Test",
2021; Bates et al., "Distribution-free, risk-controlling prediction sets", 2021).

Pure numpy/scipy, no Ray: used by `eval-router` and by the per-tenant online calibration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

Bound = Literal["binomial", "hoeffding_bentkus"]


def binomial_ucb(k: int, n: int, delta: float) -> float:
    """Clopper-Pearson upper confidence bound (level 1 - delta) of a rate seen k times in n."""
    if n <= 0:
        return 1.0
    if k >= n:
        return 1.0
    return float(stats.beta.ppf(1 - delta, k + 1, n - k))


def binomial_pvalue(k: int, n: int, alpha: float) -> float:
    """p-value of H0 "rate > alpha" after k losses in n: P[Binom(n, alpha) <= k] (exact)."""
    if n <= 0:
        return 1.0
    return float(stats.binom.cdf(k, n, alpha))


def _kl(a: float, b: float) -> float:
    """Bernoulli KL divergence h1(a, b) = a log(a/b) + (1-a) log((1-a)/(1-b))."""
    out = 0.0
    if a > 0:
        out += a * math.log(a / b)
    if a < 1:
        out += (1 - a) * math.log((1 - a) / (1 - b))
    return out


def hoeffding_bentkus_pvalue(mean: float, n: int, alpha: float) -> float:
    """Hoeffding-Bentkus p-value of H0 "mean loss > alpha" for losses in [0, 1] (Bates et al., 2021)."""
    if n <= 0 or mean >= alpha:
        return 1.0
    hoeffding = math.exp(-n * _kl(mean, alpha))
    bentkus = math.e * float(stats.binom.cdf(math.ceil(n * mean), n, alpha))
    return min(1.0, hoeffding, bentkus)


def pvalues(
    losses: Sequence[int] | np.ndarray, n: int, alpha: float, bound: Bound = "binomial"
) -> np.ndarray:
    """The p-values of "rate > alpha" for each loss count of `n` (vectorised)."""
    k = np.asarray(losses, dtype=float)
    if n <= 0:
        return np.ones(len(k))
    if bound == "binomial":
        return stats.binom.cdf(k, n, alpha)
    return np.array([hoeffding_bentkus_pvalue(x / n, n, alpha) for x in k])


def fixed_sequence(
    losses: Sequence[int] | np.ndarray, n: int, alpha: float, delta: float, bound: Bound = "binomial"
) -> int:
    """How many hypotheses, in the given order (most conservative first), are rejected: loss counts
    `losses[i]` of `n` each; the test stops at the first p-value > delta. 0: none holds."""
    if not 0 < delta < 1 or not 0 < alpha < 1:
        raise ValueError("alpha and delta must be in (0, 1)")
    failed = np.nonzero(pvalues(losses, n, alpha, bound) > delta)[0]
    return int(failed[0]) if len(failed) else len(losses)


@dataclass(frozen=True)
class Calibrated:
    """The cheapest threshold whose loss rate is <= alpha with probability >= 1 - delta."""

    threshold: float  # inf: no threshold holds (or only escalating everything)
    losses: int  # loss count at the threshold on the calibration data
    n: int
    ucb: float  # the loss rate's upper confidence bound there
    alpha: float
    delta: float
    tested: int  # thresholds rejected in the sequence (0: not even escalating everything holds)


def candidate_losses(
    scores: np.ndarray, accepted_loss: np.ndarray, escalated_loss: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds, loss counts) for every distinct threshold, most conservative first: +inf (escalate
    all), then the distinct scores downward. A row with score >= t is accepted and counts
    `accepted_loss`; below t it escalates and counts `escalated_loss` (0/1 arrays)."""
    scores = np.asarray(scores, dtype=float)
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    delta_loss = (np.asarray(accepted_loss, int) - np.asarray(escalated_loss, int))[order]
    cumulative = np.cumsum(delta_loss)
    # the last position of each distinct score in the descending order: accepting down to it
    last = np.r_[np.nonzero(np.diff(sorted_scores))[0], len(scores) - 1] if len(scores) else np.array([])
    base = int(np.sum(escalated_loss))
    thresholds = np.r_[np.inf, sorted_scores[last.astype(int)]] if len(scores) else np.array([np.inf])
    counts = np.r_[base, base + cumulative[last.astype(int)]] if len(scores) else np.array([base])
    return thresholds, counts.astype(int)


def calibrate(
    scores: np.ndarray,
    accepted_loss: np.ndarray,
    escalated_loss: np.ndarray,
    alpha: float,
    delta: float,
    bound: Bound = "binomial",
) -> Calibrated:
    """Learn then Test over every distinct threshold (fixed sequence, highest first)."""
    n = len(scores)
    thresholds, counts = candidate_losses(scores, accepted_loss, escalated_loss)
    held = fixed_sequence(counts, n, alpha, delta, bound)
    i = max(held - 1, 0)
    threshold = float(thresholds[i]) if held else math.inf
    ucb = binomial_ucb(int(counts[i]), n, delta)
    return Calibrated(threshold, int(counts[i]), n, ucb, alpha, delta, held)
