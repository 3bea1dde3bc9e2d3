"""Logged outcomes for a simulated experiment, and their aggregation into the rows the report reads.

`simulate_log` draws one row per request as the tables record them (day, arm, unit, resolved, rating,
escalated, cost, latency), one unit per request or, with `requests_per_unit`, units of several correlated
requests (each unit's resolution rate drawn around its arm's); `aggregate` turns any such log
(simulated, or exported from `request_arms` joined to `outcomes`) into `store.report_rows`' per-arm and
per-day rows, unit sums included, so `report.build_report` reads a simulation as it reads the database."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import date, timedelta
from typing import Any

import numpy as np

from serve_app.experiments.config import ExperimentSettings
from serve_app.experiments.stats import UnitSums
from serve_app.experiments.store import UNIT_METRICS


def simulate_log(
    experiment: ExperimentSettings,
    resolve_rate: Mapping[str, float],
    days: int = 28,
    per_day: int = 100,
    seed: int = 0,
    start: date = date(2026, 1, 1),
    escalate_rate: float = 0.25,
    requests_per_unit: float = 1.0,
    unit_spread: float = 1.0,
) -> list[dict[str, Any]]:
    """`per_day` requests a day, assigned as the experiment assigns their units. With the default one
    request per unit every request is a new unit; with `requests_per_unit` > 1 each request comes from one
    of days * per_day / requests_per_unit units at random, and a unit resolves at its arm's rate shifted
    on the logit scale by a normal draw of sd `unit_spread` (the arm's rate stays the mean over units)."""
    rng = np.random.default_rng(seed)
    pool = max(1, round(days * per_day / requests_per_unit)) if requests_per_unit > 1 else 0
    shift = rng.normal(0.0, unit_spread, pool)
    log = []
    for d in range(days):
        for i in range(per_day):
            k = int(rng.integers(pool)) if pool else -1
            unit = f"u{seed}-{k}" if pool else f"u{seed}-{d}-{i}"
            arm = experiment.arm_of(unit)
            rate = resolve_rate[arm] if not pool else _unit_rate(resolve_rate[arm], shift[k], unit_spread)
            resolved = bool(rng.random() < rate)
            escalated = bool(rng.random() < escalate_rate)
            log.append(
                {
                    "day": start + timedelta(days=d),
                    "arm": arm,
                    "unit": unit,
                    "resolved": resolved,
                    "rating": int(np.clip(round(rng.normal(4.2 if resolved else 2.4, 0.8)), 1, 5)),
                    "escalated": escalated,
                    "cost_usd": 0.004 if escalated else 0.0005,
                    "latency_ms": float(rng.lognormal(6.0 + escalated, 0.4)),
                }
            )
    return log


def _unit_rate(mean: float, shift: float, spread: float) -> float:
    """The rate of a unit shifted by `shift` on the logit scale, recentred so that the mean over units
    (sd `spread`) stays `mean` (a probit approximation of the logit-normal mean)."""
    if not 0 < mean < 1:
        return mean
    centre = _logit(mean) * math.sqrt(1 + (spread * spread) * math.pi / 8)
    return 1 / (1 + math.exp(-(centre + shift)))


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _per_unit(
    rows: Iterable[Mapping[str, Any]], units: dict[str, dict[str, float]] | None = None
) -> dict[str, dict[str, float]]:
    """Each unit's totals, the columns store._PER_UNIT reads (added to `units` when given)."""
    units = units if units is not None else defaultdict(lambda: defaultdict(float))
    for r in rows:
        u = units[r["unit"]]
        if r.get("resolved") is not None:
            u["fed"] += 1
            u["res"] += bool(r["resolved"])
        if r.get("rating") is not None:
            u["rated"] += 1
            u["rating_sum"] += r["rating"]
        if r.get("escalated") is not None:
            u["routed"] += 1
            u["esc"] += bool(r["escalated"])
        u["cost"] += float(r.get("cost_usd") or 0.0)
    return units


def _unit_columns(units: Mapping[str, Mapping[str, float]], prefix: str, x: str, y: str) -> dict[str, float]:
    xs = [u.get(x, 0.0) for u in units.values()]
    ys = [u.get(y, 0.0) for u in units.values()]
    sums = UnitSums.of(xs, ys)
    return {f"{prefix}_{k}": getattr(sums, k) for k in ("n", "x", "y", "xx", "yy", "xy")}


def aggregate(log: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per-arm and per-day rows, as `store.report_rows` returns them (with the unit sums)."""
    log = list(log)
    by_arm: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    by_day: dict[tuple[Any, str], list[Mapping[str, Any]]] = defaultdict(list)
    for row in log:
        by_arm[row["arm"]].append(row)
        by_day[(row["day"], row["arm"])].append(row)
    arms = []
    for arm, rows in sorted(by_arm.items()):
        units = _per_unit(rows)
        rated = np.array([r["rating"] for r in rows if r.get("rating") is not None], float)
        latency = np.array([r["latency_ms"] for r in rows], float)
        fed = [r for r in rows if r.get("resolved") is not None]
        arms.append(
            {
                "arm": arm,
                "units": len({r["unit"] for r in rows}),
                "requests": len(rows),
                "with_feedback": len(fed),
                "resolved": sum(bool(r["resolved"]) for r in fed),
                "ratings": len(rated),
                "rating_mean": float(rated.mean()) if len(rated) else 0.0,
                "rating_var": float(rated.var(ddof=1)) if len(rated) > 1 else 0.0,
                "with_routing": len(rows),
                "escalated": sum(bool(r["escalated"]) for r in rows),
                "cost_usd": float(sum(r["cost_usd"] for r in rows)),
                "p50_ms": float(np.quantile(latency, 0.5)),
                "p95_ms": float(np.quantile(latency, 0.95)),
                **{
                    k: v
                    for p, (x, y) in UNIT_METRICS.items()
                    for k, v in _unit_columns(units, p, x, y).items()
                },
            }
        )
    days = sorted({day for day, _ in by_day})
    daily = []
    for arm, rows in sorted(by_arm.items()):
        first = min(r["day"] for r in rows)
        units = _per_unit([])  # cumulative: each day's rows added to the units' totals so far
        for day in (d for d in days if d >= first):
            today = by_day.get((day, arm), [])
            _per_unit(today, units)
            daily.append(
                {
                    "day": day,
                    "arm": arm,
                    "with_feedback": sum(r.get("resolved") is not None for r in today),
                    "resolved": sum(bool(r.get("resolved")) for r in today),
                    **_unit_columns(units, "cum_res", "fed", "res"),
                }
            )
    daily.sort(key=lambda r: (r["day"], r["arm"]))
    return arms, daily
