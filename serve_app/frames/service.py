"""The frame-dedup service a replica runs: streams' samplers plus batched signals, without Ray.

`admit` applies the throttle gate at once; frames that pass are `Pending` and go through `decide_batch`
together (the Ray deployment feeds it from `@serve.batch`; `offer` does a batch of one): one pass of the
kernel per frame size gives every frame's pHash and region thumbnail. Decisions for one stream are made
in the order the frames were admitted. `admit_many` / `offer_many` take several frames of one stream in
one call (one `[B, H, W, 3]` array is hashed where it lies, without a copy); `admit_planes` /
`offer_planes` take them as planes (`planes.py`), decided exactly as the RGB frames.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from serve_app.frames.phash import check_frames, frame_signals, stacked
from serve_app.frames.planes import PlaneFrame, Planes, planes_signals
from serve_app.frames.region import RegionPolicy, Thumb
from serve_app.frames.sampler import Decision, FrameSampler, SamplingPolicy, StreamTable
from serve_app.metrics import Metrics
from serve_app.settings import DedupSettings
from serve_app.tenancy import parse_stream_id


@dataclass(frozen=True)
class Pending:
    sampler: FrameSampler
    ts: float
    frame: np.ndarray | PlaneFrame  # uint8 RGB [H, W, 3], or the frame's planes


def resolve_device(device: str) -> str | None:
    """torch device for hashing: None (native CPU kernel) or a CUDA device when asked for or present."""
    if device == "cpu":
        return None
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise RuntimeError("dedup.device=cuda but no CUDA device is visible to this process")
    return None


def region_policy(settings: DedupSettings) -> RegionPolicy:
    """The region signal's thresholds from the `dedup.region_*` settings (each a field, prefixed)."""
    return RegionPolicy(**{f.name: getattr(settings, f"region_{f.name}") for f in fields(RegionPolicy)})


