"""The cost ledger: every attempt's tokens, images, latency and cost go to `cost_events`, per tenant.

`record()` only appends to an in-memory buffer and wakes the flusher (the hot path never waits on
Postgres there); the flusher writes what is buffered at once, each tenant's events in one tenant
transaction (RLS applies), and events recorded while a write is under way go together in the next one
(group commit). `durable()` waits until every event recorded before the call (of one request, when it
names one) is written: a replica answers only then, so a replica that dies (its node lost, no clean
shutdown) loses no event of a request it answered. Events whose write fails stay buffered and are
retried every `interval_s` (the flusher keeps going; `durable()` gives up after `durable_wait_s` and the
answer goes out regardless); a flush under way at shutdown finishes, and `close()` flushes everything,
so a clean shutdown loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from serve_app.costs.events import CostEvent
from serve_app.db.database import Database, ensure_tenant

log = logging.getLogger(__name__)


INSERT = """
INSERT INTO cost_events (tenant_id, session_id, service, provider, model, attempt, input_tokens,
                         output_tokens, images, cost_usd, latency_ms, request_id, tier, outcome,
                         confidence, baseline_usd, characters)
VALUES (current_tenant(), $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
"""


@dataclass
class CostLedger:
    db: Database
    batch: int = 200  # without a flusher, record() starts a flush once this many events are buffered
    interval_s: float = 1.0  # the flusher's retry delay after a failed write (and its longest sleep)
    durable_wait_s: float = 2.0  # how long durable() waits by default
    _pending: list[tuple[int, CostEvent]] = field(default_factory=list)  # (sequence number, event)
    _writing: list[tuple[int, CostEvent]] = field(default_factory=list)  # the write under way
    _recorded: int = 0  # events recorded so far: the last sequence number
    _task: asyncio.Task | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _flusher: asyncio.Task | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _running: int = 0  # run() loops under way (start() runs one)
    _flushed: asyncio.Event = field(default_factory=asyncio.Event)  # set (and replaced) after each write
    written: int = 0
    late: int = 0  # durable() calls that gave up waiting

    def start(self) -> None:
        """Run the flusher (`run()`) on the running event loop, once; replicas call this when they
        first serve, since their constructor runs before their loop does."""
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        """Stop the flusher (it finishes a flush under way and flushes the rest), then flush whatever
        came in meanwhile: a replica's shutdown."""
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        await self.close()

    def record(self, event: CostEvent) -> None:
        self._recorded += 1
        self._pending.append((self._recorded, event))
        self._wake.set()
        if (
            not self._running
            and len(self._pending) >= self.batch
            and (self._task is None or self._task.done())
        ):
            self._task = asyncio.get_running_loop().create_task(self.flush())

    def _written_through(self, seq: int, request_id: uuid.UUID | None = None) -> bool:
        """Every event up to sequence number `seq` (of `request_id` only, when given) is in Postgres."""
        return not any(
            n <= seq and (request_id is None or e.request_id == request_id)
            for n, e in itertools.chain(self._pending, self._writing)
        )

    async def durable(self, request_id: uuid.UUID | None = None, timeout_s: float | None = None) -> bool:
        """Wait until every event recorded before this call (of `request_id` only, when given: another
        request's, or tenant's, failing write does not hold this one back) is written, at most
        `timeout_s` (by default `durable_wait_s`); True when it is. Without a running flusher it
        flushes itself."""
        target, wait_s = self._recorded, self.durable_wait_s if timeout_s is None else timeout_s
        done = functools.partial(self._written_through, target, request_id)
        if done():
            return True
        if not self._running:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(wait_s):
                    await asyncio.shield(self.flush())
        else:
            deadline = time.monotonic() + wait_s
            self._wake.set()
            while not done() and (left := deadline - time.monotonic()) > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await self._flushed.wait()
        if done():
            return True
        self.late += 1
        log.warning("cost events not written after %.1f s; %d buffered", wait_s, self.pending)
        return False

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> int:
        """Write what is buffered; returns how many events were written now.

        A tenant whose write fails puts its events back at the head of the buffer and the other tenants
        are still written (one tenant's bad write does not hold the rest back); the first failure is
        raised at the end. Cancelled, it puts back the events of that tenant and of those after it.
        Put back, events keep their order."""
        async with self._lock:
            events, self._pending = self._pending, []
            by_tenant: dict[str, list[tuple[int, CostEvent]]] = defaultdict(list)
            for item in events:
                by_tenant[item[1].tenant_id].append(item)
            groups = list(by_tenant.items())
            done = 0
            self._writing = events  # until the flush ends, written or put back
            failed: list[tuple[int, CostEvent]] = []
            error: Exception | None = None
            try:
                for n, (tenant, items) in enumerate(groups):
                    try:
                        async with self.db.tenant(tenant) as conn:
                            await ensure_tenant(conn, tenant)
                            await conn.executemany(INSERT, [_row(e) for _, e in items])
                    except Exception as exc:
                        failed += items
                        error = error or exc
                        continue
                    except BaseException:  # cancelled: this tenant's events and the rest stay buffered
                        failed += [item for _, rest in groups[n:] for item in rest]
                        raise
                    done += len(items)
            finally:
                self._pending[:0] = failed
                self._writing = []
                self.written += done
                self._flushed.set()  # wake durable() waiters, then arm a fresh event for the next write
                self._flushed = asyncio.Event()
            if error is not None:
                raise error
            return done

    async def run(self) -> None:
        """Flush whenever events are recorded (or every `interval_s`) until cancelled, then flush once
        more. A flush under way when the task is cancelled is shielded: it finishes (its transaction is
        not cut off) before the last one. After a failed write it waits `interval_s` before the next."""
        self._running += 1
        try:
            while True:
                with contextlib.suppress(TimeoutError):  # asyncio.timeout: a cancel is never lost
                    async with asyncio.timeout(self.interval_s):
                        await self._wake.wait()
                self._wake.clear()
                if self._pending:
                    try:
                        await asyncio.shield(self.flush())
                    except Exception as exc:  # the events stay buffered; retried after interval_s
                        log.warning("cost ledger flush failed, %d events kept: %s", self.pending, exc)
                        await asyncio.sleep(self.interval_s)
                        self._wake.set()  # the retry, whether or not anything new came in
        finally:
            self._running -= 1
            await self.flush()  # waits on the lock for a shielded flush still running

    async def close(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush()


def _row(e: CostEvent) -> tuple[object, ...]:
    return (
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
        e.request_id,
        e.tier,
        e.outcome,
        e.confidence,
        e.baseline_usd,
        e.characters,
    )


@dataclass(frozen=True)
class CostReport:
    """Totals by service and provider, the LLM attempts by tier, and the LLM spend against sending every
    routed request to the top tier alone (`baseline_usd`, priced on each request's final answer)."""

    tenant_id: str
    since: datetime | None
    until: datetime | None
    rows: list[dict[str, object]]  # per service and provider
    tiers: list[dict[str, object]]  # LLM attempts per tier and model
    total_usd: float
    attempts: int
    requests: int  # routed LLM requests
    llm_usd: float
    baseline_usd: float

    @property
    def saved_pct(self) -> float | None:
        return 100 * (1 - self.llm_usd / self.baseline_usd) if self.baseline_usd > 0 else None

    def to_dict(self) -> dict[str, object]:
        saved = self.saved_pct
        return {
            "tenant_id": self.tenant_id,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "by_service_provider": self.rows,
            "llm_by_tier": self.tiers,
            "total_usd": self.total_usd,
            "attempts": self.attempts,
            "llm": {
                "requests": self.requests,
                "cost_usd": self.llm_usd,
                "all_top_tier_usd": self.baseline_usd,
                "saved_pct": round(saved, 2) if saved is not None else None,
            },
        }


_WINDOW = "($1::timestamptz IS NULL OR created_at >= $1) AND ($2::timestamptz IS NULL OR created_at < $2)"


async def cost_report(
    db: Database, tenant_id: str, since: datetime | None = None, until: datetime | None = None
) -> CostReport:
    """One tenant's costs, optionally within [since, until)."""
    async with db.tenant(tenant_id) as conn:
        rows = await conn.fetch(
            "SELECT service, provider, count(*) AS attempts, sum(input_tokens)::bigint AS input_tokens,"
            " sum(output_tokens)::bigint AS output_tokens, sum(images)::bigint AS images,"
            " sum(characters)::bigint AS characters,"
            " sum(cost_usd)::float8 AS cost_usd"
            f"  FROM cost_events WHERE {_WINDOW}"
            " GROUP BY service, provider ORDER BY cost_usd DESC, service, provider",
            since,
            until,
        )
        tiers = await conn.fetch(
            "SELECT coalesce(tier, '') AS tier, model, count(*) AS attempts,"
            " count(*) FILTER (WHERE outcome = 'accepted') AS accepted,"
            " count(*) FILTER (WHERE outcome IN ('failed', 'skipped')) AS failed,"
            " sum(cost_usd)::float8 AS cost_usd"
            f"  FROM cost_events WHERE service = 'llm' AND {_WINDOW}"
            " GROUP BY 1, 2 ORDER BY min(attempt), cost_usd, 1",
            since,
            until,
        )
        llm = await conn.fetchrow(
            "SELECT count(DISTINCT request_id) AS requests, coalesce(sum(cost_usd), 0)::float8 AS cost,"
            " coalesce(sum(baseline_usd), 0)::float8 AS baseline"
            f"  FROM cost_events WHERE service = 'llm' AND {_WINDOW}",
            since,
            until,
        )
    out = [dict(r) for r in rows]
    return CostReport(
        tenant_id,
        since,
        until,
        out,
        [dict(r) for r in tiers],
        round(sum(r["cost_usd"] for r in out), 8),
        sum(r["attempts"] for r in out),
        llm["requests"],
        round(llm["cost"], 8),
        round(llm["baseline"], 8),
    )
