"""`/healthz`: liveness and the API version; the one route without an API key."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from serve_app.api import API_VERSION
from serve_app.api.checked import CheckedRoute

routes = APIRouter(tags=["ops"], route_class=CheckedRoute)


class Health(BaseModel):
    status: str
    version: str


@routes.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok", version=API_VERSION)
