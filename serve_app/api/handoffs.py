"""`/v1/handoffs`: the queue of conversations handed to people, for a tenant's human agents.

Agent (and admin) keys list, read, claim (a LiveKit token for the conversation's room), resolve and
return handoffs (back to the AI with a note); a client key creates handoffs and follows its own (the
customer's view: status, position, wait, join link). Row-level security scopes every call to the key's
tenant: another tenant's handoff is a 404 like an unknown one. The `HandoffBackend` in
`app.state.handoffs` answers (503 when this deployment has none); its refusals carry their status
(404, 409, 403, 503 naming the LiveKit settings), never a 500.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from pydantic import BaseModel, Field

from serve_app.api.access import allow, app_backend, authenticate, caller_of, request_tenant
from serve_app.api.checked import CheckedRoute
from serve_app.backends import HandoffBackend
from serve_app.errors import ForeignStream
from serve_app.handoff.errors import HandoffError
from serve_app.tenancy import InvalidIdentifier, tenant_stream

routes = APIRouter(
    prefix="/v1/handoffs",
    tags=["handoffs"],
    dependencies=[Depends(authenticate), Depends(allow("admin", "agent", "client"))],
    route_class=CheckedRoute,
)
agents_only = [Depends(allow("admin", "agent"))]
Status = Literal["queued", "claimed", "resolved", "returned", "expired"]
ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"description": "a client key acting on a handoff, or another tenant named"},
    404: {"description": "no such handoff for this tenant"},
    409: {"description": "not in the state the action needs (claimed twice, resolving an unclaimed one)"},
    503: {"description": "LiveKit credentials not configured (the detail names the settings)"},
}


class TurnIn(BaseModel):
    role: Literal["user", "assistant"]
    content: str = Field(..., min_length=1, max_length=20_000)


class HandoffIn(BaseModel):
    messages: list[TurnIn] = Field(..., min_length=1, max_length=200, description="the conversation so far")
    reason: Literal["asked", "abstained", "repeated", "frustrated", "tool"] = "asked"
    note: str | None = Field(None, max_length=2000, description="what the customer wants a person for")
    session_id: uuid.UUID | None = Field(None, description="the chat session (one open handoff per session)")
    room: str | None = Field(None, max_length=200, description="the LiveKit room, tenant_<id>_<room>")
    stream_id: str | None = Field(
        None, max_length=300, description="the screen share, tenant_<id>_<room>.<track>"
    )
    tenant_id: str | None = Field(None, max_length=63, description="default: the API key's tenant")


class ClaimIn(BaseModel):
    name: str | None = Field(
        None, min_length=1, max_length=100, description="who claims (default: key prefix)"
    )


class NoteIn(BaseModel):
    note: str | None = Field(None, max_length=4000)


class ReturnIn(BaseModel):
    note: str = Field(..., min_length=1, max_length=4000, description="what the AI should know from here on")


def handoff_backend(request: Request) -> HandoffBackend:
    return app_backend(request, "handoffs", "human handoff is")


async def _answer(call: Any) -> Any:
    """The backend's answer; a refusal (raised here or in a replica, where Ray wraps it) as its status."""
    try:
        return await call
    except HandoffError as exc:
        cause = getattr(exc, "cause", None)
        raise HTTPException(exc.status, str(cause if isinstance(cause, BaseException) else exc)) from None


def _own_room(value: str | None, tenant: str, what: str, track: bool) -> str | None:
    if value is None:
        return None
    try:
        parsed = tenant_stream(tenant, value)
    except ForeignStream:
        raise HTTPException(403, f"{what} names a room of another tenant") from None
    except InvalidIdentifier as exc:
        raise HTTPException(422, str(exc)) from None
    if not track and parsed.track is not None:
        raise HTTPException(422, f"{what} is a room name, without a .track part")
    return value


@routes.get("", summary="The tenant's handoffs, oldest first, each with its position and wait estimate")
async def list_handoffs(
    request: Request,
    status: Status | None = Query(None, description="e.g. queued"),
    limit: int = Query(100, ge=1, le=500),
    tenant_id: str | None = Query(None, max_length=63),
    x_tenant_id: str | None = Header(None, max_length=63),
) -> dict[str, Any]:
    tenant = request_tenant(request, tenant_id, x_tenant_id)
    return await _answer(handoff_backend(request).list(tenant, caller_of(request), status, limit))


@routes.post("", summary="Hand a conversation off to a person (a client hands off itself)", responses=ERRORS)
async def create_handoff(
    request: Request, body: HandoffIn, x_tenant_id: str | None = Header(None, max_length=63)
) -> dict[str, Any]:
    tenant = request_tenant(request, body.tenant_id, x_tenant_id)
    room = _own_room(body.room, tenant, "room", track=False)
    stream = _own_room(body.stream_id, tenant, "stream_id", track=True)
    messages = [m.model_dump() for m in body.messages]
    return await _answer(
        handoff_backend(request).create(
            tenant, caller_of(request), messages, body.reason, body.session_id, stream, room, body.note
        )
    )


@routes.get("/{handoff_id}", summary="One handoff (a client key: the customer's view)", responses=ERRORS)
async def get_handoff(
    request: Request,
    handoff_id: uuid.UUID,
    tenant_id: str | None = Query(None, max_length=63),
    x_tenant_id: str | None = Header(None, max_length=63),
) -> dict[str, Any]:
    tenant = request_tenant(request, tenant_id, x_tenant_id)
    return await _answer(handoff_backend(request).get(tenant, handoff_id, caller_of(request)))


@routes.post(
    "/{handoff_id}/claim",
    summary="Claim a queued handoff: a LiveKit token for exactly the conversation's room",
    responses=ERRORS,
    dependencies=agents_only,
)
async def claim_handoff(
    request: Request,
    handoff_id: uuid.UUID,
    body: ClaimIn | None = None,
    tenant_id: str | None = Query(None, max_length=63),
    x_tenant_id: str | None = Header(None, max_length=63),
) -> dict[str, Any]:
    tenant = request_tenant(request, tenant_id, x_tenant_id)
    name = body.name if body else None
    return await _answer(handoff_backend(request).claim(tenant, handoff_id, caller_of(request), name))


@routes.post(
    "/{handoff_id}/resolve",
    summary="Resolve a claimed handoff (the person's time becomes a 'human' cost event)",
    responses=ERRORS,
    dependencies=agents_only,
)
async def resolve_handoff(
    request: Request,
    handoff_id: uuid.UUID,
    body: NoteIn | None = None,
    tenant_id: str | None = Query(None, max_length=63),
    x_tenant_id: str | None = Header(None, max_length=63),
) -> dict[str, Any]:
    tenant = request_tenant(request, tenant_id, x_tenant_id)
    note = body.note if body else None
    return await _answer(handoff_backend(request).resolve(tenant, handoff_id, caller_of(request), note))


@routes.post(
    "/{handoff_id}/return",
    summary="Give a claimed conversation back to the AI with a note its next turns get as context",
    responses=ERRORS,
    dependencies=agents_only,
)
async def return_handoff(
    request: Request,
    handoff_id: uuid.UUID,
    body: ReturnIn,
    tenant_id: str | None = Query(None, max_length=63),
    x_tenant_id: str | None = Header(None, max_length=63),
) -> dict[str, Any]:
    tenant = request_tenant(request, tenant_id, x_tenant_id)
    return await _answer(
        handoff_backend(request).give_back(tenant, handoff_id, caller_of(request), body.note)
    )
