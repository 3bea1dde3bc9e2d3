"""The statistics of an experiment report: intervals per arm, the difference to control, a sequential test.

- `wilson`: a 95% Wilson score interval for a rate (resolution, escalation); good at small n and near 0 or 1.
- `two_proportions`: the difference of two rates, B - A, with an unpooled (Wald) interval and the
  two-sided p-value of the pooled two-proportion z test (the same p as a 2x2 chi-square without correction).
- `mean_interval` / `welch`: a mean with a Student t interval, and the difference of two means (Welch).
- `msprt`: the mixture sequential probability ratio test (Johari, Pekelis, Walsh: "Always valid inference",
  as Optimizely's stats engine and Statsig's sequential testing use it) for the difference of two rates.
  The difference's estimate is treated as normal with its plug-in variance V, and the likelihood ratio is
  mixed over a normal prior N(0, tau^2) on the true difference:

      Lambda = sqrt(V / (V + tau^2)) * exp(d^2 tau^2 / (2 V (V + tau^2)))

  The always-valid p-value is min over the reads so far of 1 / Lambda: the chance that it ever falls
  under alpha under the null, however often the report is read, is at most alpha. `tau` (the mixing
  standard deviation, in rate points) is where the test has its power: 0.05 by default, the size of a
  reranker's effect on resolution worth acting on. A larger tau is quicker for big effects and slower for
  small ones; any tau keeps the guarantee.
- `UnitSums` and the `clustered_*` functions: the same figures where the assignment unit is a tenant or a
  session, whose requests are correlated (one tenant's questions resolve alike). Each metric is a ratio of
  per-unit totals, sum(y_u) / sum(x_u) (resolved / with feedback, rating sum / ratings, escalated /
  routed, cost / resolved), and the unit is the independent observation: its variance by the delta
  method over units, as GrowthBook and Statsig compute ratio metrics whose analysis unit is not the
  randomisation unit,

      Var(R) = n / (n - 1) * sum_u (y_u - R x_u)^2 / (sum_u x_u)^2

  A rate keeps a Wilson interval on its effective sample size R (1 - R) / Var(R) (the design effect
  applied to the Wilson interval); means and differences get t intervals with units - 1 degrees of
  freedom (Welch-Satterthwaite for a difference). With one request per unit these reduce to the
  per-request figures (the delta variance of a rate is then p (1 - p) / n).
- `srm`: the sample-ratio-mismatch check: a chi-square goodness-of-fit test of the units per arm against
  the configured weights; p < 0.001 (the usual threshold, GrowthBook's) flags a broken split.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from scipy import stats as sps

Z95 = 1.959963984540054
SRM_ALPHA = 0.001
DEFAULT_TAU = 0.05


@dataclass(frozen=True)
class Interval:
    estimate: float | None
    low: float | None
    high: float | None

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


def wilson(successes: int, n: int, z: float = Z95) -> Interval:
    """The rate successes/n with its Wilson score interval (None for n = 0)."""
    if n <= 0:
        return Interval(None, None, None)
    if not 0 <= successes <= n:
        raise ValueError("successes must lie in [0, n]")
    return _wilson(successes / n, n, z)


def _wilson(p: float, n: float, z: float = Z95) -> Interval:
    """Wilson's interval of a rate p observed on n (possibly effective, fractional) trials."""
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Difference:
    """B - A with its interval and a two-sided p-value (None where a side has no data)."""

    estimate: float | None
    low: float | None
    high: float | None
    p_value: float | None

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


NO_DIFFERENCE = Difference(None, None, None, None)


def two_proportions(x_a: int, n_a: int, x_b: int, n_b: int, z: float = Z95) -> Difference:
    """Rate B minus rate A: unpooled Wald interval, pooled two-proportion z test p-value."""
    if n_a <= 0 or n_b <= 0:
        return NO_DIFFERENCE
    p_a, p_b = x_a / n_a, x_b / n_b
    d = p_b - p_a
    se = math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
    pooled = (x_a + x_b) / (n_a + n_b)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    p = 1.0 if se0 == 0 else float(2 * sps.norm.sf(abs(d) / se0))
    return Difference(d, d - z * se, d + z * se, p)


@dataclass(frozen=True)
class Moments:
    """n, mean and sample variance of a sample (what a SQL aggregate returns)."""

    n: int
    mean: float
    var: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Moments:
        n = len(values)
        if n == 0:
            return cls(0, 0.0, 0.0)
        mean = sum(values) / n
        var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
        return cls(n, mean, var)


