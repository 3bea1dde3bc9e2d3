"""Experiment rows in Postgres: each routed request's arms and implicit outcome, the caller's feedback,
and the per-arm aggregates a report is computed from. Every call runs in a tenant transaction (RLS);
`report_rows(db, name, tenant_id=None)` over all tenants needs the owner connection (the operator CLI).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from serve_app.db.database import Database, ensure_tenant
from serve_app.experiments.config import Assignment


class Routed(Protocol):
    """What an implicit outcome reads of `serve_app.routing.router.RoutedAnswer`."""

    tier: str
    confidence: float

    @property
    def attempts(self) -> Sequence[object]: ...
    @property
    def cost_usd(self) -> float: ...


@dataclass(frozen=True)
class ImplicitOutcome:
    """What the router knows of a request when it answers."""

    escalated: bool
    final_tier: str
    confidence: float
    cost_usd: float
    latency_ms: float

    @classmethod
    def of_routed(cls, routed: Routed, latency_ms: float) -> ImplicitOutcome:
        """From the router's answer (`RoutedAnswer`): escalated when more than one attempt was made;
        confidence and cost rounded as the API shows them."""
        return cls(
            escalated=len(routed.attempts) > 1,
            final_tier=routed.tier,
            confidence=round(routed.confidence, 4),
            cost_usd=round(routed.cost_usd, 8),
            latency_ms=latency_ms,
        )


async def record_request(
    db: Database,
    tenant_id: str,
    request_id: uuid.UUID,
    session_id: uuid.UUID | None,
    assignments: Iterable[Assignment],
    implicit: ImplicitOutcome | None,
) -> None:
    """The request's arms and its implicit outcome (a repeat of the same request id changes nothing)."""
    async with db.tenant(tenant_id) as conn:
        await ensure_tenant(conn, tenant_id)
        await conn.executemany(
            "INSERT INTO request_arms (tenant_id, request_id, experiment, arm, unit)"
            " VALUES (current_tenant(), $1, $2, $3, $4) ON CONFLICT DO NOTHING",
            [(request_id, a.experiment, a.arm, a.unit) for a in assignments],
        )
        i = implicit
        await conn.execute(
            "INSERT INTO outcomes (tenant_id, request_id, session_id, escalated, final_tier, confidence,"
            " cost_usd, latency_ms) VALUES (current_tenant(), $1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT DO NOTHING",
            request_id,
            session_id,
            i.escalated if i else None,
            i.final_tier if i else None,
            i.confidence if i else None,
            i.cost_usd if i else None,
            i.latency_ms if i else None,
        )


FEEDBACK_COLUMNS = "request_id, session_id, resolved, rating, comment, feedback_at"


async def record_feedback(
    db: Database,
    tenant_id: str,
    request_id: uuid.UUID,
    resolved: bool,
    rating: int | None = None,
    comment: str | None = None,
) -> dict[str, Any] | None:
    """Set the request's explicit outcome; None when the tenant has no such request (RLS hides others').

    Idempotent: feedback for a request that already has some replaces it (the last word counts) and
    returns the row as it now is, so a retried POST gives the same answer."""
    async with db.tenant(tenant_id) as conn:
        row = await conn.fetchrow(
            "UPDATE outcomes SET resolved = $2, rating = $3, comment = $4, feedback_at = now()"
            f" WHERE request_id = $1 RETURNING {FEEDBACK_COLUMNS}",
            request_id,
            resolved,
            rating,
            comment,
        )
    return _feedback_dict(row) if row else None


async def record_session_feedback(
    db: Database, tenant_id: str, session_id: uuid.UUID, resolved: bool, rating: int | None = None
) -> int:
    """A session's outcome (the agent, when a session ends) on its requests that have no feedback yet."""
    async with db.tenant(tenant_id) as conn:
        status = await conn.execute(
            "UPDATE outcomes SET resolved = $2, rating = $3, feedback_at = now()"
            " WHERE session_id = $1 AND feedback_at IS NULL",
            session_id,
            resolved,
            rating,
        )
    return int(status.split()[-1])


def _feedback_dict(row: asyncpg.Record) -> dict[str, Any]:
    out = dict(row)
    out["request_id"] = str(out["request_id"])
    out["session_id"] = str(out["session_id"]) if out["session_id"] else None
    out["feedback_at"] = out["feedback_at"].isoformat()
    return out


_ARMS = """
SELECT a.arm,
       count(DISTINCT a.unit) AS units,
       count(*) AS requests,
       count(o.resolved) AS with_feedback,
       count(*) FILTER (WHERE o.resolved) AS resolved,
       count(o.rating) AS ratings,
       coalesce(avg(o.rating), 0)::float8 AS rating_mean,
       coalesce(var_samp(o.rating), 0)::float8 AS rating_var,
       count(o.escalated) AS with_routing,
       count(*) FILTER (WHERE o.escalated) AS escalated,
       coalesce(sum(o.cost_usd), 0)::float8 AS cost_usd,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY o.latency_ms)::float8 AS p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY o.latency_ms)::float8 AS p95_ms,
       min(a.created_at) AS first_at,
       max(a.created_at) AS last_at
  FROM request_arms a
  LEFT JOIN outcomes o ON o.tenant_id = a.tenant_id AND o.request_id = a.request_id
 WHERE a.experiment = $1
 GROUP BY a.arm ORDER BY a.arm
"""

