"""Two batch queues in front of a `ScreenReader`: region reads first, whole frames behind, never mixed.

A region read (a changed box: what a turn is likely waiting for) takes a fraction of a second; a whole
frame takes seconds on a CPU. In one queue a region read would wait behind whole frames. Here each kind
has its own queue, its own batching (up to `max_batch` reads gathered for `wait_s`) and its own thread,
so a region read starts as soon as the region thread is free; the whole-frame thread runs at a lower
CPU priority (Linux: `frame_niceness` steps, `serve.background_niceness`, above the replica's nice value
for that thread alone (serve_app/priority.py): at +10 about a tenth of a busy core's share beside a
thread at the replica's value, so whole frames yield to every interactive replica without starving).
A whole-frame read of a stream that a newer whole frame of the same stream has superseded before its
batch began is not read: its reading comes back `skipped="stale"` (the newer one replaces the stream's
lines anyway); requests that do not supersede (`ReadRequest.supersedes` false: the images of a chat
message) are each read. No Ray: the ScreenReader deployment holds one of these.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from serve_app.lru import LRU
from serve_app.priority import lower_thread_priority
from serve_app.screen.reader import Reading, ReadRequest, ScreenReader

Item = tuple[ReadRequest, asyncio.Future]


class _Lane:
    """One queue and the worker that reads its batches in the lane's own thread."""

    def __init__(
        self,
        name: str,
        run: Callable[[list[ReadRequest]], list[Reading]],
        max_batch: int,
        wait_s: float,
        initializer: Callable[[], None] | None = None,
    ):
        self.run, self.max_batch, self.wait_s = run, max_batch, wait_s
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"screen-{name}", initializer=initializer)
        self.queue: asyncio.Queue[Item] | None = None
        self.worker: asyncio.Task | None = None

    def put(self, item: Item) -> None:
        if self.queue is None:  # made in the loop that serves the reads
            self.queue = asyncio.Queue()
        self.queue.put_nowait(item)
        if self.worker is None or self.worker.done():
            self.worker = asyncio.get_running_loop().create_task(self._work())

    async def close(self) -> None:
        """Stops the worker; reads still queued or in the batch being read are cancelled (their
        callers hear it rather than wait forever)."""
        if self.worker is not None:
            self.worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.worker
        while self.queue is not None and not self.queue.empty():
            self.queue.get_nowait()[1].cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def _batch(self) -> list[Item]:
        assert self.queue is not None
        batch = [await self.queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        while len(batch) < self.max_batch:
            if not self.queue.empty():
                batch.append(self.queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), left))
            except TimeoutError:
                break
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._batch()
            waiting = [(request, future) for request, future in batch if not future.done()]
            if not waiting:
                continue
            try:
                readings = await loop.run_in_executor(self.executor, self.run, [r for r, _ in waiting])
            except asyncio.CancelledError:  # closing: the batch's callers are cancelled too
                for _, future in waiting:
                    future.cancel()
                raise
            except Exception as exc:  # each caller hears of it (the reader itself does not raise)
                for _, future in waiting:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), reading in zip(waiting, readings, strict=True):
                if not future.done():
                    future.set_result(reading)


class ReadQueues:
    """`await read(request)`: region reads (`whole_frame` false) and whole frames in separate lanes."""

    def __init__(
        self,
        reader: ScreenReader,
        region_batch: int = 8,
        frame_batch: int = 2,
        wait_s: float = 0.01,
        max_streams: int = 10_000,
        frame_niceness: int = 5,
    ):
        self.reader, self.max_streams = reader, max_streams
        self.regions = _Lane("region", reader.read_batch, region_batch, wait_s)
        lower = functools.partial(lower_thread_priority, frame_niceness)
        self.frames = _Lane("frame", self._read_frames, frame_batch, wait_s, lower)
        self._seq = 0
        self._latest: LRU[str, int] = LRU(max_streams)  # stream -> seq of its newest whole frame
        self._lock = threading.Lock()
        self.stale = 0

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    async def read(self, request: ReadRequest) -> Reading:
        """The request's reading; `request.seq` orders a stream's reads (0: given one here)."""
        if not request.seq:
            request = dataclasses.replace(request, seq=self.next_seq())
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        whole = request.box is None if request.whole_frame is None else request.whole_frame
        if whole:
            if request.supersedes:
                with self._lock:
                    newest = max(request.seq, self._latest.get(request.stream_id) or 0)
                    self._latest.put(request.stream_id, newest)
            self.frames.put((request, future))
        else:
            self.regions.put((request, future))
        return await future

    async def close(self) -> None:
        """Stops both workers (a read still queued is cancelled)."""
        await self.regions.close()
        await self.frames.close()

    def _read_frames(self, requests: list[ReadRequest]) -> list[Reading]:
        """(In the frame thread.) Whole frames a newer one of their stream superseded are not read."""
        with self._lock:
            stale = [r.supersedes and self._latest.get(r.stream_id, r.seq) > r.seq for r in requests]
        done = iter(self.reader.read_batch([r for r, old in zip(requests, stale, strict=True) if not old]))
        out = []
        for request, old in zip(requests, stale, strict=True):
            if old:
                self.stale += 1
                out.append(
                    Reading(
                        stream_id=request.stream_id,
                        ts=request.ts,
                        reason=request.reason,
                        whole_frame=True,
                        seq=request.seq,
                        skipped="stale",
                    )
                )
            else:
                out.append(next(done))
        return out