def mean_interval(m: Moments, confidence: float = 0.95) -> Interval:
    """The mean with a Student t interval (no interval under two values)."""
    if m.n == 0:
        return Interval(None, None, None)
    if m.n < 2:
        return Interval(m.mean, None, None)
    half = float(sps.t.ppf((1 + confidence) / 2, m.n - 1)) * math.sqrt(m.var / m.n)
    return Interval(m.mean, m.mean - half, m.mean + half)


def welch(a: Moments, b: Moments, confidence: float = 0.95) -> Difference:
    """Mean B minus mean A with Welch's t interval and p-value."""
    if a.n < 2 or b.n < 2:
        return NO_DIFFERENCE
    va, vb = a.var / a.n, b.var / b.n
    d = b.mean - a.mean
    se = math.sqrt(va + vb)
    if se == 0:
        return Difference(d, d, d, 1.0 if d == 0 else 0.0)
    df = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))
    half = float(sps.t.ppf((1 + confidence) / 2, df)) * se
    return Difference(d, d - half, d + half, float(2 * sps.t.sf(abs(d) / se, df)))


@dataclass(frozen=True)
class Sequential:
    """The mSPRT at one read: likelihood ratio, always-valid p-value and interval for B - A."""

    likelihood_ratio: float
    p_value: float
    low: float | None
    high: float | None
    tau: float

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)


def msprt(
    x_a: int, n_a: int, x_b: int, n_b: int, tau: float = DEFAULT_TAU, alpha: float = 0.05
) -> Sequential:
    """The mixture SPRT for rate B - rate A at the current totals (see the module docstring).

    The p-value here is 1 / Lambda of this read alone; `sequential_p` takes the running minimum over
    reads. The interval is the always-valid one: every difference d0 whose Lambda(d0) < 1 / alpha."""
    if n_a <= 0 or n_b <= 0:
        return Sequential(1.0, 1.0, None, None, tau)
    p_a, p_b = x_a / n_a, x_b / n_b
    v = p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b
    return msprt_normal(p_b - p_a, v, tau, alpha)


def msprt_normal(d: float, v: float, tau: float = DEFAULT_TAU, alpha: float = 0.05) -> Sequential:
    """The mixture SPRT for a difference estimated as d with variance v (any estimator: the per-request
    rates of `msprt`, or the unit-level delta method of `clustered_msprt`)."""
    if not v > 0:  # every unit resolved (or none) in both arms so far: no evidence either way yet
        return Sequential(1.0, 1.0, None, None, tau)
    t2 = tau * tau
    log_lr = 0.5 * math.log(v / (v + t2)) + d * d * t2 / (2 * v * (v + t2))
    lr = math.exp(min(log_lr, 700.0))
    half = math.sqrt(v * (v + t2) / t2 * (2 * math.log(1 / alpha) + math.log((v + t2) / v)))
    return Sequential(lr, min(1.0, 1 / lr), d - half, d + half, tau)


def sequential_p(reads: Iterable[tuple[int, int, int, int]], tau: float = DEFAULT_TAU) -> float:
    """The always-valid p-value after a series of cumulative reads (x_a, n_a, x_b, n_b): the running
    minimum of 1 / Lambda."""
    p = 1.0
    for x_a, n_a, x_b, n_b in reads:
        p = min(p, msprt(x_a, n_a, x_b, n_b, tau).p_value)
    return p


@dataclass(frozen=True)
class SampleRatio:
    """Units per arm against the configured weights: chi-square, p-value, flagged when p < threshold."""

    observed: dict[str, int]
    expected: dict[str, float]
    chi2: float
    p_value: float
    mismatch: bool

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def srm(
    observed: Mapping[str, int], weights: Mapping[str, float], threshold: float = SRM_ALPHA
) -> SampleRatio:
    """Chi-square goodness of fit of the units per arm to the weights (arms of weight 0 are left out)."""
    arms = [a for a in weights if weights[a] > 0]
    total_w = sum(weights[a] for a in arms)
    n = sum(observed.get(a, 0) for a in arms)
    expected = {a: n * weights[a] / total_w for a in arms}
    obs = {a: int(observed.get(a, 0)) for a in arms}
    if n == 0 or len(arms) < 2:
        return SampleRatio(obs, expected, 0.0, 1.0, False)
    chi2 = sum((obs[a] - expected[a]) ** 2 / expected[a] for a in arms)
    p = float(sps.chi2.sf(chi2, len(arms) - 1))
    return SampleRatio(obs, expected, chi2, p, p < threshold)


