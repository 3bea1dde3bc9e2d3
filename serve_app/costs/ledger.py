"""The cost ledger: every attempt's tokens, images, latency and cost go to `cost_events`, per tenant.

`record()` only appends to an in-memory buffer (the hot path never waits on Postgres); a background task
flushes every `interval_s` or `batch` events, each tenant's events in one tenant transaction (RLS
applies). Events whose write fails stay buffered for the next flush; `close()` flushes everything, so
a clean shutdown loses nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from serve_app.db.database import Database, ensure_tenant
from serve_app.tenancy import validate_tenant_id


@dataclass(frozen=True)
class CostEvent:
    tenant_id: str
    service: str  # frames, embeddings, rerank, llm ...
    provider: str
    model: str = ""
    attempt: int = 1
    input_tokens: int = 0
    output_tokens: int = 0
    images: int = 0
    cost_usd: float = 0.0
    latency_ms: float | None = None
    session_id: uuid.UUID | None = None

    def __post_init__(self) -> None:
        validate_tenant_id(self.tenant_id)
        if (
            min(self.input_tokens, self.output_tokens, self.images) < 0
            or self.cost_usd < 0
            or self.attempt < 1
        ):
            raise ValueError(f"cost event has negative counts, cost or attempt: {self}")


INSERT = """
INSERT INTO cost_events (tenant_id, session_id, service, provider, model, attempt, input_tokens,
                         output_tokens, images, cost_usd, latency_ms)
VALUES (current_tenant(), $1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
"""


@dataclass
class CostLedger:
    db: Database
    batch: int = 200
    interval_s: float = 1.0
    _pending: list[CostEvent] = field(default_factory=list)
    _task: asyncio.Task | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    written: int = 0

    def record(self, event: CostEvent) -> None:
        self._pending.append(event)
        if len(self._pending) >= self.batch and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self.flush())

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> int:
        """Write what is buffered; returns how many events were written now."""
        async with self._lock:
            events, self._pending = self._pending, []
            by_tenant: dict[str, list[CostEvent]] = defaultdict(list)
            for event in events:
                by_tenant[event.tenant_id].append(event)
            done = 0
            for tenant, items in by_tenant.items():
                try:
                    async with self.db.tenant(tenant) as conn:
                        await ensure_tenant(conn, tenant)
                        await conn.executemany(
                            INSERT,
                            [
                                (
                                    e.session_id,
                                    e.service,
                                    e.provider,
                                    e.model,
                                    e.attempt,
                                    e.input_tokens,
                                    e.output_tokens,
                                    e.images,
                                    e.cost_usd,
                                    e.latency_ms,
                                )
                                for e in items
                            ],
                        )
                    done += len(items)
                except Exception:
                    self._pending[:0] = items  # keep them, in order, for the next flush
                    raise
            self.written += done
            return done

    async def run(self) -> None:
        """Flush every `interval_s` until cancelled (then flush once more)."""
        try:
            while True:
                await asyncio.sleep(self.interval_s)
                if self._pending:
                    await self.flush()
        finally:
            if self._pending:
                await self.flush()

    async def close(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush()


@dataclass(frozen=True)
class CostReport:
    tenant_id: str
    since: datetime | None
    until: datetime | None
    rows: list[dict[str, object]]  # per service and provider
    total_usd: float
    attempts: int


async def cost_report(
    db: Database, tenant_id: str, since: datetime | None = None, until: datetime | None = None
) -> CostReport:
    """Totals by service and provider for one tenant, optionally within [since, until)."""
    async with db.tenant(tenant_id) as conn:
        rows = await conn.fetch(
            "SELECT service, provider, count(*) AS attempts, sum(input_tokens) AS input_tokens,"
            " sum(output_tokens) AS output_tokens, sum(images) AS images, sum(cost_usd)::float8 AS cost_usd"
            "  FROM cost_events WHERE ($1::timestamptz IS NULL OR created_at >= $1)"
            "   AND ($2::timestamptz IS NULL OR created_at < $2)"
            " GROUP BY service, provider ORDER BY cost_usd DESC, service, provider",
            since,
            until,
        )
    out = [dict(r) for r in rows]
    return CostReport(
        tenant_id,
        since,
        until,
        out,
        round(sum(r["cost_usd"] for r in out), 8),
        sum(r["attempts"] for r in out),
    )
