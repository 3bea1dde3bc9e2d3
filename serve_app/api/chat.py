"""`/v1/chat/completions`, `/v1/models`, `/v1/router`: the escalating router, OpenAI-style.

Completions are answered whole or streamed as server-sent events; routed tokens are charged to the
tenant's token bucket. The `ChatBackend` in `app.state.chat` answers (503 when this deployment has no
router); it also answers `/v1/costs` (`serve_app.api.costs`).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.responses import StreamingResponse

from serve_app.api.access import allow, app_backend, authenticate, charge_tokens, request_tenant
from serve_app.api.checked import CheckedRoute
from serve_app.backends import ChatBackend, Overloaded
from serve_app.errors import ForeignStream
from serve_app.frames.decode import FrameLimits
from serve_app.routing.openai_format import (
    ChatCompletionIn,
    ChatFormatError,
    chunk_body,
    completion_body,
    to_request,
)
from serve_app.routing.router import NoTierAvailable
from serve_app.routing.service import ChatRequest, ChatRequestError

log = logging.getLogger(__name__)

routes = APIRouter(
    prefix="/v1",
    tags=["router"],
    dependencies=[Depends(authenticate), Depends(allow("admin", "client"))],
    route_class=CheckedRoute,
)


def chat_backend(request: Request) -> ChatBackend:
    return app_backend(request, "chat", "the router is")


def _reason(exc: BaseException) -> str:
    """The message of an error raised in a replica (Ray wraps it, with the remote traceback) or here."""
    cause = getattr(exc, "cause", None)
    return str(cause if isinstance(cause, BaseException) else exc)


async def _sse(request: Request, backend: ChatBackend, chat: ChatRequest) -> AsyncIterator[str]:
    """OpenAI-style server-sent events: a role chunk, content chunks, a final chunk with the routing."""
    chunk_id = f"chatcmpl-{uuid.uuid4()}"

    def event(payload: dict[str, Any]) -> str:
        return f"data: {json.dumps(payload)}\n\n"

    yield event(chunk_body(chunk_id, "supportgraph", {"role": "assistant", "content": ""}))
    try:
        async for item in backend.chat_stream(chat):
            if "delta" in item:
                yield event(chunk_body(chunk_id, "supportgraph", {"content": item["delta"]}))
            else:
                routing = item["routing"]
                charge_tokens(request, routing)
                yield event(chunk_body(chunk_id, routing["model"], {}, "stop", supportgraph=routing))
    except (NoTierAvailable, Overloaded) as exc:
        yield event({"error": {"message": _reason(exc), "type": "unavailable", "code": 503}})
    except ChatRequestError as exc:
        yield event({"error": {"message": _reason(exc), "type": "invalid_request_error", "code": 422}})
    except Exception:
        log.exception("chat stream failed")
        yield event({"error": {"message": "internal error", "type": "server_error", "code": 500}})
    yield "data: [DONE]\n\n"


async def _complete(request: Request, backend: ChatBackend, chat: ChatRequest) -> dict[str, Any]:
    """A whole answer, OpenAI-style; 503 when no tier could answer, 422 for a request it refused."""
    try:
        result = await backend.chat(chat)
    except NoTierAvailable as exc:
        raise HTTPException(
            503, f"no tier could answer: {_reason(exc)}", headers={"Retry-After": "5"}
        ) from None
    except ChatRequestError as exc:
        raise HTTPException(422, _reason(exc)) from None
    charge_tokens(request, result["routing"])
    return completion_body(result["answer"], result["routing"])


@routes.post(
    "/chat/completions",
    summary="OpenAI-compatible chat completions through the escalating router (stream: SSE)",
    responses={
        403: {"description": "a stream_id of another tenant"},
        422: {"description": "bad tenant, message, image, stream_id or tier"},
        503: {"description": "overloaded, every tier failed, or its replica was lost (retry)"},
    },
)
async def chat_completions(
    request: Request,
    body: ChatCompletionIn,
    x_tenant_id: str | None = Header(None, max_length=63),
) -> Any:
    tenant = request_tenant(request, body.tenant_id, x_tenant_id)
    backend = chat_backend(request)
    limits: FrameLimits = request.app.state.limits
    try:
        chat, _ = to_request(body, tenant, limits.max_bytes)
    except ForeignStream as exc:
        raise HTTPException(403, str(exc)) from None
    except (ChatFormatError, ValueError) as exc:
        raise HTTPException(422, str(exc)) from None
    if body.stream:
        return StreamingResponse(_sse(request, backend, chat), media_type="text/event-stream")
    return await _complete(request, backend, chat)


@routes.get("/models", summary="The router ('auto') and its tiers, OpenAI-style")
async def models(request: Request) -> dict[str, Any]:
    status = await chat_backend(request).status()
    names = ["auto"] + [t["name"] for t in status["tiers"]]
    return {
        "object": "list",
        "data": [{"id": n, "object": "model", "owned_by": "supportgraph"} for n in names],
    }


@routes.get("/router", summary="Tiers, thresholds, breaker states, ledger counters")
async def router_status(request: Request) -> dict[str, Any]:
    return await chat_backend(request).status()
