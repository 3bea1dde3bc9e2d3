"""Ingress deployment: the FastAPI app of serve_app.http, with a backend that calls deployment handles.

The app is built on the replica (`__serve_build_asgi_app__`), after `__init__` has the handles.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from serve_app.frames.decode import FrameLimits
from serve_app.http import Overloaded, create_app
from serve_app.routing.service import ChatRequest


class HandleFrameBackend:
    """FrameBackend over the FrameDedup handle; keyword calls so StreamAffinityRouter sees stream_id."""

    def __init__(self, frame_dedup: DeploymentHandle):
        self.frame_dedup = frame_dedup

    async def offer(self, stream_id: str, frame: Any, is_speaking: bool, ts: float | None) -> dict[str, Any]:
        try:
            return await self.frame_dedup.offer.remote(
                stream_id=stream_id, frame=frame, is_speaking=is_speaking, ts=ts
            )
        except BackPressureError as exc:
            raise Overloaded("frame dedup queue is full, retry later") from exc

    async def stats(self, stream_id: str) -> dict[str, Any]:
        return await self.frame_dedup.stats.remote(stream_id=stream_id)

    async def close(self, stream_id: str) -> dict[str, Any]:
        return await self.frame_dedup.close.remote(stream_id=stream_id)


class HandleChatBackend:
    """ChatBackend over the Router handle (streaming through `handle.options(stream=True)`)."""

    def __init__(self, router: DeploymentHandle):
        self.router = router

    async def chat(self, request: ChatRequest) -> dict[str, Any]:
        try:
            return await self.router.chat.remote(request)
        except BackPressureError as exc:
            raise Overloaded("router queue is full, retry later") from exc

    async def chat_stream(self, request: ChatRequest) -> AsyncIterator[dict[str, Any]]:
        try:
            async for event in self.router.options(stream=True).chat_stream.remote(request):
                yield event
        except BackPressureError as exc:
            raise Overloaded("router queue is full, retry later") from exc

    async def costs(self, tenant_id: str, since: datetime | None, until: datetime | None) -> dict[str, Any]:
        return await self.router.costs.remote(tenant_id, since, until)

    async def status(self) -> dict[str, Any]:
        return await self.router.status.remote()


class HandleKnowledgeBackend:
    def __init__(self, knowledge: DeploymentHandle):
        self.knowledge = knowledge

    async def search(self, tenant_id: str, query: str, mode: str, top_k: int) -> dict[str, Any]:
        try:
            return await self.knowledge.search.remote(
                tenant_id=tenant_id, query=query, mode=mode, top_k=top_k
            )
        except BackPressureError as exc:
            raise Overloaded("knowledge base queue is full, retry later") from exc

    async def stats(self) -> dict[str, Any]:
        return await self.knowledge.stats.remote()


@serve.ingress()
class Ingress:
    def __init__(
        self,
        frame_dedup: DeploymentHandle,
        knowledge: DeploymentHandle,
        router: DeploymentHandle,
        http: dict[str, Any] | None = None,
    ):
        http = http or {}
        self.limits = FrameLimits(
            max_bytes=http.get("max_frame_bytes", FrameLimits.max_bytes),
            max_pixels=http.get("max_frame_pixels", FrameLimits.max_pixels),
        )
        self.frames = HandleFrameBackend(frame_dedup)
        self.knowledge = HandleKnowledgeBackend(knowledge)
        self.chat = HandleChatBackend(router)

    def __serve_build_asgi_app__(self) -> Any:
        app = create_app(self.limits)
        app.state.frames = self.frames
        app.state.knowledge = self.knowledge
        app.state.chat = self.chat
        return app