_DAILY = """
SELECT date_trunc('day', a.created_at AT TIME ZONE 'UTC')::date AS day, a.arm,
       count(o.resolved) AS with_feedback,
       count(*) FILTER (WHERE o.resolved) AS resolved
  FROM request_arms a
  LEFT JOIN outcomes o ON o.tenant_id = a.tenant_id AND o.request_id = a.request_id
 WHERE a.experiment = $1
 GROUP BY 1, 2 ORDER BY 1, 2
"""

# Each metric as a ratio of per-unit totals, prefix: (x, y) -> the sums the delta method needs over the
# units that have data for it (stats.UnitSums): resolution, rating, escalation, cost per resolved.
UNIT_METRICS = {
    "res": ("fed", "res"),
    "rat": ("rated", "rating_sum"),
    "esc": ("routed", "esc"),
    "cpr": ("res", "cost"),
}

_PER_UNIT = """
SELECT a.arm, a.unit,
       count(o.resolved)::float8 AS fed,
       (count(*) FILTER (WHERE o.resolved))::float8 AS res,
       count(o.rating)::float8 AS rated,
       coalesce(sum(o.rating), 0)::float8 AS rating_sum,
       count(o.escalated)::float8 AS routed,
       (count(*) FILTER (WHERE o.escalated))::float8 AS esc,
       coalesce(sum(o.cost_usd), 0)::float8 AS cost
  FROM request_arms a
  LEFT JOIN outcomes o ON o.tenant_id = a.tenant_id AND o.request_id = a.request_id
 WHERE a.experiment = $1
 GROUP BY a.arm, a.unit
"""


def _unit_sums(x: str, y: str, prefix: str) -> str:
    return (
        f"count(*) FILTER (WHERE {x} > 0 OR {y} <> 0) AS {prefix}_n, sum({x}) AS {prefix}_x,"
        f" sum({y}) AS {prefix}_y, sum({x} * {x}) AS {prefix}_xx, sum({y} * {y}) AS {prefix}_yy,"
        f" sum({x} * {y}) AS {prefix}_xy"
    )


_UNITS = f"""
WITH u AS ({_PER_UNIT})
SELECT arm, {", ".join(_unit_sums(x, y, p) for p, (x, y) in UNIT_METRICS.items())}
  FROM u GROUP BY arm
"""

# The resolution rate's unit sums at the end of every day, cumulative (the sequential test's reads when
# the unit is a tenant or session): each unit's totals up to the day, summed per arm.
_DAILY_UNITS = f"""
WITH per AS (
    SELECT date_trunc('day', a.created_at AT TIME ZONE 'UTC')::date AS day, a.arm, a.unit,
           count(o.resolved)::float8 AS fed, (count(*) FILTER (WHERE o.resolved))::float8 AS res
      FROM request_arms a
      LEFT JOIN outcomes o ON o.tenant_id = a.tenant_id AND o.request_id = a.request_id
     WHERE a.experiment = $1
     GROUP BY 1, 2, 3
), days AS (
    SELECT DISTINCT day FROM per
), cum AS (
    SELECT d.day, p.arm, p.unit, sum(p.fed) AS fed, sum(p.res) AS res
      FROM days d JOIN per p ON p.day <= d.day
     GROUP BY 1, 2, 3
)
SELECT day, arm, {_unit_sums("fed", "res", "cum_res")}
  FROM cum GROUP BY 1, 2 ORDER BY 1, 2
"""


async def report_rows(
    db: Database, name: str, tenant_id: str | None, by_unit: bool = True
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per-arm aggregates and per-day counts of experiment `name`: one tenant's under RLS, or (no tenant)
    every tenant's over the owner connection. Each arm row carries its unit sums (`UNIT_METRICS`); with
    `by_unit` (a tenant or session unit) each day row also the cumulative unit sums of resolution."""
    if tenant_id is not None:
        async with db.tenant(tenant_id) as conn:
            return await _fetch(conn, name, by_unit)
    if db.admin_dsn is None:
        raise RuntimeError("Database.start() first")
    conn = await asyncpg.connect(db.admin_dsn)
    try:
        return await _fetch(conn, name, by_unit)
    finally:
        await conn.close()


async def _fetch(
    conn: asyncpg.Connection, name: str, by_unit: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    arms = [dict(r) for r in await conn.fetch(_ARMS, name)]
    sums = {r["arm"]: dict(r) for r in await conn.fetch(_UNITS, name)}
    for row in arms:
        row.update(sums.get(row["arm"], {}))
    daily = {(r["day"], r["arm"]): dict(r) for r in await conn.fetch(_DAILY, name)}
    if by_unit:
        for r in await conn.fetch(_DAILY_UNITS, name):
            key = (r["day"], r["arm"])  # a day an arm had no request still has its cumulative read
            daily.setdefault(key, {"day": r["day"], "arm": r["arm"], "with_feedback": 0, "resolved": 0})
            daily[key].update(dict(r))
    return arms, [daily[k] for k in sorted(daily)]
