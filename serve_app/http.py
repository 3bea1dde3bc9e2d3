"""The HTTP API (FastAPI), independent of Ray: routes talk to a `FrameBackend` kept in `app.state`.

The Ray ingress deployment puts a backend that calls deployment handles there; tests and tools can put
the in-process `DedupService` instead. Errors are 4xx with a `detail` message, never a 500 for bad input.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from serve_app.auth import KeyVerifier, RateLimiter
from serve_app.frames.decode import FrameDecodeError, FrameLimits, decode_frame
from serve_app.frames.sampler import Decision
from serve_app.frames.service import DedupService
from serve_app.inputs import InvalidText, UtcDateTime, check_text
from serve_app.knowledge.query import MAX_QUERY_CHARS, check_query
from serve_app.metrics import Metrics
from serve_app.routing.openai_format import (
    ChatCompletionIn,
    ChatFormatError,
    chunk_body,
    completion_body,
    to_request,
)
from serve_app.routing.router import NoTierAvailable, token_totals
from serve_app.routing.service import ChatRequest, ChatRequestError
from serve_app.tenancy import InvalidIdentifier, parse_stream_id, validate_tenant_id

API_VERSION = "0.1.0"
log = logging.getLogger(__name__)


class Overloaded(Exception):
    """The backend refused work (queue full): HTTP 503 with Retry-After."""


class FrameBackend(Protocol):
    async def offer(
        self, stream_id: str, frame: Any, is_speaking: bool, ts: float | None
    ) -> dict[str, Any]: ...
    async def stats(self, stream_id: str) -> dict[str, Any]: ...
    async def close(self, stream_id: str) -> dict[str, Any]: ...


class LocalFrameBackend:
    """A `FrameBackend` over an in-process DedupService (no Ray)."""

    def __init__(self, service: DedupService):
        self.service = service

    async def offer(self, stream_id: str, frame: Any, is_speaking: bool, ts: float | None) -> dict[str, Any]:
        decision: Decision = await self.service.offer(stream_id, frame, is_speaking, ts)
        return decision.to_dict()

    async def stats(self, stream_id: str) -> dict[str, Any]:
        return self.service.stats(stream_id)

    async def close(self, stream_id: str) -> dict[str, Any]:
        return self.service.close(stream_id)


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


class _CheckedRequest(Request):
    """A request whose JSON body is checked once, as it is parsed, against the text rule."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await super().json()
            try:
                check_text(body)
            except InvalidText as exc:
                raise HTTPException(422, str(exc)) from None
        return self._json


class CheckedRoute(APIRoute):
    """Every route's JSON body goes through `_CheckedRequest` (one text rule for every field)."""

    def get_route_handler(self) -> Any:
        handle = super().get_route_handler()

        async def checked(request: Request) -> Response:
            return await handle(_CheckedRequest(request.scope, request.receive))

        return checked


class SearchIn(BaseModel):
    tenant_id: str = Field(..., max_length=63, description="lowercase letters, digits, '-'")
    query: str = Field(..., min_length=1, max_length=MAX_QUERY_CHARS)
    mode: Literal["bm25", "dense", "hybrid", "hybrid_rerank"] = "hybrid_rerank"
    top_k: int = Field(5, ge=1, le=50)


class PassageOut(BaseModel):
    citation: str
    source: str
    title: str
    heading: str
    content: str
    score: float


class SearchOut(BaseModel):
    query: str
    mode: str
    arm: str | None
    passages: list[PassageOut]
    timings_ms: dict[str, float]


class FrameDecisionOut(BaseModel):
    stream_id: str
    verdict: str  # throttled | duplicate | processed
    send: bool
    ts: float
    phash: str | None
    distance: int | None
    reason: str  # first | phash | region | throttled | duplicate
    box: list[int] | None = None  # [x, y, width, height] of the changed region, frame pixels


class Health(BaseModel):
    status: str
    version: str


STREAM_ID = Path(
    ...,
    max_length=300,
    description="tenant_<tenant>_<room>[.<track>], e.g. tenant_acme_support-42.screen",
)


def _stream(request: Request, stream_id: str) -> str:
    try:
        tenant = parse_stream_id(stream_id).tenant_id
    except InvalidIdentifier as exc:
        raise HTTPException(400, str(exc)) from None
    _authorize(request, tenant)
    return stream_id


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"frame is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"frame is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _backend(request: Request) -> FrameBackend:
    return request.app.state.frames


def _knowledge(request: Request) -> KnowledgeBackend:
    backend = getattr(request.app.state, "knowledge", None)
    if backend is None:
        raise HTTPException(503, "the knowledge base is not part of this deployment")
    return backend


def _reason(exc: BaseException) -> str:
    """The message of an error raised in a replica (Ray wraps it, with the remote traceback) or here."""
    cause = getattr(exc, "cause", None)
    return str(cause if isinstance(cause, BaseException) else exc)


