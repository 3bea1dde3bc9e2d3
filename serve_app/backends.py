"""What the HTTP API and the LiveKit agent call: the backend protocols, `Overloaded`, the in-process
frame backend.

No Ray and no FastAPI here: the ingress (`serve_app.http`) and the agent both reach the graph through
these protocols, over deployment handles (`serve_app.handles`) or in-process services (tests, tools).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from serve_app.errors import Overloaded, ReplicaLost  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    import uuid

    from serve_app.auth import Caller
    from serve_app.frames.planes import Planes
    from serve_app.frames.sampler import Decision
    from serve_app.frames.service import DedupService
    from serve_app.routing.service import ChatRequest


class FrameSink(Protocol):
    """Where frames are offered: the agent's forwarder needs only this much of a frame backend."""

    async def offer(
        self, stream_id: str, frame: Any, is_speaking: bool, ts: float | None
    ) -> dict[str, Any]: ...
    async def offer_many(
        self, stream_id: str, frames: Any, is_speaking: bool | Sequence[bool], ts: Sequence[float] | None
    ) -> list[dict[str, Any]]: ...
    async def offer_planes(
        self, stream_id: str, planes: Planes, is_speaking: bool | Sequence[bool], ts: Sequence[float] | None
    ) -> list[dict[str, Any]]: ...


class FrameBackend(FrameSink, Protocol):
    async def stats(self, stream_id: str) -> dict[str, Any]: ...
    async def close(self, stream_id: str) -> dict[str, Any]: ...


class KnowledgeBackend(Protocol):
    async def search(self, tenant_id: str, query: str, mode: str, top_k: int) -> dict[str, Any]: ...
    async def stats(self) -> dict[str, Any]: ...


class ChatBackend(Protocol):
    async def chat(self, request: ChatRequest) -> dict[str, Any]: ...
    def chat_stream(self, request: ChatRequest) -> AsyncIterator[dict[str, Any]]: ...
    async def costs(
        self, tenant_id: str, since: datetime | None, until: datetime | None
    ) -> dict[str, Any]: ...
    async def status(self) -> dict[str, Any]: ...


class HandoffBackend(Protocol):
    """The handoff queue (`serve_app.handoff.desk.HandoffDesk` in process, or over the Router's handle).
    Refusals are `serve_app.handoff.errors.HandoffError`s carrying their HTTP status."""

    async def list(self, tenant: str, caller: Caller, status: str | None, limit: int) -> dict[str, Any]: ...
    async def get(self, tenant: str, handoff_id: uuid.UUID, caller: Caller) -> dict[str, Any]: ...
    async def create(
        self,
        tenant: str,
        caller: Caller,
        messages: Sequence[dict[str, str]],
        reason: str,
        session_id: uuid.UUID | None,
        stream_id: str | None,
        room: str | None,
        note: str | None,
    ) -> dict[str, Any]: ...
    async def claim(
        self, tenant: str, handoff_id: uuid.UUID, caller: Caller, name: str | None
    ) -> dict[str, Any]: ...
    async def resolve(
        self, tenant: str, handoff_id: uuid.UUID, caller: Caller, note: str | None
    ) -> dict[str, Any]: ...
    async def give_back(
        self, tenant: str, handoff_id: uuid.UUID, caller: Caller, note: str
    ) -> dict[str, Any]: ...


class LocalFrameBackend:
    """A `FrameBackend` over an in-process DedupService (no Ray)."""

    def __init__(self, service: DedupService):
        self.service = service

    async def offer(self, stream_id: str, frame: Any, is_speaking: bool, ts: float | None) -> dict[str, Any]:
        decision: Decision = await self.service.offer(stream_id, frame, is_speaking, ts)
        return decision.to_dict()

    async def offer_many(
        self, stream_id: str, frames: Any, is_speaking: bool | Sequence[bool], ts: Sequence[float] | None
    ) -> list[dict[str, Any]]:
        return [d.to_dict() for d in await self.service.offer_many(stream_id, frames, is_speaking, ts)]

    async def offer_planes(
        self, stream_id: str, planes: Planes, is_speaking: bool | Sequence[bool], ts: Sequence[float] | None
    ) -> list[dict[str, Any]]:
        return [d.to_dict() for d in await self.service.offer_planes(stream_id, planes, is_speaking, ts)]

    async def stats(self, stream_id: str) -> dict[str, Any]:
        return self.service.stats(stream_id)

    async def close(self, stream_id: str) -> dict[str, Any]:
        return self.service.close(stream_id)
