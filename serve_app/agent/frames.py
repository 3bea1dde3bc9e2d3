"""Video into the dedup deployment, and the latest sent-on frames out to the next LLM turn.

`VideoForwarder` reads a track's `rtc.VideoStream`, throttles locally to the active/idle rate (so the
agent never ships frames the deployment would throttle anyway), offers the sampled frames to the
FrameDedup backend, and keeps the frames it says to send on (JPEG) in a `FrameBuffer`. The LLM attaches
the buffer's latest frames to the turn; every escalation attempt then gets the same frames.

Frames go out as planes with `offer_planes` (the fast path: `frames/planes.py`, the luma and 2x2 colour
sums the dedup reads, computed here in a worker thread, half the bytes of RGB, the same decisions), one
call in flight per track: a frame sampled while the dedup is idle goes at once, alone; frames sampled
while a call is in flight wait and go together in the next call, so batches grow only under load and add
no latency when idle. The dedup decides a batch exactly as it would the same frames one at a time. A batch
whose frames differ in size (a resized window mid-batch) goes as RGB with `offer_many`. At most
`max_pending` frames wait; past that the oldest are dropped (counted in `dropped`). The RGB of a frame the
dedup says to send on stays here, for the turn's images.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections import deque
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image as PILImage

from serve_app.backends import FrameSink
from serve_app.frames.planes import to_planes
from serve_app.routing.providers.base import Image

log = logging.getLogger(__name__)


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


def as_batch(frames: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    """Frames of one size as one contiguous `[B, H, W, 3]` array (one buffer on the wire, hashed where it
    lies); a list when the size changed mid-batch."""
    if len({f.shape for f in frames}) == 1:
        return np.stack(frames)
    return frames


@dataclass
class VideoForwarder:
    sink: FrameSink
    stream_id: str
    buffer: FrameBuffer
    speaking: Callable[[], bool] = lambda: False
    active_fps: float = 30.0
    idle_fps: float = 5.0
    max_batch: int = 32
    max_pending: int = 64
    offered: int = 0
    sent: int = 0
    dropped: int = 0
    calls: int = 0
    _last_ts: float | None = None
    _pending: deque = field(default_factory=deque)  # (rgb, is_speaking, ts) sampled, not yet offered
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _done: bool = False

    def _due(self, ts: float) -> bool:
        fps = self.active_fps if self.speaking() else self.idle_fps
        return self._last_ts is None or ts - self._last_ts >= 0.75 / fps

    async def run(self, events: AsyncIterable[Any]) -> None:
        """Consume `rtc.VideoStream` events (frame, timestamp_us) until the stream ends; returns once
        every sampled frame has been offered."""
        sender = asyncio.create_task(self._send_loop())
        try:
            async for event in events:
                ts = event.timestamp_us / 1e6
                if not self._due(ts):
                    continue
                self._last_ts = ts
                self._pending.append((rgb_of(event.frame), self.speaking(), ts))
                while len(self._pending) > self.max_pending:
                    self._pending.popleft()
                    self.dropped += 1
                self._wake.set()
        finally:
            self._done = True
            self._wake.set()
            await sender

    async def _send_loop(self) -> None:
        while True:
            if not self._pending:
                if self._done:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
            await self._offer(batch)

    async def _offer(self, batch: list[tuple[np.ndarray, bool, float]]) -> None:
        frames = [b[0] for b in batch]
        speaking = [b[1] for b in batch]
        stamps = [b[2] for b in batch]
        try:
            self.calls += 1
            rgb = as_batch(frames)
            if isinstance(rgb, np.ndarray):  # one size: planes, computed off the event loop
                planes = await asyncio.to_thread(to_planes, rgb, 1)
                decisions = await self.sink.offer_planes(self.stream_id, planes, speaking, stamps)
            else:
                decisions = await self.sink.offer_many(self.stream_id, rgb, speaking, stamps)
        except Exception:  # a full queue or a restarting replica: drop these frames, keep the stream
            log.warning("%d frames of %s not offered", len(batch), self.stream_id, exc_info=True)
            return
        self.offered += len(batch)
        for rgb, decision in zip(frames, decisions, strict=True):
            if decision.get("send"):
                self.sent += 1
                self.buffer.add(rgb)