def _chat(request: Request) -> ChatBackend:
    backend = getattr(request.app.state, "chat", None)
    if backend is None:
        raise HTTPException(503, "the router is not part of this deployment")
    return backend


def _tenant(request: Request, *candidates: str | None) -> str:
    """The request's tenant: named explicitly, else the API key's; it must be the key's tenant."""
    tenant = next((c for c in candidates if c), None) or getattr(request.state, "tenant", None)
    if tenant is None:
        raise HTTPException(422, "say which tenant: the tenant_id field or the X-Tenant-Id header")
    try:
        validate_tenant_id(tenant)
    except InvalidIdentifier as exc:
        raise HTTPException(422, str(exc)) from None
    _authorize(request, tenant)
    return tenant


@dataclass
class Access:
    """Who may call: `verifier` None means no API keys (local use); `limiter` None means no limits."""

    verifier: KeyVerifier | None = None
    limiter: RateLimiter | None = None


def _api_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("x-api-key")


async def _authenticate(request: Request) -> None:
    """Every route but health: a live API key (Bearer or X-API-Key), then the tenant's rate limit."""
    access: Access = request.app.state.access
    request.state.tenant = None
    if access.verifier is None:
        return
    key = _api_key(request)
    if not key:
        raise HTTPException(401, "an API key is required", headers={"WWW-Authenticate": "Bearer"})
    tenant = await access.verifier.tenant_of(key)
    if tenant is None:
        raise HTTPException(401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
    request.state.tenant = tenant
    if access.limiter is not None:
        path = request.url.path
        wait = access.limiter.admit(
            tenant, needs_tokens=path.endswith("/chat/completions"), frame=path.endswith("/frames")
        )
        if wait is not None:
            raise HTTPException(
                429, f"rate limit of tenant {tenant!r} reached", headers={"Retry-After": str(math.ceil(wait))}
            )


def _authorize(request: Request, tenant: str) -> None:
    caller = getattr(request.state, "tenant", None)
    if caller is not None and caller != tenant:
        raise HTTPException(403, "this API key belongs to another tenant")


def _charge(request: Request, routing: dict[str, Any]) -> None:
    access: Access = request.app.state.access
    if access.limiter is not None and request.state.tenant is not None:
        access.limiter.charge_tokens(request.state.tenant, sum(token_totals(routing)))


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
                _charge(request, routing)
                yield event(chunk_body(chunk_id, routing["model"], {}, "stop", supportgraph=routing))
    except (NoTierAvailable, Overloaded) as exc:
        yield event({"error": {"message": _reason(exc), "type": "unavailable", "code": 503}})
    except ChatRequestError as exc:
        yield event({"error": {"message": _reason(exc), "type": "invalid_request_error", "code": 422}})
    except Exception:
        log.exception("chat stream failed")
        yield event({"error": {"message": "internal error", "type": "server_error", "code": 500}})
    yield "data: [DONE]\n\n"


def _observe_http(app: FastAPI, metrics: Metrics) -> None:
    """Requests and latency per route template (not per raw path: stream ids would explode the labels)."""

    @app.middleware("http")
    async def record(request: Request, call_next: Any) -> Any:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = getattr(request.scope.get("route"), "path", "unmatched")
            metrics.inc("supportgraph_http_requests", route=route, status=str(status))
            metrics.observe(
                "supportgraph_http_latency_ms", (time.perf_counter() - started) * 1e3, route=route
            )


def create_app(
    limits: FrameLimits | None = None, metrics: Metrics | None = None, access: Access | None = None
) -> FastAPI:
    app = FastAPI(
        title="supportgraph",
        version=API_VERSION,
        description="Multi-modal customer-support graph on Ray Serve: frame dedup (this version).",
    )
    app.router.route_class = CheckedRoute
    app.state.limits = limits or FrameLimits()
    app.state.access = access or Access()
    keyed = [Depends(_authenticate)]
    if metrics is not None:
        _observe_http(app, metrics)

    @app.exception_handler(Overloaded)
    async def _overloaded(_: Request, exc: Overloaded) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc) or "overloaded, retry later"}, 503, headers={"Retry-After": "1"}
        )

    @app.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz() -> Health:
        return Health(status="ok", version=API_VERSION)

    @app.post(
        "/v1/streams/{stream_id}/frames",
        dependencies=keyed,
        response_model=FrameDecisionOut,
        tags=["frames"],
        summary="Offer one screen-share frame; says whether to send it on (processed) or skip it",
        responses={
            400: {"description": "bad stream id"},
            413: {"description": "frame too large"},
            415: {"description": "unsupported content type"},
            422: {"description": "corrupt frame"},
            503: {"description": "overloaded"},
        },
    )
    async def submit_frame(
        request: Request,
        stream_id: str = STREAM_ID,
        ts: float | None = Query(None, ge=0, le=1e12, allow_inf_nan=False, description="frame time, seconds"),
        speaking: bool = Query(False, description="the user is speaking: sample at the active rate"),
        width: int | None = Query(None, ge=1, le=16384, description="raw RGB24 only"),
        height: int | None = Query(None, ge=1, le=16384, description="raw RGB24 only"),
    ) -> dict[str, Any]:
        _stream(request, stream_id)
        limits: FrameLimits = request.app.state.limits
        body = await _read_body(request, limits.max_bytes)
        try:
            frame = await asyncio.to_thread(
                decode_frame, body, request.headers.get("content-type"), limits, width, height
            )
        except FrameDecodeError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        return await _backend(request).offer(stream_id, frame, speaking, ts)

    @app.get(
        "/v1/streams/{stream_id}/stats",
        dependencies=keyed,
        tags=["frames"],
        summary="Counters of a stream and its tenant",
    )
    async def stream_stats(request: Request, stream_id: str = STREAM_ID) -> dict[str, Any]:
        return await _backend(request).stats(_stream(request, stream_id))

    @app.delete(
        "/v1/streams/{stream_id}",
        dependencies=keyed,
        tags=["frames"],
        summary="End a stream; returns its final counters",
    )
    async def close_stream(request: Request, stream_id: str = STREAM_ID) -> dict[str, Any]:
        return await _backend(request).close(_stream(request, stream_id))

    @app.post(
        "/v1/knowledge/search",
        dependencies=keyed,
        response_model=SearchOut,
        tags=["knowledge"],
        summary="Hybrid retrieval (vector + full text, RRF, rerank) of cited passages for a tenant",
        responses={422: {"description": "bad tenant id or query"}, 503: {"description": "overloaded"}},
    )
    async def knowledge_search(request: Request, body: SearchIn) -> dict[str, Any]:
        try:
            validate_tenant_id(body.tenant_id)
            check_query(body.query)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        _authorize(request, body.tenant_id)
        return await _knowledge(request).search(body.tenant_id, body.query, body.mode, body.top_k)

    @app.get(
        "/v1/knowledge/stats",
        dependencies=keyed,
        tags=["knowledge"],
        summary="Per-arm rerank metrics, embedding cache hits",
    )
    async def knowledge_stats(request: Request) -> dict[str, Any]:
        return await _knowledge(request).stats()

    @app.post(
        "/v1/chat/completions",
        dependencies=keyed,
        tags=["router"],
        summary="OpenAI-compatible chat completions through the escalating router (stream: SSE)",
        responses={
            422: {"description": "bad tenant, message, image or tier"},
            503: {"description": "overloaded, or every tier failed"},
        },
    )
    async def chat_completions(
        request: Request,
        body: ChatCompletionIn,
        x_tenant_id: str | None = Header(None, max_length=63),
    ) -> Any:
        tenant = _tenant(request, body.tenant_id, x_tenant_id)
        backend = _chat(request)
        limits: FrameLimits = request.app.state.limits
        try:
            chat, _ = to_request(body, tenant, limits.max_bytes)
        except (ChatFormatError, ValueError) as exc:
            raise HTTPException(422, str(exc)) from None
        if body.stream:
            return StreamingResponse(_sse(request, backend, chat), media_type="text/event-stream")
        try:
            result = await backend.chat(chat)
        except NoTierAvailable as exc:
            raise HTTPException(
                503, f"no tier could answer: {_reason(exc)}", headers={"Retry-After": "5"}
            ) from None
        except ChatRequestError as exc:
            raise HTTPException(422, _reason(exc)) from None
        _charge(request, result["routing"])
        return completion_body(result["answer"], result["routing"])

    @app.get(
        "/v1/models",
        dependencies=keyed,
        tags=["router"],
        summary="The router ('auto') and its tiers, OpenAI-style",
    )
    async def models(request: Request) -> dict[str, Any]:
        status = await _chat(request).status()
        names = ["auto"] + [t["name"] for t in status["tiers"]]
        return {
            "object": "list",
            "data": [{"id": n, "object": "model", "owned_by": "supportgraph"} for n in names],
        }

    @app.get(
        "/v1/router",
        dependencies=keyed,
        tags=["router"],
        summary="Tiers, thresholds, breaker states, ledger counters",
    )
    async def router_status(request: Request) -> dict[str, Any]:
        return await _chat(request).status()

    @app.get(
        "/v1/costs",
        dependencies=keyed,
        tags=["costs"],
        summary="A tenant's costs by service, provider and tier, vs all requests on the top tier",
    )
    async def costs(
        request: Request,
        tenant_id: str | None = Query(None, max_length=63),
        since: UtcDateTime | None = Query(None, description="ISO 8601, inclusive (naive: UTC)"),
        until: UtcDateTime | None = Query(None, description="ISO 8601, exclusive (naive: UTC)"),
        x_tenant_id: str | None = Header(None, max_length=63),
    ) -> dict[str, Any]:
        tenant = _tenant(request, tenant_id, x_tenant_id)
        if since and until and since >= until:
            raise HTTPException(422, "since must be before until")
        return await _chat(request).costs(tenant, since, until)

    return app
