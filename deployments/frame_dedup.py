"""FrameDedup deployment: batched pHash and region signals across streams (`@serve.batch`), stream state
pinned by routing.

Call through a handle with keywords so the router sees the stream:
`await handle.offer.remote(stream_id=..., frame=rgb_uint8_hwc, is_speaking=..., ts=...)`.
Live settings (pHash threshold, region signal, fps, batch size) arrive as `user_config` and apply without a
redeploy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.screen_reader import ScreenHandOff
from serve_app.frames.sampler import Decision
from serve_app.frames.service import DedupService, Pending
from serve_app.metrics import Metrics
from serve_app.settings import DedupSettings


class FrameDedup:
    def __init__(self, dedup: dict[str, Any] | None = None, screen_reader: DeploymentHandle | None = None):
        self.service = DedupService(DedupSettings(**(dedup or {})))
        self.service.metrics = Metrics.ray()
        self._apply_batching()
        # processed frames go on to OCR without being waited for (deployments/screen_reader.py)
        self.screen = ScreenHandOff(screen_reader) if screen_reader is not None else None

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self.service.reconfigure(user_config)
        self._apply_batching()

    def _apply_batching(self) -> None:
        self._decide.set_max_batch_size(self.service.settings.max_batch_size)
        self._decide.set_batch_wait_timeout_s(self.service.settings.batch_wait_timeout_s)

    def _replica(self) -> str:
        return serve.get_replica_context().replica_id.unique_id

    async def offer(
        self, stream_id: str, frame: np.ndarray, is_speaking: bool = False, ts: float | None = None
    ) -> dict[str, Any]:
        admitted = self.service.admit(stream_id, frame, is_speaking, ts)
        decision = admitted if isinstance(admitted, Decision) else await self._decide(admitted)
        out = decision.to_dict()
        if self.screen is not None:
            self.screen.offer(stream_id, frame, out)
        return out

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _decide(self, items: list[Pending]) -> list[Decision]:
        return await self.service.decide_batch(items)

    async def stats(self, stream_id: str) -> dict[str, Any]:
        return {**self.service.stats(stream_id), "replica": self._replica()}

    async def close(self, stream_id: str) -> dict[str, Any]:
        return {**self.service.close(stream_id), "replica": self._replica()}
