"""The handoff desk: where the chat service hands conversations to people, and where people work them.

For the chat service, `before_turn` gives a session's turns the notes of handoffs returned to the AI,
and `after_turn` decides whether the turn hands off (`triggers`), writes the handoff (committed before
the reply goes out, so a Router replica that dies after answering loses none), and tells the customer
what happens: inside service hours that a person is coming, with their place in the queue and a wait
estimate; outside, when someone will be back, the handoff staying queued for the next shift. The reply
carries `supportgraph.handoff: {"id", "status", "position", "eta_s", ...}`.

For the tenant's human agents (the HTTP API, through the Router's handle), list, get, claim (a LiveKit
token for the conversation's room), resolve and return (back to the AI with a note); a client key
creates handoffs and follows its own. Every method takes plain data and returns plain data (what
crosses a deployment handle); refusals are `HandoffError`s carrying their HTTP status.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from serve_app.auth import Caller
from serve_app.db.database import Database
from serve_app.handoff import summary
from serve_app.handoff.errors import HandoffError, HandoffForbidden
from serve_app.handoff.hours import ServiceHours, describe
from serve_app.handoff.rooms import HUMAN_ROLE, RoomTokens, handoff_room
from serve_app.handoff.store import OPEN, STATUSES, Handoff, HandoffStore, NewHandoff, median_or
from serve_app.handoff.triggers import trigger
from serve_app.metrics import Metrics
from serve_app.routing.providers.base import Message
from serve_app.settings import HandoffPolicy, HandoffSettings

log = logging.getLogger(__name__)
AGENT_ROLES = ("admin", "agent")
Recent = tuple[list[float], list[float]]  # recent claims: (waits, gaps between claims), seconds
HANDOFF_API = ("list", "get", "create", "claim", "resolve", "give_back")  # what the HTTP API calls
_IDENTITY = re.compile(r"[^A-Za-z0-9_.@-]+")

OPENING = {
    "asked": "",
    "abstained": "I couldn't find a reliable answer to that in our help center. ",
    "repeated": "I'm sorry my earlier answer didn't solve this. ",
    "frustrated": "I'm sorry this has been frustrating. ",
    "tool": "",
}


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _minutes(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    if minutes < 90:
        return f"about {minutes} minute{'s' if minutes != 1 else ''}"
    return f"about {round(minutes / 60)} hours"


class HandoffDesk:
    def __init__(
        self,
        cfg: HandoffSettings,
        db: Database,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ):
        self.cfg, self.db, self.metrics, self.clock = cfg, db, metrics, clock
        self.store = HandoffStore(db)

    # --- the chat service's side -------------------------------------------------------------

    async def before_turn(self, request: Any) -> Any:
        """The request with the notes of its session's returned handoffs added to its instructions (a
        turn never fails for them: a failed read is logged)."""
        if request.session_id is None or not self.cfg.policy(request.tenant_id).enabled:
            return request
        try:
            await self.db.ready()
            notes = await self.store.returned_notes(request.tenant_id, request.session_id)
        except Exception:
            log.warning("handoff notes of session %s unavailable", request.session_id, exc_info=True)
            return request
        if not notes:
            return request
        block = "\n".join(f"- {n}" for n in reversed(notes))
        context = (
            "A person from the support team worked on this conversation and handed it back to you with "
            f"this note (take it into account; do not repeat it verbatim):\n{block}"
        )
        system = f"{request.system}\n\n{context}" if request.system else context
        return dataclasses.replace(request, system=system)

    async def after_turn(self, request: Any, routed: Any, prompt: Any = None, streamed: bool = False) -> Any:
        """Hand off if a trigger fires (see the module doc); while the session's handoff is claimed, the
        reply says a person has the conversation instead of the AI's answer. `streamed`: the answer
        already went out, so what the customer is told is appended to it rather than replacing it."""
        policy = self.cfg.policy(request.tenant_id)
        if not policy.enabled:
            return routed
        reason = trigger(policy, request.messages, routed)
        try:
            await self.db.ready()
            open_ = None
            if request.session_id is not None:
                open_ = await self.store.open_of_session(request.tenant_id, request.session_id)
            if reason is None and open_ is None:
                return routed
            if reason is None and open_.status == "queued":  # the AI keeps helping while they wait
                routed.handoff = await self._customer_status(open_, policy)
                return routed
            handoff = open_ or await self._hand_off(request, reason, routed, prompt, policy)
        except Exception:
            log.exception("handing off a turn of tenant %s failed", request.tenant_id)
            if reason is None:
                return routed
            self._tell(
                routed,
                "I couldn't reach the support team's queue just now. Please ask again in a moment.",
                streamed,
            )
            return routed
        routed.handoff = await self._customer_status(handoff, policy)
        self._tell(routed, self._notice(handoff, routed.handoff, policy, fresh=open_ is None), streamed)
        return routed

    @staticmethod
    def _tell(routed: Any, text: str, streamed: bool) -> None:
        routed.text = f"{routed.text}\n\n{text}" if streamed and routed.text else text

    async def _hand_off(
        self, request: Any, reason: str, routed: Any, prompt: Any, policy: HandoffPolicy
    ) -> Handoff:
        tried = summary.tried(routed, prompt, request.messages)
        new = NewHandoff(
            reason=reason,
            transcript=summary.transcript(request.messages),
            summary=summary.brief(reason, request.messages, tried),
            tried=tried,
            in_hours=ServiceHours(policy.hours).is_open(self.clock()),
            session_id=request.session_id,
            stream_id=request.stream_id,
        )
        handoff, created = await self.store.create(request.tenant_id, new)
        if created:
            self._count(request.tenant_id, reason)
        return handoff

    def _notice(
        self, handoff: Handoff, status: dict[str, Any], policy: HandoffPolicy, fresh: bool = True
    ) -> str:
        """What the customer is told: nothing but what happens next (`fresh`: handed off by this turn;
        while a person has the conversation, the AI does not answer over it)."""
        opening = OPENING.get(handoff.reason, "") if fresh else ""
        if handoff.status == "claimed":
            join = " Join the call with your link." if status.get("join_url") else ""
            return f"{opening}A person from our support team has taken over your conversation.{join}"
        position, eta = status.get("position"), status.get("eta_s")
        if status.get("back_at") is None:
            place = f"You are number {position} in the queue; " if position else ""
            wait = f"the expected wait is {_minutes(eta)}." if eta else "they will be with you shortly."
            return (
                f"{opening}I'm connecting you with a person from our support team. {place}{wait} "
                "You can keep writing here meanwhile."
            )
        back = describe(
            datetime.fromisoformat(status["back_at"]), self.clock(), ServiceHours(policy.hours).zone
        )
        return (
            f"{opening}Our support team is away right now; someone will be back {back}. I've passed your "
            f"conversation on (you are number {position} in the queue), and a person will pick it up then."
        )

    # --- status and estimates ----------------------------------------------------------------

    async def _customer_status(
        self, handoff: Handoff, policy: HandoffPolicy, recent: Recent | None = None
    ) -> dict[str, Any]:
        """{"id", "status", "position", "eta_s", "reason", "back_at", "room", "join_url"}; `recent`:
        the tenant's recent claims (read here when not given)."""
        out: dict[str, Any] = {
            "id": str(handoff.id),
            "status": handoff.status,
            "position": handoff.position,
            "eta_s": None,
            "reason": handoff.reason,
            "back_at": None,
        }
        if handoff.status == "queued":
            recent = recent or await self.store.recent_waits(handoff.tenant_id, self.cfg.recent_claims)
            out["eta_s"], back = self._eta(handoff, policy, recent)
            out["back_at"] = back.isoformat() if back else None
        elif handoff.status == "claimed":
            out["eta_s"] = 0.0
            out["room"] = handoff.room
            out["join_url"] = self._customer_link(handoff)
        return out

    def _eta(self, handoff: Handoff, policy: HandoffPolicy, recent: Recent) -> tuple[float, datetime | None]:
        """(seconds, when people are back if they are away now): the median wait of recent claims made
        in hours, plus the median gap between claims for each handoff ahead; plus the time until the
        next shift when closed."""
        waits, gaps = recent
        first = median_or(waits, policy.default_wait_s)
        ahead = (handoff.position or 1) - 1
        eta = first + ahead * median_or(gaps, policy.default_wait_s)
        now = self.clock()
        hours = ServiceHours(policy.hours)
        if hours.is_open(now):
            return round(eta, 1), None
        back = hours.next_open(now)
        if back is None:
            return round(eta, 1), None
        return round((back - now).total_seconds() + eta, 1), back

    def _customer_link(self, handoff: Handoff) -> str | None:
        """The customer's own join link to the handoff's room (None without LiveKit credentials)."""
        if not handoff.room:
            return None
        try:
            tokens = RoomTokens.from_env(self.cfg)
        except HandoffError:
            return None
        return tokens.link(tokens.token(handoff.room, f"customer-{handoff.short_id}"))

    def _count(self, tenant: str, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.inc("supportgraph_handoffs", tenant=tenant, reason=reason)

    async def _queue_gauge(self, tenant: str) -> None:
        if self.metrics is not None:
            self.metrics.set(
                "supportgraph_handoff_queue", await self.store.queue_length(tenant), tenant=tenant
            )

    # --- the HTTP API's side -----------------------------------------------------------------

    async def list(
        self, tenant: str, caller: Caller, status: str | None = None, limit: int = 100
    ) -> dict[str, Any]:
        """Agents see the tenant's handoffs; a client key only those it created."""
        if status is not None and status not in STATUSES:
            raise HandoffError(f"unknown status {status!r}; one of {', '.join(STATUSES)}")
        await self.db.ready()
        mine = None if caller.role in AGENT_ROLES else (caller.key or "")
        found = await self.store.list(tenant, status, mine, limit, self.cfg.expire_after_s)
        policy = self.cfg.policy(tenant)
        recent = await self.store.recent_waits(tenant, self.cfg.recent_claims)
        out = []
        for handoff in found:
            view = handoff.to_dict() if caller.role in AGENT_ROLES else {}
            out.append({**view, **await self._customer_status(handoff, policy, recent)})
        await self._queue_gauge(tenant)
        return {"handoffs": out}

    async def get(self, tenant: str, handoff_id: uuid.UUID, caller: Caller) -> dict[str, Any]:
        """Agents: the whole handoff. A client: its status (the customer's view, join link included)."""
        await self.db.ready()
        handoff = await self.store.get(tenant, handoff_id)
        status = await self._customer_status(handoff, self.cfg.policy(tenant))
        if caller.role in AGENT_ROLES:
            return {**handoff.to_dict(), **status}
        return status

    async def create(
        self,
        tenant: str,
        caller: Caller,
        messages: Sequence[dict[str, str]],
        reason: str = "asked",
        session_id: uuid.UUID | None = None,
        stream_id: str | None = None,
        room: str | None = None,
        note: str | None = None,
    ) -> dict[str, Any]:
        """A client hands its conversation off itself (or the agent's `transfer_to_human` tool)."""
        await self.db.ready()
        policy = self.cfg.policy(tenant)
        turns = [Message(m["role"], m["content"]) for m in messages]
        tried = summary.tried(messages=turns)
        new = NewHandoff(
            reason=reason,
            transcript=summary.transcript(turns),
            summary=summary.brief(reason, turns, tried, note),
            tried=tried,
            in_hours=ServiceHours(policy.hours).is_open(self.clock()),
            session_id=session_id,
            room=room,
            stream_id=stream_id,
            created_by=caller.key,
        )
        handoff, created = await self.store.create(tenant, new)
        if created:
            self._count(tenant, reason)
        await self._queue_gauge(tenant)
        status = await self._customer_status(handoff, policy)
        return {**status, "created": created, "message": self._notice(handoff, status, policy)}

    async def claim(
        self, tenant: str, handoff_id: uuid.UUID, caller: Caller, name: str | None = None
    ) -> dict[str, Any]:
        """{"id", "status": "claimed", "room", "token", "join_url", "handoff"}: the person's token for
        exactly the conversation's room (credentials checked first: no claim without a token)."""
        self._agent(caller)
        tokens = RoomTokens.from_env(self.cfg)
        await self.db.ready()
        current = await self.store.get(tenant, handoff_id)
        room = handoff_room(tenant, current.short_id, current.stream_id, current.room)
        who = name or caller.key or "agent"
        handoff = await self.store.claim(tenant, handoff_id, who, room)
        assert handoff.room is not None
        identity = "human-" + _IDENTITY.sub("-", who)[:100]
        token = tokens.token(
            handoff.room, identity, {"supportgraph.role": HUMAN_ROLE, "supportgraph.handoff": str(handoff.id)}
        )
        if self.metrics is not None and handoff.claimed_at and handoff.created_at:
            wait = (handoff.claimed_at - handoff.created_at).total_seconds()
            self.metrics.observe("supportgraph_handoff_wait_s", wait, tenant=tenant)
        await self._queue_gauge(tenant)
        return {
            "id": str(handoff.id),
            "status": handoff.status,
            "room": handoff.room,
            "identity": identity,
            "token": token,
            "join_url": tokens.link(token),
            "handoff": handoff.to_dict(),
        }

    async def resolve(
        self, tenant: str, handoff_id: uuid.UUID, caller: Caller, note: str | None = None
    ) -> dict[str, Any]:
        return await self._close(tenant, handoff_id, caller, "resolved", note)

    async def give_back(
        self, tenant: str, handoff_id: uuid.UUID, caller: Caller, note: str
    ) -> dict[str, Any]:
        """Back to the AI: the session's next turns get `note` as context."""
        return await self._close(tenant, handoff_id, caller, "returned", note)

    async def _close(
        self, tenant: str, handoff_id: uuid.UUID, caller: Caller, status: str, note: str | None
    ) -> dict[str, Any]:
        self._agent(caller)
        await self.db.ready()
        cost = self.cfg.policy(tenant).human_cost_per_min
        handoff = await self.store.close(tenant, handoff_id, status, note, cost)
        if self.metrics is not None and handoff.claimed_at and handoff.closed_at:
            minutes = (handoff.closed_at - handoff.claimed_at).total_seconds() / 60
            self.metrics.inc("supportgraph_handoff_human_minutes", minutes, tenant=tenant, outcome=status)
        return handoff.to_dict()

    @staticmethod
    def _agent(caller: Caller) -> None:
        if caller.role not in AGENT_ROLES:
            raise HandoffForbidden(f"a {caller.role} key cannot act on handoffs; use an agent key")


__all__ = ["HANDOFF_API", "OPEN", "HandoffDesk"]
