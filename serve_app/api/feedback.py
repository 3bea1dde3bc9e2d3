"""`/v1/feedback` and `/v1/experiments/{name}`: a routed request's outcome, and an experiment's report.

Both act for the API key's tenant (row-level security scopes them): feedback on another tenant's request
is a 404 like an unknown one. The `ExperimentBackend` in `app.state.experiments` answers (503 without).
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from serve_app.api.access import allow, app_backend, authenticate, request_tenant
from serve_app.api.checked import CheckedRoute

routes = APIRouter(
    prefix="/v1",
    tags=["experiments"],
    dependencies=[Depends(authenticate), Depends(allow("admin", "client"))],
    route_class=CheckedRoute,
)


class FeedbackIn(BaseModel):
    request_id: uuid.UUID = Field(..., description="supportgraph.request_id of the chat completion")
    resolved: bool
    rating: int | None = Field(None, ge=1, le=5)
    comment: str | None = Field(None, max_length=2000)
    tenant_id: str | None = Field(None, max_length=63, description="default: the API key's tenant")


class FeedbackOut(BaseModel):
    request_id: str
    session_id: str | None
    resolved: bool
    rating: int | None
    comment: str | None
    feedback_at: str


def experiment_backend(request: Request) -> Any:
    return app_backend(request, "experiments", "experiments are")


@routes.post(
    "/feedback",
    response_model=FeedbackOut,
    summary="A routed request's outcome: resolved, rating 1-5, comment (again: replaces it)",
    responses={404: {"description": "no such request for this tenant"}, 422: {"description": "bad field"}},
)
async def feedback(
    request: Request, body: FeedbackIn, x_tenant_id: str | None = Header(None, max_length=63)
) -> dict[str, Any]:
    tenant = request_tenant(request, body.tenant_id, x_tenant_id)
    row = await experiment_backend(request).feedback(
        tenant, str(body.request_id), body.resolved, body.rating, body.comment
    )
    if row is None:
        raise HTTPException(404, f"no request {body.request_id} for tenant {tenant!r}")
    return row


@routes.get(
    "/experiments/{name}",
    summary="Per arm: units, resolution and escalation rates, rating, cost, latency; vs control; SRM",
    responses={404: {"description": "unknown experiment"}},
)
async def experiment(
    request: Request,
    name: str = Path(..., max_length=63, pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$"),
    tenant_id: str | None = Query(None, max_length=63),
    x_tenant_id: str | None = Header(None, max_length=63),
) -> dict[str, Any]:
    tenant = request_tenant(request, tenant_id, x_tenant_id)
    report = await experiment_backend(request).experiment_report(tenant, name)
    if report is None:
        raise HTTPException(404, f"no experiment {name!r}")
    return report
