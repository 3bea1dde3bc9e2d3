"""The frame-dedup service a replica runs: streams' samplers plus batched hashing, without Ray.

`admit` applies the throttle gate at once; frames that pass are `Pending` and go through `decide_batch`
together (the Ray deployment feeds it from `@serve.batch`; `offer` does a batch of one). Decisions for one
stream are made in the order the frames were admitted.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from serve_app.frames.phash import check_frames, hash_frames
from serve_app.frames.sampler import Decision, FrameSampler, SamplingPolicy, StreamTable
from serve_app.metrics import Metrics
from serve_app.settings import DedupSettings
from serve_app.tenancy import parse_stream_id


@dataclass(frozen=True)
class Pending:
    sampler: FrameSampler
    ts: float
    frame: np.ndarray


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
        self._settings = settings
        self.reconfigure({})

    def reconfigure(self, config: dict[str, Any]) -> DedupSettings:
        """Apply a (partial) live config over the current one; invalid values raise and change nothing."""
        settings = DedupSettings(**{**self._settings.model_dump(), **config})
        self.policy.hamming_threshold = settings.hamming_threshold
        self.policy.active_fps = settings.active_fps
        self.policy.idle_fps = settings.idle_fps
        self.streams.max_streams = settings.max_streams
        self.streams.idle_ttl_s = settings.stream_idle_ttl_s
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
        frame = np.asarray(frame)
        check_frames(frame[None])
        ts = time.monotonic() if ts is None else float(ts)
        if not np.isfinite(ts):
            raise ValueError(f"ts must be a finite number of seconds, got {ts}")
        sampler = self.streams.sampler(stream_id)
        throttled = sampler.admit(ts, bool(is_speaking))
        if throttled is not None:
            return self._observed(sampler, self.streams.record(sampler, throttled))
        return Pending(sampler, ts, frame)

    def hash(self, frames: list[np.ndarray]) -> np.ndarray:
        options: dict[str, Any] = {"threads": self.hash_threads}
        if self.device is not None:
            options = {"backend": "torch", "device": self.device}
        return hash_frames(frames, **options)

    async def decide_batch(self, items: list[Pending]) -> list[Decision]:
        hashes = await asyncio.to_thread(self.hash, [item.frame for item in items])
        self.batches += 1
        self.batched_frames += len(items)
        return [
            self._observed(it.sampler, self.streams.record(it.sampler, it.sampler.decide(it.ts, int(h))))
            for it, h in zip(items, hashes, strict=True)
        ]

    def _observed(self, sampler: FrameSampler, decision: Decision) -> Decision:
        """Count the decision in the metrics (the sampler already knows the stream's tenant)."""
        if self.metrics is not None:
            tenant = sampler.stream.tenant_id
            self.metrics.inc("supportgraph_frames", tenant=tenant, verdict=decision.verdict.value)
        return decision

    async def offer(
        self, stream_id: str, frame: Any, is_speaking: bool = False, ts: float | None = None
    ) -> Decision:
        admitted = self.admit(stream_id, frame, is_speaking, ts)
        if isinstance(admitted, Decision):
            return admitted
        return (await self.decide_batch([admitted]))[0]

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
