"""FrameDedup deployment: batched pHash and region signals across streams (`@serve.batch`), stream state
pinned by routing.

Call through a handle with keywords so the router sees the stream:
`await handle.offer.remote(stream_id=..., frame=rgb_uint8_hwc, is_speaking=..., ts=...)`, or, for
several frames of one stream in one request (the fast path: one call's overhead for all of them),
`await handle.offer_many.remote(stream_id=..., frames=rgb_uint8_bhwc, is_speaking=..., ts=[...])`, or,
with half the bytes and no per-pixel conversion here (the fastest path; `serve_app/frames/planes.py`),
`await handle.offer_planes.remote(stream_id=..., luma=uint8_bhw, color=uint16_2x2_sums, ...)` with
`planes = to_planes(rgb_uint8_bhwc)` computed by the caller: the same decisions as the RGB frames.
Both go through the same `@serve.batch` queue (an item is the admitted frames of one call), so frames
of many streams are hashed together and one stream's frames are decided in the order they arrived.
Live settings (pHash threshold, region signal, fps, batch size) arrive as `user_config` and apply without a
redeploy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.screen_reader import ScreenHandOff
from serve_app.frames.planes import PlaneFrame, Planes
from serve_app.frames.sampler import Decision
from serve_app.frames.service import DedupService, Pending, complete
from serve_app.metrics import Metrics
from serve_app.settings import DedupSettings


class FrameDedup:
    def __init__(
        self,
        dedup: dict[str, Any] | None = None,
        screen_reader: DeploymentHandle | None = None,
        reads_in_flight: int = 16,
    ):
        self.service = DedupService(DedupSettings(**(dedup or {})))
        self.service.metrics = Metrics.ray()
        self._apply_batching()
        # processed frames go on to OCR without being waited for (deployments/screen_reader.py)
        self.screen = (
            ScreenHandOff(screen_reader, max_in_flight=reads_in_flight) if screen_reader is not None else None
        )

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
        decision = admitted if isinstance(admitted, Decision) else (await self._decide([admitted]))[0]
        return self._handed_on(stream_id, frame, decision)

    async def offer_many(
        self,
        stream_id: str,
        frames: np.ndarray | list[np.ndarray],
        is_speaking: bool | Sequence[bool] = False,
        ts: Sequence[float] | None = None,
    ) -> list[dict[str, Any]]:
        """Several frames of one stream ([B, H, W, 3] or a list of [H, W, 3]): their decisions, in order."""
        admitted = self.service.admit_many(stream_id, frames, is_speaking, ts)
        decisions = await complete(admitted, self._decide)
        return [self._handed_on(stream_id, f, d) for f, d in zip(frames, decisions, strict=True)]

    async def offer_planes(
        self,
        stream_id: str,
        luma: np.ndarray,
        color: np.ndarray,
        is_speaking: bool | Sequence[bool] = False,
        ts: Sequence[float] | None = None,
    ) -> list[dict[str, Any]]:
        """Several frames of one stream as planes (luma uint8 [B, H, W], color uint16 2x2 colourfulness
        sums [B, ceil(H / 2), ceil(W / 2)]): their decisions, in order, equal to those of the RGB frames."""
        planes = Planes(np.asarray(luma), np.asarray(color))
        admitted = self.service.admit_planes(stream_id, planes, is_speaking, ts)
        decisions = await complete(admitted, self._decide)
        return [self._handed_on(stream_id, planes.frame(i), d) for i, d in enumerate(decisions)]

    def _handed_on(
        self, stream_id: str, frame: np.ndarray | PlaneFrame, decision: Decision
    ) -> dict[str, Any]:
        """The decision as sent back; a processed frame also goes on to the ScreenReader (not awaited;
        frames sent as planes go as their grey luma)."""
        out = decision.to_dict()
        if self.screen is not None:
            self.screen.offer(stream_id, frame.grey_rgb() if isinstance(frame, PlaneFrame) else frame, out)
        return out

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _decide(self, groups: list[list[Pending]]) -> list[list[Decision]]:
        """Each item is one call's admitted frames: all of them are hashed in one pass."""
        decisions = await self.service.decide_batch([p for group in groups for p in group])
        out, at = [], 0
        for group in groups:
            out.append(decisions[at : at + len(group)])
            at += len(group)
        return out

    async def stats(self, stream_id: str) -> dict[str, Any]:
        """The stream's decisions; `screen_reads`: this replica's hand-off to the ScreenReader (reads in
        flight, its bound, reads shed and failed)."""
        reads = self.screen.stats() if self.screen is not None else None
        return {**self.service.stats(stream_id), "replica": self._replica(), "screen_reads": reads}

    async def close(self, stream_id: str) -> dict[str, Any]:
        return {**self.service.close(stream_id), "replica": self._replica()}
