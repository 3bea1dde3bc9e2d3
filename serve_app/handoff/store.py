"""The `handoffs` table: SQL kept as SQL, every statement inside the tenant's transaction (RLS applies).

State changes are single conditional UPDATEs (`... WHERE status = 'queued'`), so two people claiming at
once, or two Router replicas, cannot both win: the loser sees no row and gets a conflict. The queue's
order is `created_at`; a handoff's position is one more than the queued handoffs created before it.
A resolved handoff's human time is written as a cost event in the same transaction as the resolve.
"""

from __future__ import annotations

import itertools
import json
import statistics
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from serve_app.db.database import Database, ensure_tenant
from serve_app.handoff.errors import HandoffConflict, HandoffNotFound

STATUSES = ("queued", "claimed", "resolved", "returned", "expired")
REASONS = ("asked", "abstained", "repeated", "frustrated", "tool")
OPEN = ("queued", "claimed")

_COLUMNS = (
    "id, session_id, room, stream_id, reason, status, transcript, summary, tried, in_hours, created_by,"
    " claimed_by, note, created_at, claimed_at, closed_at"
)
_POSITION = (
    "CASE WHEN h.status = 'queued' THEN (SELECT count(*) + 1 FROM handoffs q WHERE q.status = 'queued'"
    " AND (q.created_at, q.id) < (h.created_at, h.id)) END AS position"
)
INSERT = f"""
INSERT INTO handoffs (id, tenant_id, session_id, room, stream_id, reason, transcript, summary, tried,
                      in_hours, created_by)
VALUES ($1, current_tenant(), $2, $3, $4, $5, $6::jsonb, $7, $8::jsonb, $9, $10)
ON CONFLICT (tenant_id, session_id) WHERE status IN ('queued', 'claimed') AND session_id IS NOT NULL
DO NOTHING
RETURNING {_COLUMNS}
"""
SELECT_ONE = f"SELECT {_COLUMNS}, {_POSITION} FROM handoffs h WHERE h.id = $1"
SELECT_OPEN_OF_SESSION = (
    f"SELECT {_COLUMNS}, {_POSITION} FROM handoffs h"
    " WHERE h.session_id = $1 AND h.status IN ('queued', 'claimed')"
)
SELECT_LIST = f"""
WITH queue AS (
    SELECT id, row_number() OVER (ORDER BY created_at, id) AS position FROM handoffs WHERE status = 'queued'
)
SELECT {_COLUMNS}, queue.position FROM handoffs LEFT JOIN queue USING (id)
 WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR created_by = $2)
 ORDER BY created_at, id LIMIT $3
"""
CLAIM = f"""
UPDATE handoffs SET status = 'claimed', claimed_by = $2, claimed_at = now(),
                    room = coalesce(room, $3)
 WHERE id = $1 AND status = 'queued'
RETURNING {_COLUMNS}
"""
CLOSE = f"""
UPDATE handoffs SET status = $2, note = coalesce($3, note), closed_at = now()
 WHERE id = $1 AND status = 'claimed'
RETURNING {_COLUMNS}
"""
EXPIRE = """
UPDATE handoffs SET status = 'expired', closed_at = now()
 WHERE status = 'queued' AND created_at < now() - make_interval(secs => $1)
"""
RETURNED_NOTES = """
SELECT note FROM handoffs
 WHERE session_id = $1 AND status = 'returned' AND note IS NOT NULL AND note <> ''
 ORDER BY closed_at DESC LIMIT $2
"""
RECENT_CLAIMS = """
SELECT created_at, claimed_at FROM handoffs
 WHERE claimed_at IS NOT NULL AND in_hours ORDER BY claimed_at DESC LIMIT $1
"""
QUEUE_LENGTH = "SELECT count(*) FROM handoffs WHERE status = 'queued'"
HUMAN_COST = """
INSERT INTO cost_events (tenant_id, session_id, service, provider, model, cost_usd, latency_ms,
                         request_id, outcome)
VALUES (current_tenant(), $1, 'human', 'people', $2, $3, $4, $5, $6)
"""