@dataclass(frozen=True)
class UnitSums:
    """A ratio metric sum(y_u) / sum(x_u) over independent units u, as the sums the delta method needs:
    n (units that have data for the metric: x_u > 0 or y_u != 0), sum x, sum y, sum x^2, sum y^2, sum xy.
    Units without data add nothing but the n / (n - 1) factor, so they are left out of n."""

    n: int
    x: float
    y: float
    xx: float
    yy: float
    xy: float

    @classmethod
    def of(cls, xs: Sequence[float], ys: Sequence[float]) -> UnitSums:
        pairs = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True) if x > 0 or y != 0]
        return cls(
            len(pairs),
            sum(x for x, _ in pairs),
            sum(y for _, y in pairs),
            sum(x * x for x, _ in pairs),
            sum(y * y for _, y in pairs),
            sum(x * y for x, y in pairs),
        )

    @classmethod
    def from_row(cls, row: Mapping[str, Any], prefix: str) -> UnitSums:
        """From the columns `{prefix}_n`, `_x`, `_y`, `_xx`, `_yy`, `_xy` (store.report_rows)."""
        x, y, xx, yy, xy = (float(row.get(f"{prefix}_{k}") or 0.0) for k in ("x", "y", "xx", "yy", "xy"))
        return cls(int(row.get(f"{prefix}_n") or 0), x, y, xx, yy, xy)

    @property
    def ratio(self) -> float | None:
        return self.y / self.x if self.x > 0 else None

    @property
    def variance(self) -> float | None:
        """The delta-method variance of the ratio (None under two units)."""
        r = self.ratio
        if r is None or self.n < 2:
            return None
        residual = self.yy - 2 * r * self.xy + r * r * self.xx  # sum_u (y_u - R x_u)^2
        return max(0.0, residual) * self.n / (self.n - 1) / (self.x * self.x)


def clustered_rate(s: UnitSums, z: float = Z95) -> Interval:
    """A rate over units: Wilson's interval on the effective sample size R (1 - R) / Var(R). Where the
    variance is 0 (every unit at the same rate) the requests are the sample size, as per request."""
    r, v = s.ratio, s.variance
    if r is None:
        return Interval(None, None, None)
    if v is None:
        return Interval(r, None, None)
    n_eff = r * (1 - r) / v if v > 0 and 0 < r < 1 else s.x
    return _wilson(r, n_eff, z)


def clustered_mean(
    s: UnitSums, confidence: float = 0.95, floor: float | None = None, ceiling: float | None = None
) -> Interval:
    """A per-request mean over units (rating, cost per resolved request) with a t interval on units - 1
    degrees of freedom, kept within [floor, ceiling] where given (a rating is 1-5, a cost not negative)."""
    r, v = s.ratio, s.variance
    if r is None:
        return Interval(None, None, None)
    if v is None:
        return Interval(r, None, None)
    half = float(sps.t.ppf((1 + confidence) / 2, s.n - 1)) * math.sqrt(v)
    low = r - half if floor is None else max(floor, r - half)
    high = r + half if ceiling is None else min(ceiling, r + half)
    return Interval(r, low, high)


def clustered_difference(a: UnitSums, b: UnitSums, confidence: float = 0.95) -> Difference:
    """Ratio B minus ratio A over independent units: Welch-Satterthwaite t interval and p-value."""
    va, vb = a.variance, b.variance
    if va is None or vb is None or a.ratio is None or b.ratio is None:
        return NO_DIFFERENCE
    d = b.ratio - a.ratio
    se2 = va + vb
    if se2 == 0:
        return Difference(d, d, d, 1.0 if d == 0 else 0.0)
    df = se2**2 / ((va**2 / (a.n - 1) if va else 0.0) + (vb**2 / (b.n - 1) if vb else 0.0))
    se = math.sqrt(se2)
    half = float(sps.t.ppf((1 + confidence) / 2, df)) * se
    return Difference(d, d - half, d + half, float(2 * sps.t.sf(abs(d) / se, df)))


def clustered_msprt(a: UnitSums, b: UnitSums, tau: float = DEFAULT_TAU, alpha: float = 0.05) -> Sequential:
    """The mixture SPRT of ratio B - ratio A with the unit-level (delta method) variance."""
    va, vb = a.variance, b.variance
    if va is None or vb is None or a.ratio is None or b.ratio is None:
        return Sequential(1.0, 1.0, None, None, tau)
    return msprt_normal(b.ratio - a.ratio, va + vb, tau, alpha)


def clustered_sequential_p(reads: Iterable[tuple[UnitSums, UnitSums]], tau: float = DEFAULT_TAU) -> float:
    """The always-valid p-value after cumulative reads of (control, arm) unit sums: the running minimum
    of 1 / Lambda."""
    p = 1.0
    for a, b in reads:
        p = min(p, clustered_msprt(a, b, tau).p_value)
    return p