class DedupService:
    def __init__(self, settings: DedupSettings | None = None):
        self.metrics: Metrics | None = None  # set by the deployment (Ray) or a caller
        settings = settings or DedupSettings()
        self.policy = SamplingPolicy()
        self.streams = StreamTable(self.policy)
        self.device = resolve_device(settings.device)
        self.hash_threads = settings.hash_threads
        self.batches = 0
        self.batched_frames = 0
        self._deciding = threading.Lock()
        self._settings = settings
        self.reconfigure({})

    def reconfigure(self, config: dict[str, Any]) -> DedupSettings:
        """Apply a (partial) live config over the current one; invalid values raise and change nothing."""
        settings = DedupSettings(**{**self._settings.model_dump(), **config})
        region = region_policy(settings)  # validated whole before anything changes
        self.policy.hamming_threshold = settings.hamming_threshold
        self.policy.active_fps = settings.active_fps
        self.policy.idle_fps = settings.idle_fps
        self.policy.region.update(region)  # the samplers share this object
        self.streams.max_streams = settings.max_streams
        self.streams.idle_ttl_s = settings.stream_idle_ttl_s
        self.streams.resume_gap_s = settings.stream_resume_gap_s
        self._settings = settings
        return settings

    @property
    def settings(self) -> DedupSettings:
        return self._settings

    def admit(
        self, stream_id: str, frame: Any, is_speaking: bool = False, ts: float | None = None
    ) -> Decision | Pending:
        """Validate and throttle one frame: a THROTTLED Decision, or Pending work for `decide_batch`."""
        parse_stream_id(stream_id)
        if not isinstance(frame, PlaneFrame):
            frame = np.asarray(frame)
            check_frames(frame[None])
        ts = time.monotonic() if ts is None else float(ts)
        if not np.isfinite(ts):
            raise ValueError(f"ts must be a finite number of seconds, got {ts}")
        sampler = self.streams.sampler(stream_id, arriving=True)
        throttled = sampler.admit(ts, bool(is_speaking))
        if throttled is not None:
            return self._observed(sampler, self.streams.record(sampler, throttled))
        return Pending(sampler, ts, frame)

    def admit_many(
        self,
        stream_id: str,
        frames: Any,
        is_speaking: bool | Sequence[bool] = False,
        ts: Sequence[float] | None = None,
    ) -> list[Decision | Pending]:
        """`admit` for several frames of one stream, in order: a uint8 `[B, H, W, 3]` array or a list of
        `[H, W, 3]` arrays, with one `ts` (or none) and one `is_speaking` (or one for all) per frame.
        Everything is checked before any frame is admitted, so a bad call changes no state."""
        parse_stream_id(stream_id)
        items = split_frames(frames)
        stamps = checked_stamps(ts, len(items))
        speaking = per_frame("is_speaking", is_speaking, len(items))
        for frame in items:
            check_frames(frame[None])
        return [self.admit(stream_id, f, s, t) for f, s, t in zip(items, speaking, stamps, strict=True)]

    def admit_planes(
        self,
        stream_id: str,
        planes: Planes,
        is_speaking: bool | Sequence[bool] = False,
        ts: Sequence[float] | None = None,
    ) -> list[Decision | Pending]:
        """`admit_many` for frames sent as planes (`planes.py`: luma and 2x2 colour sums, decided
        exactly as the RGB frames they came from)."""
        parse_stream_id(stream_id)
        if not isinstance(planes, Planes):
            raise ValueError("planes must be a Planes batch (luma uint8 [B, H, W], color uint16)")
        if not 1 <= len(planes) <= MAX_FRAMES_PER_CALL:
            raise ValueError(f"send 1 to {MAX_FRAMES_PER_CALL} frames per call, got {len(planes)}")
        stamps = checked_stamps(ts, len(planes))
        speaking = per_frame("is_speaking", is_speaking, len(planes))
        return [
            self.admit(stream_id, planes.frame(i), s, t)
            for i, (s, t) in enumerate(zip(speaking, stamps, strict=True))
        ]

    def signals(self, frames: list[np.ndarray | PlaneFrame]) -> tuple[np.ndarray, list[Thumb | None]]:
        """pHash and (region signal on) region thumbnail of every frame, batched per frame size (RGB
        frames and planes apart)."""
        options: dict[str, Any] = {"threads": self.hash_threads}
        if self.device is not None:
            options = {"backend": "torch", "device": self.device}
        region = self.policy.region
        cell = region.cell if region.enabled else None
        rgb = [i for i, f in enumerate(frames) if not isinstance(f, PlaneFrame)]
        hashes = np.empty(len(frames), np.uint64)
        cells: list[np.ndarray | None] = [None] * len(frames)
        if rgb:
            got, got_cells = frame_signals([frames[i] for i in rgb], cell=cell, **options)
            hashes[rgb] = got
            for i, c in zip(rgb, got_cells, strict=True):
                cells[i] = c
        by_shape: dict[tuple[int, int], list[int]] = {}
        for i, f in enumerate(frames):
            if isinstance(f, PlaneFrame):
                by_shape.setdefault(f.shape, []).append(i)
        for indices in by_shape.values():
            luma = stacked([frames[i].luma for i in indices])
            batch = Planes(luma, stacked([frames[i].color for i in indices]))
            got = planes_signals(batch, cell=cell, **options)
            hashes[indices] = got.hashes
            for n, i in enumerate(indices):
                cells[i] = None if got.cells is None else got.cells[n]
        thumbs = [
            None if c is None else Thumb(c, f.shape[0], f.shape[1], region.tile)
            for f, c in zip(frames, cells, strict=True)
        ]
        return hashes, thumbs

    def _decide_all(self, items: list[Pending]) -> list[Decision]:
        """Signals and dedup decisions of a batch, in order (a worker thread: the region detector's numpy
        work then leaves the event loop free). One batch at a time: a stream's region state is read and
        written by its decisions only, in order; counting is left to the event loop."""
        with self._deciding:
            hashes, thumbs = self.signals([item.frame for item in items])
            return [
                it.sampler.decide(it.ts, int(h), th, count=False)
                for it, h, th in zip(items, hashes, thumbs, strict=True)
            ]

    async def decide_batch(self, items: list[Pending]) -> list[Decision]:
        decisions = await asyncio.to_thread(self._decide_all, items)
        self.batches += 1
        self.batched_frames += len(items)
        for it, decision in zip(items, decisions, strict=True):
            it.sampler.counters.add(decision.verdict, decision.reason)
            self._observed(it.sampler, self.streams.record(it.sampler, decision))
        return decisions

    def _observed(self, sampler: FrameSampler, decision: Decision) -> Decision:
        """Count the decision in the metrics (the sampler already knows the stream's tenant)."""
        if self.metrics is not None:
            tenant = sampler.stream.tenant_id
            self.metrics.inc(
                "supportgraph_frames",
                tenant=tenant,
                verdict=decision.verdict.value,
                reason=decision.reason.value,
            )
        return decision

    async def offer(
        self, stream_id: str, frame: Any, is_speaking: bool = False, ts: float | None = None
    ) -> Decision:
        admitted = self.admit(stream_id, frame, is_speaking, ts)
        if isinstance(admitted, Decision):
            return admitted
        return (await self.decide_batch([admitted]))[0]

    async def offer_many(
        self,
        stream_id: str,
        frames: Any,
        is_speaking: bool | Sequence[bool] = False,
        ts: Sequence[float] | None = None,
    ) -> list[Decision]:
        admitted = self.admit_many(stream_id, frames, is_speaking, ts)
        return await complete(admitted, self.decide_batch)

    async def offer_planes(
        self,
        stream_id: str,
        planes: Planes,
        is_speaking: bool | Sequence[bool] = False,
        ts: Sequence[float] | None = None,
    ) -> list[Decision]:
        admitted = self.admit_planes(stream_id, planes, is_speaking, ts)
        return await complete(admitted, self.decide_batch)

    def stats(self, stream_id: str) -> dict[str, Any]:
        stream = parse_stream_id(stream_id)
        counters = self.streams.stream_counters(stream_id)
        return {
            "stream_id": stream_id,
            "known": counters is not None,
            "stream": None if counters is None else counters.to_dict(),
            "tenant": self.streams.tenant_counters(stream.tenant_id).to_dict(),
            "mean_batch_size": self.batched_frames / self.batches if self.batches else 0.0,
            "streams_on_replica": len(self.streams),
        }

    def close(self, stream_id: str) -> dict[str, Any]:
        parse_stream_id(stream_id)
        counters = self.streams.close(stream_id)
        return {
            "stream_id": stream_id,
            "closed": counters is not None,
            "stream": counters and counters.to_dict(),
        }