@dataclass
class Handoff:
    id: uuid.UUID
    tenant_id: str
    reason: str
    status: str
    session_id: uuid.UUID | None = None
    room: str | None = None
    stream_id: str | None = None
    transcript: list[dict[str, str]] = field(default_factory=list)
    summary: str = ""
    tried: dict[str, Any] = field(default_factory=dict)
    in_hours: bool = True
    created_by: str | None = None
    claimed_by: str | None = None
    note: str | None = None
    created_at: datetime | None = None
    claimed_at: datetime | None = None
    closed_at: datetime | None = None
    position: int | None = None  # in the queue, 1 first (queued only)

    @classmethod
    def of_row(cls, tenant_id: str, row: asyncpg.Record) -> Handoff:
        data = dict(row)
        data["transcript"] = json.loads(data["transcript"])
        data["tried"] = json.loads(data["tried"])
        return cls(tenant_id=tenant_id, **data)

    @property
    def short_id(self) -> str:
        return self.id.hex[:12]

    def to_dict(self) -> dict[str, Any]:
        def iso(t: datetime | None) -> str | None:
            return t.isoformat() if t else None

        return {
            "id": str(self.id),
            "tenant_id": self.tenant_id,
            "session_id": str(self.session_id) if self.session_id else None,
            "room": self.room,
            "stream_id": self.stream_id,
            "reason": self.reason,
            "status": self.status,
            "position": self.position,
            "summary": self.summary,
            "transcript": self.transcript,
            "tried": self.tried,
            "in_hours": self.in_hours,
            "claimed_by": self.claimed_by,
            "note": self.note,
            "created_at": iso(self.created_at),
            "claimed_at": iso(self.claimed_at),
            "closed_at": iso(self.closed_at),
        }


@dataclass(frozen=True)
class NewHandoff:
    """What a trigger or a client hands over."""

    reason: str
    transcript: list[dict[str, str]]
    summary: str
    tried: dict[str, Any]
    in_hours: bool
    session_id: uuid.UUID | None = None
    room: str | None = None
    stream_id: str | None = None
    created_by: str | None = None

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown handoff reason {self.reason!r}; one of {', '.join(REASONS)}")


