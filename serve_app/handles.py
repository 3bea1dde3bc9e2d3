"""Backends over Ray Serve deployment handles, shared by the HTTP ingress and the LiveKit agent.

The one core module that touches Ray: it only wraps handles it is given (the agent gets them with
`serve.get_deployment_handle`), turning Serve's backpressure into `Overloaded` and a replica lost under
a request into `ReplicaLost` (both 503 with Retry-After). Calls use keywords so the FrameDedup request
router sees the stream id.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from serve_app.auth import Caller
from serve_app.errors import Overloaded, ReplicaLost
from serve_app.frames.planes import Planes
from serve_app.routing.service import ChatRequest


@contextmanager
def serve_failures(what: str) -> Iterator[None]:
    """The one mapping of Ray's failures to the project's errors: Serve's backpressure (a full
    `max_queued_requests`) as `Overloaded`, and a replica that died under the request (`RayActorError`:
    its process or node lost) as `ReplicaLost`: both the HTTP layer's 503 with Retry-After, not a 500;
    a model deployment's caller (`deployments.router.HandleProvider`) retries or escalates on them."""
    try:
        yield
    except BackPressureError as exc:
        raise Overloaded(f"{what} queue is full, retry later") from exc
    except RayActorError as exc:
        # a RayTaskError that is also a RayActorError: the replica lived and failed because one it
        # called (Embeddings, Reranker, a model) was lost
        lost = (
            f"a replica the {what} called for this request"
            if isinstance(exc, RayTaskError)
            else f"the {what} replica serving this request"
        )
        raise ReplicaLost(f"{lost} was lost; retry") from exc


_overload = serve_failures  # the short name the wrappers below use


class HandleFrameBackend:
    """FrameBackend over the FrameDedup handle."""

    def __init__(self, frame_dedup: DeploymentHandle):
        self.frame_dedup = frame_dedup

    async def offer(self, stream_id: str, frame: Any, is_speaking: bool, ts: float | None) -> dict[str, Any]:
        with _overload("frame dedup"):
            return await self.frame_dedup.offer.remote(
                stream_id=stream_id, frame=frame, is_speaking=is_speaking, ts=ts
            )

    async def offer_many(
        self, stream_id: str, frames: Any, is_speaking: bool | Sequence[bool], ts: Sequence[float] | None
    ) -> list[dict[str, Any]]:
        """Several frames of one stream in one request (a [B, H, W, 3] array travels as one buffer)."""
        with _overload("frame dedup"):
            return await self.frame_dedup.offer_many.remote(
                stream_id=stream_id, frames=frames, is_speaking=is_speaking, ts=ts
            )

    async def offer_planes(
        self, stream_id: str, planes: Planes, is_speaking: bool | Sequence[bool], ts: Sequence[float] | None
    ) -> list[dict[str, Any]]:
        """Several frames of one stream as planes (`frames/planes.py`): half the bytes of RGB, the same
        decisions; the luma and color arrays travel as two buffers."""
        with _overload("frame dedup"):
            return await self.frame_dedup.offer_planes.remote(
                stream_id=stream_id, luma=planes.luma, color=planes.color, is_speaking=is_speaking, ts=ts
            )

    async def stats(self, stream_id: str) -> dict[str, Any]:
        with _overload("frame dedup"):
            return await self.frame_dedup.stats.remote(stream_id=stream_id)

    async def close(self, stream_id: str) -> dict[str, Any]:
        with _overload("frame dedup"):
            return await self.frame_dedup.close.remote(stream_id=stream_id)


class HandleKnowledgeBackend:
    def __init__(self, knowledge: DeploymentHandle):
        self.knowledge = knowledge

    async def search(self, tenant_id: str, query: str, mode: str, top_k: int) -> dict[str, Any]:
        with _overload("knowledge base"):
            return await self.knowledge.search.remote(
                tenant_id=tenant_id, query=query, mode=mode, top_k=top_k
            )

    async def stats(self) -> dict[str, Any]:
        with _overload("knowledge base"):
            return await self.knowledge.stats.remote()


class HandleChatBackend:
    """ChatBackend over the Router handle (streaming through `handle.options(stream=True)`)."""

    def __init__(self, router: DeploymentHandle):
        self.router = router

    async def chat(self, request: ChatRequest) -> dict[str, Any]:
        with _overload("router"):
            return await self.router.chat.remote(request)

    async def chat_stream(self, request: ChatRequest) -> AsyncIterator[dict[str, Any]]:
        with _overload("router"):
            async for event in self.router.options(stream=True).chat_stream.remote(request):
                yield event

    async def costs(self, tenant_id: str, since: datetime | None, until: datetime | None) -> dict[str, Any]:
        with _overload("router"):
            return await self.router.costs.remote(tenant_id, since, until)

    async def status(self) -> dict[str, Any]:
        with _overload("router"):
            return await self.router.status.remote()


class HandleHandoffs:
    """HandoffBackend over the Router handle (the Router's desk answers; its refusals keep their type)."""

    def __init__(self, router: DeploymentHandle):
        self.router = router

    async def list(self, tenant: str, caller: Caller, status: str | None, limit: int) -> dict[str, Any]:
        with _overload("router"):
            return await self.router.handoff.remote("list", tenant, caller, status, limit)

    async def get(self, tenant: str, handoff_id: uuid.UUID, caller: Caller) -> dict[str, Any]:
        with _overload("router"):
            return await self.router.handoff.remote("get", tenant, handoff_id, caller)

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
    ) -> dict[str, Any]:
        with _overload("router"):
            return await self.router.handoff.remote(
                "create", tenant, caller, list(messages), reason, session_id, stream_id, room, note
            )

    async def claim(
        self, tenant: str, handoff_id: uuid.UUID, caller: Caller, name: str | None
    ) -> dict[str, Any]:
        with _overload("router"):
            return await self.router.handoff.remote("claim", tenant, handoff_id, caller, name)

    async def resolve(
        self, tenant: str, handoff_id: uuid.UUID, caller: Caller, note: str | None
    ) -> dict[str, Any]:
        with _overload("router"):
            return await self.router.handoff.remote("resolve", tenant, handoff_id, caller, note)

    async def give_back(
        self, tenant: str, handoff_id: uuid.UUID, caller: Caller, note: str
    ) -> dict[str, Any]:
        with _overload("router"):
            return await self.router.handoff.remote("give_back", tenant, handoff_id, caller, note)


class HandleExperiments:
    """ExperimentBackend (`serve_app.experiments.backend`) over the Router handle."""

    def __init__(self, router: DeploymentHandle):
        self.router = router

    async def feedback(
        self, tenant_id: str, request_id: str, resolved: bool, rating: int | None, comment: str | None
    ) -> dict[str, Any] | None:
        with _overload("router"):
            return await self.router.feedback.remote(tenant_id, request_id, resolved, rating, comment)

    async def session_feedback(
        self, tenant_id: str, session_id: str, resolved: bool, rating: int | None = None
    ) -> int:
        with _overload("router"):
            return await self.router.session_feedback.remote(tenant_id, session_id, resolved, rating)

    async def experiment_report(self, tenant_id: str | None, name: str) -> dict[str, Any] | None:
        with _overload("router"):
            return await self.router.experiment_report.remote(tenant_id, name)