MAX_FRAMES_PER_CALL = 256  # offer_many: frames of one stream per call


def split_frames(frames: Any) -> list[np.ndarray]:
    """A `[B, H, W, 3]` array (kept as views of it) or a sequence of `[H, W, 3]` arrays, as a list."""
    if isinstance(frames, np.ndarray) and frames.ndim == 4:
        items = list(frames)
    elif isinstance(frames, list | tuple):
        items = [np.asarray(f) for f in frames]
    else:
        raise ValueError("frames must be a uint8 [B, H, W, 3] array or a list of [H, W, 3] arrays")
    if not 1 <= len(items) <= MAX_FRAMES_PER_CALL:
        raise ValueError(f"send 1 to {MAX_FRAMES_PER_CALL} frames per call, got {len(items)}")
    return items


def checked_stamps(ts: Sequence[float] | None, n: int) -> list[float | None]:
    """One `ts` per frame (or none), each finite."""
    stamps = per_frame("ts", ts, n)
    for t in stamps:
        if t is not None and not np.isfinite(float(t)):
            raise ValueError(f"ts must be a finite number of seconds, got {t}")
    return stamps


def per_frame(name: str, value: Any, n: int) -> list[Any]:
    """One value per frame: a sequence of exactly `n`, or one value (None for `ts`) for all."""
    if isinstance(value, list | tuple | np.ndarray):
        if len(value) != n:
            raise ValueError(f"{name} has {len(value)} values for {n} frames")
        return list(value)
    return [value] * n


async def complete(admitted: list[Decision | Pending], decide: Any) -> list[Decision]:
    """The decisions of `admit_many`'s result in order: throttled ones as they are, the pending ones
    from one `decide(pending)` call."""
    pending = [a for a in admitted if isinstance(a, Pending)]
    decided = iter(await decide(pending) if pending else [])
    return [a if isinstance(a, Decision) else next(decided) for a in admitted]