class HandoffStore:
    def __init__(self, db: Database):
        self.db = db

    async def create(self, tenant_id: str, new: NewHandoff) -> tuple[Handoff, bool]:
        """(the handoff, True) once written; (the session's open one, False) if it already has one."""
        async with self.db.tenant(tenant_id) as conn:
            await ensure_tenant(conn, tenant_id)
            row = await conn.fetchrow(
                INSERT,
                uuid.uuid4(),
                new.session_id,
                new.room,
                new.stream_id,
                new.reason,
                json.dumps(new.transcript),
                new.summary,
                json.dumps(new.tried, default=str),
                new.in_hours,
                new.created_by,
            )
            created = row is not None
            if not created:
                row = await conn.fetchrow(SELECT_OPEN_OF_SESSION, new.session_id)
                if row is None:  # closed between the two statements: the caller may try again
                    raise HandoffConflict("the session's handoff changed meanwhile; try again")
            else:
                row = await conn.fetchrow(SELECT_ONE, row["id"])
        return Handoff.of_row(tenant_id, row), created

    async def get(self, tenant_id: str, handoff_id: uuid.UUID) -> Handoff:
        async with self.db.tenant(tenant_id) as conn:
            row = await conn.fetchrow(SELECT_ONE, handoff_id)
        if row is None:
            raise HandoffNotFound(f"no handoff {handoff_id} for tenant {tenant_id!r}")
        return Handoff.of_row(tenant_id, row)

    async def open_of_session(self, tenant_id: str, session_id: uuid.UUID) -> Handoff | None:
        async with self.db.tenant(tenant_id) as conn:
            row = await conn.fetchrow(SELECT_OPEN_OF_SESSION, session_id)
        return Handoff.of_row(tenant_id, row) if row else None

    async def list(
        self,
        tenant_id: str,
        status: str | None = None,
        created_by: str | None = None,
        limit: int = 100,
        expire_after_s: float | None = None,
    ) -> list[Handoff]:
        """Oldest first; handoffs queued longer than `expire_after_s` are expired first."""
        async with self.db.tenant(tenant_id) as conn:
            if expire_after_s is not None:
                await conn.execute(EXPIRE, expire_after_s)
            rows = await conn.fetch(SELECT_LIST, status, created_by, limit)
        return [Handoff.of_row(tenant_id, r) for r in rows]

    async def claim(self, tenant_id: str, handoff_id: uuid.UUID, by: str, room: str) -> Handoff:
        """Queued -> claimed by `by`; `room` is used where the handoff has none yet."""
        async with self.db.tenant(tenant_id) as conn:
            row = await conn.fetchrow(CLAIM, handoff_id, by, room)
            if row is None:
                await self._refuse(conn, tenant_id, handoff_id, "claimed", ("queued",))
        return Handoff.of_row(tenant_id, row)

    async def close(
        self,
        tenant_id: str,
        handoff_id: uuid.UUID,
        status: str,
        note: str | None,
        cost_per_min: float,
    ) -> Handoff:
        """Claimed -> resolved or returned; the person's time (claim to now) becomes a 'human' cost event
        in the same transaction."""
        async with self.db.tenant(tenant_id) as conn:
            row = await conn.fetchrow(CLOSE, handoff_id, status, note)
            if row is None:
                await self._refuse(conn, tenant_id, handoff_id, status, ("claimed",))
            handoff = Handoff.of_row(tenant_id, row)
            assert handoff.claimed_at is not None and handoff.closed_at is not None
            seconds = max(0.0, (handoff.closed_at - handoff.claimed_at).total_seconds())
            await conn.execute(
                HUMAN_COST,
                handoff.session_id,
                handoff.claimed_by or "",
                round(seconds / 60 * cost_per_min, 8),
                seconds * 1e3,
                handoff.id,
                status,
            )
        return handoff

    async def _refuse(
        self, conn: asyncpg.Connection, tenant_id: str, handoff_id: uuid.UUID, to: str, needs: tuple[str, ...]
    ) -> None:
        status = await conn.fetchval("SELECT status FROM handoffs WHERE id = $1", handoff_id)
        if status is None:
            raise HandoffNotFound(f"no handoff {handoff_id} for tenant {tenant_id!r}")
        raise HandoffConflict(
            f"handoff {handoff_id} is {status}; it can be {to} only when {' or '.join(needs)}"
        )

    async def returned_notes(self, tenant_id: str, session_id: uuid.UUID, limit: int = 3) -> list[str]:
        """The notes of the session's handoffs returned to the AI, newest first."""
        async with self.db.tenant(tenant_id) as conn:
            return [r["note"] for r in await conn.fetch(RETURNED_NOTES, session_id, limit)]

    async def queue_length(self, tenant_id: str) -> int:
        async with self.db.tenant(tenant_id) as conn:
            return int(await conn.fetchval(QUEUE_LENGTH))

    async def recent_waits(self, tenant_id: str, limit: int) -> tuple[list[float], list[float]]:
        """(waits from queued to claimed, gaps between consecutive claims), seconds, of recent claims
        made inside service hours."""
        async with self.db.tenant(tenant_id) as conn:
            rows = await conn.fetch(RECENT_CLAIMS, limit)
        waits = [(r["claimed_at"] - r["created_at"]).total_seconds() for r in rows]
        claims = [r["claimed_at"] for r in rows]
        gaps = [(a - b).total_seconds() for a, b in itertools.pairwise(claims)]
        return waits, gaps


def median_or(values: list[float], default: float) -> float:
    return statistics.median(values) if values else default
