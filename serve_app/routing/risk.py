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

Two losses:
- binary (`calibrate`): a count of `n` (a wrong final answer, an accepted wrong answer), exact binomial
  or Hoeffding-Bentkus p-values against a fixed rate alpha. The per-tenant online calibration uses it.
- paired (`calibrate_paired`), for a bar stated as a share of the strong model's accuracy on the same
  requests: per request `quality x strong_ok - routed_ok`, in [-1, quality]; the bar holds exactly when its
  mean is <= 0. The strong model's accuracy is not a plug-in estimate here (its sampling error is in the
  loss, paired with the routed answer's), and answers the weak model gets right where the strong one
  fails count in the routed answer's favour. The loss is not binary, so the p-value is a betting one
  (`betting_pvalues`, Waudby-Smith and Ramdas, "Estimating means of bounded random variables by
  betting", 2023): a capital process that bets against "mean > 0" and is a nonnegative supermartingale
  under it, so 1 / its final value is a valid p-value; the bet size adapts to the running variance,
  which is small here (most requests lose 0 or 1 - quality).

Pure numpy/scipy, no Ray: used by `eval-router` and by the per-tenant online calibration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

Bound = Literal["binomial", "hoeffding_bentkus", "betting"]


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


def betting_pvalues(
    losses: np.ndarray, limit: float, high: float, delta: float, low: float, cap: float = 0.5
) -> np.ndarray:
    """p-values of H0_j "the mean of row j's losses is > limit", each row a loss sequence in a fixed
    (data-independent) order, losses in [`low`, `high`]. Capital K_i = prod_{k<=i} (1 + lam_k (limit -
    L_k)) with predictable bets lam_k >= 0 (the plug-in of Waudby-Smith and Ramdas: sqrt(2 log(1/delta) /
    (n var_{k-1})), capped at cap / (high - limit) so every factor is >= 1 - cap > 0). Under H0, K is a
    nonnegative supermartingale, E[K_n] <= 1, so by Markov's inequality p = min(1, 1 / K_n) is a valid
    p-value (the final capital, not the running maximum that Ville's inequality would also allow: a
    threshold is never certified on an early run of luck its whole calibration set does not back).
    Vectorised over rows (thresholds)."""
    x = np.atleast_2d(np.asarray(losses, dtype=float))
    n = x.shape[1]
    if n == 0:
        return np.ones(x.shape[0])
    if not high > limit:
        raise ValueError("the losses' upper end must be above the limit")
    i = np.arange(1, n + 1)
    # running mean and variance with one pseudo-observation (mid-range, a quarter of the squared range)
    mean = (0.5 * (low + high) + np.cumsum(x, axis=1)) / (i + 1)
    previous_mean = np.hstack([np.full((x.shape[0], 1), 0.5 * (low + high)), mean[:, :-1]])
    var = ((high - low) ** 2 / 4 + np.cumsum((x - previous_mean) ** 2, axis=1)) / (i + 1)
    var_before = np.hstack([np.full((x.shape[0], 1), (high - low) ** 2 / 4), var[:, :-1]])
    bets = np.minimum(np.sqrt(2 * math.log(1 / delta) / (n * var_before)), cap / (high - limit))
    log_capital = np.sum(np.log1p(bets * (limit - x)), axis=1)
    return np.minimum(1.0, np.exp(-np.maximum(log_capital, 0.0)))


def betting_ucb(losses: np.ndarray, high: float, delta: float, low: float, tol: float = 1e-4) -> float:
    """Upper confidence bound (level 1 - delta) of the mean of `losses` (in [low, high]): the smallest
    limit the betting test does not reject (bisection)."""
    lo, hi = low, high
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if betting_pvalues(losses, mid, high, delta, low)[0] <= delta:
            hi = mid  # "mean > mid" rejected
        else:
            lo = mid
    return hi


def paired_losses(
    scores: np.ndarray,
    weak_ok: np.ndarray,
    strong_ok: np.ndarray,
    quality: float,
    direct: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds, losses): every distinct threshold, most conservative first (+inf: escalate all, then
    the distinct scores downward), and per threshold the per-request loss `quality x strong_ok -
    routed_ok` (rows: thresholds, columns: requests in their given order). A request with score >= t
    keeps the weak answer unless `direct` (sent straight to the strong tier before the weak one)."""
    scores = np.asarray(scores, dtype=float)
    weak = np.asarray(weak_ok, dtype=float)
    strong = np.asarray(strong_ok, dtype=float)
    thresholds = np.r_[np.inf, np.unique(scores)[::-1]]
    accepted = scores[None, :] >= thresholds[:, None]
    if direct is not None:
        accepted &= ~np.asarray(direct, bool)[None, :]
    routed = np.where(accepted, weak[None, :], strong[None, :])
    return thresholds, quality * strong[None, :] - routed


@dataclass(frozen=True)
class PairedCalibrated:
    """The cheapest threshold at which routed accuracy >= quality x strong accuracy (paired loss <= 0)
    with probability >= 1 - delta."""

    threshold: float  # inf: only escalating everything holds (or nothing does)
    mean_loss: float  # the paired loss's mean there on the calibration data (<= 0 is the bar)
    n: int
    ucb: float  # its upper confidence bound (level 1 - delta)
    quality: float
    delta: float
    tested: int  # thresholds rejected in the sequence (0: not even escalating everything holds)

    @property
    def alpha(self) -> float:  # the loss's limit, for reports beside the binary loss's alpha
        return 0.0


def calibrate_paired(
    scores: np.ndarray,
    weak_ok: np.ndarray,
    strong_ok: np.ndarray,
    quality: float,
    delta: float,
    bound: Bound = "betting",
    direct: np.ndarray | None = None,
    with_ucb: bool = True,
) -> PairedCalibrated:
    """Learn then Test with the paired loss over every distinct threshold (fixed sequence, highest
    first). `bound`: "betting" (variance-adaptive) or "hoeffding_bentkus" (the loss rescaled to [0, 1]).
    `with_ucb`: also the bound's value at the chosen threshold (a bisection; resplits skip it)."""
    if not 0 < quality <= 1 or not 0 < delta < 1:
        raise ValueError("quality must be in (0, 1] and delta in (0, 1)")
    thresholds, losses = paired_losses(scores, weak_ok, strong_ok, quality, direct)
    n = losses.shape[1]
    if bound == "betting":
        p = betting_pvalues(losses, 0.0, quality, delta, low=-1.0)
    elif bound == "hoeffding_bentkus":
        scaled = (losses.mean(axis=1) + 1) / (1 + quality)
        p = np.array([hoeffding_bentkus_pvalue(m, n, 1 / (1 + quality)) for m in scaled])
    else:
        raise ValueError(f"the paired loss is not binary: bound {bound!r} does not apply")
    failed = np.nonzero(p > delta)[0]
    held = int(failed[0]) if len(failed) else len(thresholds)
    i = max(held - 1, 0)
    threshold = float(thresholds[i]) if held else math.inf
    ucb = betting_ucb(losses[i], quality, delta, -1.0) if bound == "betting" and with_ucb else math.nan
    return PairedCalibrated(threshold, float(losses[i].mean()), n, ucb, quality, delta, held)
