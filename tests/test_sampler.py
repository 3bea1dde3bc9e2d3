"""FrameSampler, StreamTable and DedupService: throttling, dedup against the last sent frame, counters."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from pydantic import ValidationError

from serve_app.frames.sampler import FrameSampler, Reason, SamplingPolicy, StreamTable, Verdict
from serve_app.frames.service import DedupService, Pending
from serve_app.settings import DedupSettings
from serve_app.tenancy import InvalidIdentifier, parse_stream_id
from tests import images

STREAM = parse_stream_id("tenant_acme_room-1.screen")


def sampled(policy: SamplingPolicy, speaking: bool, seconds: float = 10.0, fps: float = 30.0) -> int:
    sampler = FrameSampler(STREAM, policy)
    return sum(sampler.admit(i / fps, speaking) is None for i in range(int(seconds * fps)))


def test_idle_stream_is_throttled_to_idle_fps() -> None:
    # 5 of every 30 frames; the slot due at exactly 10 s may be taken by the frame just before it
    assert sampled(SamplingPolicy(idle_fps=5), speaking=False) in (50, 51)
    assert sampled(SamplingPolicy(idle_fps=1), speaking=False, seconds=60) in (60, 61)


def test_speaking_stream_keeps_every_frame_at_active_fps() -> None:
    assert sampled(SamplingPolicy(active_fps=30), speaking=True) == 300


def test_timestamp_jitter_does_not_drop_frames_at_the_active_rate() -> None:
    rng = np.random.default_rng(0)
    sampler = FrameSampler(STREAM, SamplingPolicy(active_fps=30))
    ts = np.arange(300) / 30 + rng.uniform(-0.005, 0.005, 300)
    assert sum(sampler.admit(float(t), True) is None for t in ts) == 300


def test_out_of_order_frame_is_throttled() -> None:
    sampler = FrameSampler(STREAM)
    assert sampler.admit(10.0, False) is None
    assert sampler.admit(5.0, False).verdict is Verdict.THROTTLED


def test_duplicate_within_threshold_and_processed_beyond() -> None:
    sampler = FrameSampler(STREAM, SamplingPolicy(hamming_threshold=10))
    base = 0
    assert sampler.decide(0.0, base).verdict is Verdict.PROCESSED
    assert sampler.decide(1.0, (1 << 10) - 1).verdict is Verdict.DUPLICATE  # 10 bits: skipped
    eleven = sampler.decide(2.0, (1 << 11) - 1)
    assert (eleven.verdict, eleven.distance) == (Verdict.PROCESSED, 11)


def test_dedup_compares_with_the_last_processed_frame_not_the_last_seen() -> None:
    sampler = FrameSampler(STREAM, SamplingPolicy(hamming_threshold=10))
    drift = [0, (1 << 6) - 1, (1 << 12) - 1]  # each 6 bits from the one before, 12 from the first
    verdicts = [sampler.decide(float(i), h).verdict for i, h in enumerate(drift)]
    assert verdicts == [Verdict.PROCESSED, Verdict.DUPLICATE, Verdict.PROCESSED]


def test_offer_runs_both_gates_on_real_frames() -> None:
    sampler = FrameSampler(STREAM, SamplingPolicy(idle_fps=5))
    frame, other = images.text(240, 320, 1), images.gradient(240, 320, 0)
    verdicts = [
        sampler.offer(f, False, t).verdict
        for f, t in [(frame, 0.0), (frame, 0.1), (frame, 0.2), (other, 0.4)]
    ]
    assert verdicts == [Verdict.PROCESSED, Verdict.THROTTLED, Verdict.DUPLICATE, Verdict.PROCESSED]
    assert sampler.counters.to_dict() | {"dedup_rate": 0, "skip_rate": 0} == {
        "total": 4,
        "throttled": 1,
        "duplicate": 1,
        "processed": 2,
        "reasons": {"first": 1, "phash": 1, "region": 0, "throttled": 1, "duplicate": 1},
        "dedup_rate": 0,
        "skip_rate": 0,
    }
    assert sampler.counters.dedup_rate == pytest.approx(1 / 3)


def test_stream_table_counts_per_tenant_and_evicts_oldest() -> None:
    table = StreamTable(SamplingPolicy(), max_streams=2)
    for sid in ["tenant_a_r1", "tenant_a_r2", "tenant_b_r1"]:
        sampler = table.sampler(sid)
        table.record(sampler, sampler.decide(0.0, 0))
    assert len(table) == 2 and "tenant_a_r1" not in table and table.evicted == 1
    assert table.tenant_counters("a").processed == 2
    assert table.tenant_counters("b").processed == 1
    assert table.tenant_counters("nobody").total == 0


def test_stream_table_forgets_idle_streams() -> None:
    table = StreamTable(SamplingPolicy(), idle_ttl_s=60)
    table.sampler("tenant_a_old").last_seen -= 120
    table.sampler("tenant_a_new")
    assert "tenant_a_old" not in table and "tenant_a_new" in table


def test_a_stream_back_after_a_gap_starts_fresh() -> None:
    """A stream that moved away (another replica decided its frames) and came back must not be
    compared with the frame this replica sent long ago: its first frame back is processed."""
    table = StreamTable(SamplingPolicy(), resume_gap_s=5)
    sampler = table.sampler("tenant_a_share")
    first = table.record(sampler, sampler.decide(0.0, 0))
    same = table.record(sampler, sampler.decide(1.0, 0))
    assert (first.reason, same.verdict) == (Reason.FIRST, Verdict.DUPLICATE)
    assert table.sampler("tenant_a_share", arriving=True) is sampler  # seen just now: kept
    sampler.last_seen -= 6  # 6 s on another replica
    assert table.sampler("tenant_a_share") is sampler  # a lookup (not a frame arriving) resets nothing
    back = table.sampler("tenant_a_share", arriving=True)
    decided = table.record(back, back.decide(7.0, 0))  # the very hash it sent before
    assert back is not sampler and (decided.verdict, decided.reason) == (Verdict.PROCESSED, Reason.FIRST)
    assert table.restarted == 1 and back.counters.total == 1


def test_the_dedup_service_restarts_a_stream_back_after_a_gap() -> None:
    service = DedupService(DedupSettings(device="cpu", stream_resume_gap_s=5))
    frame = images.flat(64, 64, (40, 80, 120))
    sid = "tenant_a_back.screen"

    async def offer(ts: float) -> str:
        return (await service.offer(sid, frame, True, ts)).reason.value

    async def scenario() -> list[str]:
        seen = [await offer(0.0), await offer(1.0)]
        service.streams.sampler(sid).last_seen -= 6  # its frames went elsewhere for 6 s
        return [*seen, await offer(8.0), await offer(9.0)]

    assert asyncio.run(scenario()) == ["first", "duplicate", "first", "duplicate"]
    assert service.streams.restarted == 1


def test_malformed_stream_ids_are_rejected() -> None:
    table = StreamTable(SamplingPolicy())
    for bad in [
        "",
        "acme_room",
        "tenant__room",
        "tenant_ACME_room",
        "tenant_a_room/../x",
        "tenant_a_" + "r" * 200,
    ]:
        with pytest.raises(InvalidIdentifier, match="expected tenant_"):
            table.sampler(bad)


def test_live_reconfigure_applies_to_existing_streams_and_rejects_bad_values() -> None:
    service = DedupService(DedupSettings(hamming_threshold=10))
    sampler = service.streams.sampler("tenant_a_r")
    service.reconfigure({"hamming_threshold": 0, "idle_fps": 2})
    assert sampler.policy.hamming_threshold == 0 and sampler.policy.idle_fps == 2
    with pytest.raises(ValidationError):
        service.reconfigure({"hamming_threshold": 99})
    assert service.settings.hamming_threshold == 0 and sampler.policy.hamming_threshold == 0


def test_batched_decisions_equal_one_at_a_time() -> None:
    """Admitting several frames of several streams, then deciding them in one batch, changes nothing."""
    frames = [images.noise(60, 80, seed=s % 3) for s in range(24)]
    plan = [(f"tenant_t_s{i % 3}", frames[i], i % 4 == 0, i * 0.07) for i in range(24)]
    one_by_one = DedupService()
    expected = [asyncio.run(one_by_one.offer(*p)).to_dict() for p in plan]

    batched = DedupService()
    admitted = [batched.admit(*p) for p in plan]
    pending = [a for a in admitted if isinstance(a, Pending)]
    decided = iter(asyncio.run(batched.decide_batch(pending)))
    got = [(next(decided) if isinstance(a, Pending) else a).to_dict() for a in admitted]
    assert got == expected


def test_service_rejects_bad_frames_and_timestamps() -> None:
    service = DedupService()
    with pytest.raises(ValueError, match="frames must be"):
        service.admit("tenant_a_r", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="finite"):
        service.admit("tenant_a_r", images.flat(4, 4, (1, 2, 3)), ts=float("nan"))


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        SamplingPolicy(hamming_threshold=65)
    with pytest.raises(ValueError):
        SamplingPolicy(idle_fps=0)
