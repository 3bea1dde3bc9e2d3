"""Logged outcomes for a simulated experiment, and their aggregation into the rows the report reads.

`simulate_log` draws one row per request as the tables record them (day, arm, unit, resolved, rating,
escalated, cost, latency); `aggregate` turns any such log (simulated, or exported from `request_arms`
joined to `outcomes`) into `store.report_rows`' per-arm and per-day rows, so `report.build_report`
reads a simulation exactly as it reads the database."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import date, timedelta
from typing import Any

import numpy as np

from serve_app.experiments.config import ExperimentSettings


def simulate_log(
    experiment: ExperimentSettings,
    resolve_rate: Mapping[str, float],
    days: int = 28,
    per_day: int = 100,
    seed: int = 0,
    start: date = date(2026, 1, 1),
    escalate_rate: float = 0.25,
) -> list[dict[str, Any]]:
    """`per_day` requests a day, one unit each, assigned as the experiment assigns them."""
    rng = np.random.default_rng(seed)
    log = []
    for d in range(days):
        for i in range(per_day):
            unit = f"u{seed}-{d}-{i}"
            arm = experiment.arm_of(unit)
            resolved = bool(rng.random() < resolve_rate[arm])
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


def aggregate(log: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per-arm and per-day rows, as `store.report_rows` returns them."""
    by_arm: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    by_day: dict[tuple[Any, str], list[Mapping[str, Any]]] = defaultdict(list)
    for row in log:
        by_arm[row["arm"]].append(row)
        by_day[(row["day"], row["arm"])].append(row)
    arms = []
    for arm, rows in sorted(by_arm.items()):
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
            }
        )
    daily = [
        {
            "day": day,
            "arm": arm,
            "with_feedback": sum(r.get("resolved") is not None for r in rows),
            "resolved": sum(bool(r.get("resolved")) for r in rows),
        }
        for (day, arm), rows in sorted(by_day.items())
    ]
    return arms, daily
