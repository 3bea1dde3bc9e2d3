"""Ingress deployment: the FastAPI app of serve_app.http, with backends that call deployment handles.

The app is built on the replica (`__serve_build_asgi_app__`), after `__init__` has the handles.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.frames.decode import FrameLimits
from serve_app.handles import HandleChatBackend, HandleFrameBackend, HandleKnowledgeBackend
from serve_app.http import create_app
from serve_app.metrics import Metrics


@serve.ingress()
class Ingress:
    def __init__(
        self,
        frame_dedup: DeploymentHandle,
        knowledge: DeploymentHandle,
        router: DeploymentHandle,
        http: dict[str, Any] | None = None,
    ):
        http = http or {}
        self.limits = FrameLimits(
            max_bytes=http.get("max_frame_bytes", FrameLimits.max_bytes),
            max_pixels=http.get("max_frame_pixels", FrameLimits.max_pixels),
        )
        self.frames = HandleFrameBackend(frame_dedup)
        self.knowledge = HandleKnowledgeBackend(knowledge)
        self.chat = HandleChatBackend(router)

    def __serve_build_asgi_app__(self) -> Any:
        app = create_app(self.limits, Metrics.ray())
        app.state.frames = self.frames
        app.state.knowledge = self.knowledge
        app.state.chat = self.chat
        return app
