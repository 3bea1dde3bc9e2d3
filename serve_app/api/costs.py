"""`/v1/costs`: a tenant's costs by service, provider and tier, answered by the router's `ChatBackend`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request

from serve_app.api.access import allow, authenticate, request_tenant
from serve_app.api.chat import chat_backend
from serve_app.api.checked import CheckedRoute
from serve_app.inputs import UtcDateTime

routes = APIRouter(
    prefix="/v1",
    tags=["costs"],
    dependencies=[Depends(authenticate), Depends(allow("admin"))],
    route_class=CheckedRoute,
)


@routes.get(
    "/costs", summary="A tenant's costs by service, provider and tier, vs all requests on the top tier"
)
async def costs(
    request: Request,
    tenant_id: str | None = Query(None, max_length=63),
    since: UtcDateTime | None = Query(None, description="ISO 8601, inclusive (naive: UTC)"),
    until: UtcDateTime | None = Query(None, description="ISO 8601, exclusive (naive: UTC)"),
    x_tenant_id: str | None = Header(None, max_length=63),
) -> dict[str, Any]:
    tenant = request_tenant(request, tenant_id, x_tenant_id)
    if since and until and since >= until:
        raise HTTPException(422, "since must be before until")
    return await chat_backend(request).costs(tenant, since, until)
