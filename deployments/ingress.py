"""Ingress deployment: the FastAPI app of serve_app.http, with backends that call deployment handles.

The app is built on the replica (`__serve_build_asgi_app__`), after `__init__` has the handles. With
`auth.mode: keys` it verifies API keys against Postgres (a small pool of its own) and applies the
per-tenant rate limits, divided among the configured ingress replicas (buckets are per replica).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.auth import KeyVerifier, RateLimiter, db_lookup
from serve_app.db.database import Database
from serve_app.frames.decode import FrameLimits
from serve_app.handles import (
    HandleChatBackend,
    HandleExperiments,
    HandleFrameBackend,
    HandleHandoffs,
    HandleKnowledgeBackend,
)
from serve_app.http import Access, create_app
from serve_app.metrics import Metrics
from serve_app.settings import AuthSettings, DatabaseSettings, HttpSettings


@serve.ingress()
class Ingress:
    def __init__(
        self,
        frame_dedup: DeploymentHandle,
        knowledge: DeploymentHandle,
        router: DeploymentHandle,
        http: HttpSettings,
        auth: AuthSettings,
        db: DatabaseSettings,
        state_dir: Path,
        replicas: int = 1,
    ):
        """`replicas`: how many Ingress replicas share the rate limits (each keeps its own buckets)."""
        self.limits = FrameLimits(max_bytes=http.max_frame_bytes, max_pixels=http.max_frame_pixels)
        self.frames = HandleFrameBackend(frame_dedup)
        self.knowledge = HandleKnowledgeBackend(knowledge)
        self.chat = HandleChatBackend(router)
        self.experiments = HandleExperiments(router)
        self.handoffs = HandleHandoffs(router)
        self.access = Access()
        if auth.mode == "keys":
            self.db = Database(db.model_copy(update={"pool_max_size": 4}), state_dir)
            self._db_lookup = db_lookup(self.db)
            share = replicas
            self.access = Access(
                KeyVerifier(self._lookup, auth.cache_ttl_s),
                RateLimiter(
                    auth.requests_per_min / share,
                    auth.tokens_per_min / share,
                    {
                        t: (lim.requests_per_min / share, lim.tokens_per_min / share)
                        for t, lim in auth.tenant_limits.items()
                    },
                    auth.frames_per_min / share,
                ),
            )

    async def _lookup(self, tenant_id: str, digest: bytes) -> str | None:
        await self.db.ready()
        return await self._db_lookup(tenant_id, digest)

    def __serve_build_asgi_app__(self) -> Any:
        app = create_app(self.limits, Metrics.ray(), self.access)
        app.state.frames = self.frames
        app.state.knowledge = self.knowledge
        app.state.chat = self.chat
        app.state.experiments = self.experiments
        app.state.handoffs = self.handoffs
        return app
