"""A ChatBackend over an in-process ChatService (no Ray), for HTTP tests; costs answer from memory."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from serve_app.routing.service import ChatRequest, ChatService
from serve_app.settings import load_settings

PASSAGE = "## Export\nChoose Settings > Data > Export to export your notes."


async def export_passage(tenant: str, question: str, k: int, request_id: uuid.UUID) -> list[str]:
    return [PASSAGE]


def extractive_service(*more_tiers: dict[str, Any], **policy: Any) -> ChatService:
    """The extractive tier (answering from one passage), then `more_tiers`; `policy`: routing.policy."""
    tiers = [{"name": "extractive", "backend": "extractive", "model": "extractive-grounded"}, *more_tiers]
    return ChatService.create(load_settings(routing={"tiers": tiers, "policy": policy}), export_passage)


class LocalChat:
    def __init__(self, service: ChatService | None = None) -> None:
        self.service = service or extractive_service()

    async def chat(self, request: ChatRequest) -> dict[str, Any]:
        return await self.service.reply(request)

    def chat_stream(self, request: ChatRequest) -> AsyncIterator[dict[str, Any]]:
        return self.service.events(request)

    async def costs(self, tenant_id: str, since: Any, until: Any) -> dict[str, Any]:
        return {"tenant_id": tenant_id, "attempts": 0, "since": since, "until": until}

    async def status(self) -> dict[str, Any]:
        return self.service.router.status()
