"""The HTTP API (FastAPI), independent of Ray: `create_app` assembles the area routers of `serve_app.api`.

Routes talk to backends kept in `app.state` (`frames`, `knowledge`, `chat`: the protocols of
`serve_app.backends`). The Ray ingress deployment puts backends that call deployment handles there;
tests and tools can put in-process services instead. This module owns what is app-wide: the frame
limits, who may call (`Access`), the `Overloaded` -> 503 handler and the per-route request metrics.
Errors are 4xx with a `detail` message, never a 500 for bad input.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from serve_app.api import API_VERSION, chat, costs, feedback, frames, handoffs, health, knowledge
from serve_app.api.access import Access
from serve_app.api.checked import CheckedRoute
from serve_app.backends import Overloaded
from serve_app.frames.decode import FrameLimits
from serve_app.metrics import Metrics

__all__ = ["API_VERSION", "Access", "create_app"]

ROUTES = (
    health.routes,
    frames.routes,
    knowledge.routes,
    chat.routes,
    costs.routes,
    feedback.routes,
    handoffs.routes,
)


async def _overloaded(_: Request, exc: Exception) -> JSONResponse:
    """A backend refused work (queue full): 503 with Retry-After."""
    return JSONResponse({"detail": str(exc) or "overloaded, retry later"}, 503, headers={"Retry-After": "1"})


class _ObservedHttp:
    """Requests and latency per route template (not per raw path: stream ids would explode the labels).

    A plain ASGI middleware: Starlette's `BaseHTTPMiddleware` (`@app.middleware("http")`) runs each
    request in a task group with memory streams, a per-request cost on every interactive path."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sent(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.inc("supportgraph_http_requests", route=route, status=str(status))
            self.metrics.observe(
                "supportgraph_http_latency_ms", (time.perf_counter() - started) * 1e3, route=route
            )


def create_app(
    limits: FrameLimits | None = None, metrics: Metrics | None = None, access: Access | None = None
) -> FastAPI:
    """The app: every area's routes, frame `limits`, `access` (no keys by default), `metrics` if given."""
    app = FastAPI(
        title="supportgraph",
        version=API_VERSION,
        description="Multi-modal customer-support graph on Ray Serve: frame dedup (this version).",
    )
    app.router.route_class = CheckedRoute
    app.state.limits = limits or FrameLimits()
    app.state.access = access or Access()
    if metrics is not None:
        app.add_middleware(_ObservedHttp, metrics=metrics)
    app.add_exception_handler(Overloaded, _overloaded)
    for routes in ROUTES:
        app.include_router(routes)
    return app
