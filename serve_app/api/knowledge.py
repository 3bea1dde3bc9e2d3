"""`/v1/knowledge/...`: cited passages from a tenant's knowledge base, and the retrieval counters.

The query rules (length, modes) are the retrieval's own; the `KnowledgeBackend` in
`app.state.knowledge` answers (503 when this deployment has no knowledge base).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from serve_app.api.access import OVERLOADED, allow, app_backend, authenticate, authorize
from serve_app.api.checked import CheckedRoute
from serve_app.backends import KnowledgeBackend
from serve_app.knowledge.query import MAX_QUERY_CHARS, check_query
from serve_app.tenancy import validate_tenant_id

routes = APIRouter(
    prefix="/v1/knowledge",
    tags=["knowledge"],
    dependencies=[Depends(authenticate), Depends(allow("admin", "agent", "client"))],
    route_class=CheckedRoute,
)


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


def knowledge_backend(request: Request) -> KnowledgeBackend:
    return app_backend(request, "knowledge", "the knowledge base is")


@routes.post(
    "/search",
    response_model=SearchOut,
    summary="Hybrid retrieval (vector + full text, RRF, rerank) of cited passages for a tenant",
    responses={422: {"description": "bad tenant id or query"}, **OVERLOADED},
)
async def knowledge_search(request: Request, body: SearchIn) -> dict[str, Any]:
    try:
        validate_tenant_id(body.tenant_id)
        check_query(body.query)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    authorize(request, body.tenant_id)
    return await knowledge_backend(request).search(body.tenant_id, body.query, body.mode, body.top_k)


@routes.get("/stats", summary="Per-arm rerank metrics, embedding cache hits")
async def knowledge_stats(request: Request) -> dict[str, Any]:
    return await knowledge_backend(request).stats()
