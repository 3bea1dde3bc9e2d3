"""Per-stream frame sampling: FPS throttling (active vs idle), then dedup against the last sent frame by
two signals, pHash and region change.

A frame goes through two gates, in order:
1. throttle: samples are due on a grid one period apart (1/active_fps while the user speaks, 1/idle_fps
   otherwise); a frame is sampled when it reaches the next due time, up to a quarter period early for
   timestamp jitter (the grid keeps the long-run rate exact: 5 of every 30 frames at 5 fps);
2. dedup: a sampled frame is processed (sent on) when its pHash is more than `hamming_threshold` bits
   from the last *processed* frame of the stream, or when a compact region of it changed against that
   frame (`region.py`; off with `region.enabled = False`); otherwise it is a duplicate. A processed frame
   becomes the reference of both signals.

Every decision says why (`reason`): `first` (a stream's first frame), `phash`, `region` (then `box`
says where, `[x, y, width, height]` in frame pixels), `throttled`, `duplicate`. When both signals fire
the reason is `phash` and the box is still given.

The gates are split (`admit` then `decide`) so a Ray Serve replica can hash the sampled frames of many
streams in one batch; `offer` runs both for one frame. Throttling depends only on earlier sampling, so
admitting several frames before deciding them gives the same result as one at a time.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from serve_app.frames.phash import hamming, hash_hex, signals_batch
from serve_app.frames.region import (
    RegionChange,
    RegionDetector,
    RegionPolicy,
    RegionState,
    Thumb,
    whole_frame,
)
from serve_app.tenancy import StreamId, parse_stream_id

JITTER_SLACK = 0.25  # fraction of a period a frame may come early and still be sampled


class Verdict(StrEnum):
    THROTTLED = "throttled"
    DUPLICATE = "duplicate"
    PROCESSED = "processed"


class Reason(StrEnum):
    """Why a frame got its verdict."""

    FIRST = "first"  # processed: the stream's first sampled frame
    PHASH = "phash"  # processed: pHash moved past the threshold
    REGION = "region"  # processed: a compact region changed (pHash within the threshold)
    THROTTLED = "throttled"
    DUPLICATE = "duplicate"


@dataclass
class SamplingPolicy:
    hamming_threshold: int = 10
    active_fps: float = 30.0
    idle_fps: float = 5.0
    region: RegionPolicy = field(default_factory=RegionPolicy)

    def __post_init__(self) -> None:
        if not 0 <= self.hamming_threshold <= 64:
            raise ValueError(f"hamming_threshold must be in [0, 64], got {self.hamming_threshold}")
        if self.active_fps <= 0 or self.idle_fps <= 0:
            raise ValueError(f"fps must be positive, got active={self.active_fps} idle={self.idle_fps}")

    def period(self, is_speaking: bool) -> float:
        return 1.0 / (self.active_fps if is_speaking else self.idle_fps)


@dataclass(frozen=True)
class Decision:
    stream_id: str
    verdict: Verdict
    ts: float
    phash: int | None = None  # None when throttled (never hashed)
    distance: int | None = None  # bits from the last processed frame; None for a stream's first
    reason: Reason = Reason.DUPLICATE
    region: RegionChange | None = None  # the changed region, when the region signal fired

    @property
    def send(self) -> bool:
        return self.verdict is Verdict.PROCESSED

    @property
    def box(self) -> list[int] | None:
        """[x, y, width, height] of the changed region in frame pixels, when the region signal fired."""
        return None if self.region is None else self.region.to_list()

    def to_dict(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "verdict": self.verdict.value,
            "send": self.send,
            "ts": self.ts,
            "phash": None if self.phash is None else hash_hex(self.phash),
            "distance": self.distance,
            "reason": self.reason.value,
            "box": self.box,
        }


@dataclass
class FrameCounters:
    total: int = 0
    throttled: int = 0
    duplicate: int = 0
    processed: int = 0
    reasons: dict[str, int] = field(default_factory=lambda: {r.value: 0 for r in Reason})

    def add(self, verdict: Verdict, reason: Reason) -> None:
        self.total += 1
        setattr(self, verdict.value, getattr(self, verdict.value) + 1)
        self.reasons[reason.value] += 1

    def merge(self, other: FrameCounters) -> None:
        for name in ("total", "throttled", "duplicate", "processed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for reason, n in other.reasons.items():
            self.reasons[reason] += n

    @property
    def dedup_rate(self) -> float:
        """Share of sampled (hashed) frames skipped as duplicates."""
        hashed = self.duplicate + self.processed
        return self.duplicate / hashed if hashed else 0.0

    @property
    def skip_rate(self) -> float:
        """Share of all offered frames not sent on (throttled or duplicate)."""
        return (self.throttled + self.duplicate) / self.total if self.total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "dedup_rate": self.dedup_rate, "skip_rate": self.skip_rate}


@dataclass
class FrameSampler:
    """Sampling state of one stream; the policy object may be shared and changed live."""

    stream: StreamId
    policy: SamplingPolicy = field(default_factory=SamplingPolicy)
    counters: FrameCounters = field(default_factory=FrameCounters)
    anchor: float | None = None  # due time of the last sampled frame (on the sampling grid)
    last_processed_hash: int | None = None
    region: RegionState | None = None  # the region signal's reference and freshness record
    last_seen: float = field(default_factory=time.monotonic)

    def admit(self, ts: float, is_speaking: bool) -> Decision | None:
        """Throttle gate: a THROTTLED decision, or None when the frame must be hashed and decided."""
        self.last_seen = time.monotonic()
        if self.anchor is None:
            self.anchor = ts
            return None
        period = self.policy.period(is_speaking)
        due = self.anchor + period
        if ts < due - JITTER_SLACK * period:
            self.counters.add(Verdict.THROTTLED, Reason.THROTTLED)
            return Decision(str(self.stream), Verdict.THROTTLED, ts, reason=Reason.THROTTLED)
        self.anchor = due if ts < due + period else ts  # off the grid after a gap: restart it here
        return None

    def decide(self, ts: float, phash: int, thumb: Thumb | None = None, count: bool = True) -> Decision:
        """Dedup gate for an admitted frame with its pHash and, when the region signal is on, its
        region thumbnail. `count=False` leaves the counters to the caller (`counters.add(verdict,
        reason)`): the replica decides in a worker thread and counts on its event loop, where `admit`
        counts too."""
        phash = int(phash)
        region = self._region(ts, thumb)
        distance = None
        if self.last_processed_hash is None:
            reason = Reason.FIRST
        else:
            distance = int(hamming(phash, self.last_processed_hash))
            if distance > self.policy.hamming_threshold:
                reason = Reason.PHASH
            elif region is not None:
                reason = Reason.REGION
            else:
                if count:
                    self.counters.add(Verdict.DUPLICATE, Reason.DUPLICATE)
                return Decision(str(self.stream), Verdict.DUPLICATE, ts, phash, distance, Reason.DUPLICATE)
        self.last_processed_hash = phash
        if self.region is not None:
            self.region.commit()
        if count:
            self.counters.add(Verdict.PROCESSED, reason)
        return Decision(str(self.stream), Verdict.PROCESSED, ts, phash, distance, reason, region)

    def _region(self, ts: float, thumb: Thumb | None) -> RegionChange | None:
        """Run the region signal on a sampled frame. A stream without a region reference yet (its first
        frame, the signal just turned on, another tile size) starts one from this frame and reports
        nothing; a frame of another size than the stream's last is a change of the whole frame."""
        if thumb is None or not self.policy.region.enabled:
            self.region = None
            return None
        state = self.region
        if state is None or state.tile != thumb.tile:
            self.region = RegionState.start(thumb, ts)
            self.region.pending = self.region.reference
            return None
        if not state.fits(thumb):
            self.region = RegionState.start(thumb, ts)
            self.region.pending = self.region.reference
            return whole_frame(thumb.height, thumb.width)
        return RegionDetector(self.policy.region).observe(state, thumb, ts)

    def offer(self, frame: np.ndarray, is_speaking: bool, ts: float) -> Decision:
        """Both gates for one uint8 RGB frame [H, W, 3]."""
        throttled = self.admit(ts, is_speaking)
        if throttled is not None:
            return throttled
        frame = np.asarray(frame)
        region = self.policy.region
        signals = signals_batch(frame[None], cell=region.cell if region.enabled else None)
        thumb = None
        if signals.cells is not None:
            thumb = Thumb(signals.cells[0], frame.shape[0], frame.shape[1], region.tile)
        return self.decide(ts, int(signals.hashes[0]), thumb)


