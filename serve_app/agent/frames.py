"""Video into the dedup deployment, and the latest sent-on frames out to the next LLM turn.

`VideoForwarder` reads a track's `rtc.VideoStream`, throttles locally to the active/idle rate (so the
agent never ships frames the deployment would throttle anyway), offers each sampled frame to the
FrameDedup backend, and keeps the frames it says to send on (JPEG) in a `FrameBuffer`. The LLM attaches
the buffer's latest frames to the turn; every escalation attempt then gets the same frames.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import deque
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from PIL import Image as PILImage

from serve_app.routing.providers.base import Image

log = logging.getLogger(__name__)


class FrameSink(Protocol):
    async def offer(
        self, stream_id: str, frame: Any, is_speaking: bool, ts: float | None
    ) -> dict[str, Any]: ...


@dataclass
class FrameBuffer:
    """The latest frames the dedup said to send on, as JPEG (thread-safe, bounded)."""

    size: int = 4
    max_side: int = 1280
    _frames: deque = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, rgb: np.ndarray) -> None:
        image = PILImage.fromarray(rgb)
        if max(image.size) > self.max_side:
            image.thumbnail((self.max_side, self.max_side))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85)
        with self._lock:
            self._frames.append(Image(out.getvalue(), "image/jpeg"))
            while len(self._frames) > self.size:
                self._frames.popleft()

    def latest(self, n: int | None = None) -> tuple[Image, ...]:
        with self._lock:
            frames = tuple(self._frames)
        return frames[-n:] if n else frames


def rgb_of(frame: Any) -> np.ndarray:
    """An `rtc.VideoFrame` (any buffer type) as uint8 [H, W, 3]."""
    from livekit import rtc

    rgba = frame.convert(rtc.VideoBufferType.RGBA)
    return np.frombuffer(rgba.data, dtype=np.uint8).reshape(rgba.height, rgba.width, 4)[..., :3].copy()


@dataclass
class VideoForwarder:
    sink: FrameSink
    stream_id: str
    buffer: FrameBuffer
    speaking: Callable[[], bool] = lambda: False
    active_fps: float = 30.0
    idle_fps: float = 5.0
    offered: int = 0
    sent: int = 0
    _last_ts: float | None = None

    def _due(self, ts: float) -> bool:
        fps = self.active_fps if self.speaking() else self.idle_fps
        return self._last_ts is None or ts - self._last_ts >= 0.75 / fps

    async def run(self, events: AsyncIterable[Any]) -> None:
        """Consume `rtc.VideoStream` events (frame, timestamp_us) until the stream ends."""
        async for event in events:
            ts = event.timestamp_us / 1e6
            if not self._due(ts):
                continue
            self._last_ts = ts
            rgb = rgb_of(event.frame)
            try:
                decision = await self.sink.offer(self.stream_id, rgb, self.speaking(), ts)
            except Exception:  # a full queue or a restarting replica: drop this frame, keep the stream
                log.warning("frame of %s not offered", self.stream_id, exc_info=True)
                continue
            self.offered += 1
            if decision.get("send"):
                self.sent += 1
                self.buffer.add(rgb)