class StreamTable:
    """The samplers of one process (a replica): bounded by count and idle time, counters per tenant."""

    def __init__(
        self,
        policy: SamplingPolicy,
        max_streams: int = 10_000,
        idle_ttl_s: float = 600.0,
        resume_gap_s: float = 5.0,
    ):
        self.policy = policy
        self.max_streams = max_streams
        self.idle_ttl_s = idle_ttl_s
        self.resume_gap_s = resume_gap_s
        self._streams: OrderedDict[str, FrameSampler] = OrderedDict()
        self._tenants: dict[str, FrameCounters] = {}
        self.evicted = 0
        self.restarted = 0  # streams that came back after a gap and started fresh

    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, stream_id: str) -> bool:
        return stream_id in self._streams

    def sampler(self, stream_id: str, *, arriving: bool = False) -> FrameSampler:
        """The stream's sampler, created on first use (the id is validated). `arriving`: for a frame
        that just arrived; then a stream this table has not seen for `resume_gap_s` starts fresh: its
        frames went to another replica meanwhile (it moved away and came back, Serve's replicas having
        changed), so the last frame sent is not the one kept here; or the share paused, and its first
        frame back is worth sending anyway."""
        sampler = self._streams.get(stream_id)
        if arriving and sampler is not None and time.monotonic() - sampler.last_seen > self.resume_gap_s:
            del self._streams[stream_id]
            self.restarted += 1
            sampler = None
        if sampler is None:
            sampler = FrameSampler(parse_stream_id(stream_id), self.policy)
            self._streams[stream_id] = sampler
            self._evict(keep=stream_id)
        self._streams.move_to_end(stream_id)
        return sampler

    def record(self, sampler: FrameSampler, decision: Decision) -> Decision:
        """Count a decision of `sampler`'s stream for its tenant; returns it."""
        self._tenants.setdefault(sampler.stream.tenant_id, FrameCounters()).add(
            decision.verdict, decision.reason
        )
        return decision

    def stream_counters(self, stream_id: str) -> FrameCounters | None:
        sampler = self._streams.get(stream_id)
        return None if sampler is None else sampler.counters

    def tenant_counters(self, tenant_id: str) -> FrameCounters:
        return self._tenants.get(tenant_id, FrameCounters())

    def close(self, stream_id: str) -> FrameCounters | None:
        """Forget a stream (its tenant counters stay); returns its final counters."""
        sampler = self._streams.pop(stream_id, None)
        return None if sampler is None else sampler.counters

    def _evict(self, keep: str) -> None:
        now = time.monotonic()
        while self._streams:
            oldest_id, oldest = next(iter(self._streams.items()))
            too_many = len(self._streams) > self.max_streams
            if oldest_id == keep or not (too_many or now - oldest.last_seen > self.idle_ttl_s):
                break
            del self._streams[oldest_id]
            self.evicted += 1
